package memwatch

import (
	"encoding/binary"
	"testing"
)

func entryBytes(es ...uint64) []byte {
	b := make([]byte, 8*len(es))
	for i, e := range es {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	return b
}

func TestParsePagemap(t *testing.T) {
	cases := []struct {
		name                                               string
		in                                                 []byte
		wantErr                                            bool
		present, swapped, file, softDirty, exclusive, priv bool
	}{
		{name: "not present", in: entryBytes(0)},
		{name: "page cache page", in: entryBytes(pmPresent | pmFile | 0x1234), present: true, file: true},
		{name: "private copy", in: entryBytes(pmPresent | pmExclusive | pmSoftDirty | 0x99), present: true, exclusive: true, softDirty: true, priv: true},
		{name: "swapped private copy", in: entryBytes(pmSwapped | 0x5), swapped: true, priv: true},
		{name: "soft-dirty only", in: entryBytes(pmSoftDirty), softDirty: true},
		{name: "empty", in: nil},
		{name: "partial entry", in: make([]byte, 12), wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es, err := ParsePagemap(c.in)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			if err != nil || len(es) == 0 {
				return
			}
			e := es[0]
			got := []bool{e.Present(), e.Swapped(), e.File(), e.SoftDirty(), e.Exclusive(), e.Private()}
			want := []bool{c.present, c.swapped, c.file, c.softDirty, c.exclusive, c.priv}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("entry %#x: present/swapped/file/softdirty/exclusive/private = %v, want %v", uint64(e), got, want)
					break
				}
			}
		})
	}
}

func FuzzParsePagemap(f *testing.F) {
	f.Add(entryBytes(pmPresent|pmFile, pmSwapped))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParsePagemap(b)
		if (err == nil) != (len(b)%8 == 0) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err == nil && len(es) != len(b)/8 {
			t.Fatalf("%d bytes gave %d entries", len(b), len(es))
		}
		for _, e := range es {
			if e.Private() && e.File() {
				t.Fatalf("entry %#x both private and file", uint64(e))
			}
		}
	})
}
