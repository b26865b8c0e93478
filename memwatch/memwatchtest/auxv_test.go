package memwatchtest

import (
	"encoding/binary"
	"testing"
)

// auxvBytes is an auxiliary vector of little-endian words.
func auxvBytes(ws ...uint64) []byte {
	b := make([]byte, 8*len(ws))
	for i, w := range ws {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b
}

func TestAuxvEntry(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want uint64
		err  bool
	}{
		{"entry", auxvBytes(6, 4096, 9, 0x55550000abcd, 0, 0), 0x55550000abcd, false},
		{"none before end", auxvBytes(6, 4096, 0, 0, 9, 1), 0, true},
		{"truncated", auxvBytes(6, 4096)[:12], 0, true},
		{"empty", nil, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := auxvEntry(c.in)
			if (err != nil) != c.err || got != c.want {
				t.Errorf("auxvEntry = %#x, %v; want %#x, error %v", got, err, c.want, c.err)
			}
		})
	}
}
