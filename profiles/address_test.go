package profiles

import (
	"net/netip"
	"testing"
)

func TestParseAddressPorts(t *testing.T) {
	tests := []struct {
		entry string
		match []string
		miss  []string
	}{
		{"127.0.0.1", []string{"127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:65535"}, []string{"127.0.0.2:1"}},
		{"127.0.0.1:4444", []string{"127.0.0.1:4444"}, []string{"127.0.0.1:4445", "127.0.0.1:0"}},
		// Port 0 is the kernel's choice, matched only as itself.
		{"127.0.0.1:0", []string{"127.0.0.1:0"}, []string{"127.0.0.1:1", "127.0.0.1:4444"}},
		{"0.0.0.0/0:5900-5902", []string{"0.0.0.0:5900", "10.1.2.3:5901", "127.0.0.1:5902"}, []string{"127.0.0.1:5899", "127.0.0.1:5903", "[::1]:5900"}},
		{"[::/0]:5900-5900", []string{"[::]:5900", "[::1]:5900"}, []string{"[::1]:5901", "127.0.0.1:5900"}},
		{"[::ffff:127.0.0.1]:22", []string{"127.0.0.1:22", "[::ffff:127.0.0.1]:22"}, []string{"127.0.0.1:23"}},
	}
	for _, tt := range tests {
		a, err := ParseAddress(tt.entry)
		if err != nil {
			t.Errorf("%s: %v", tt.entry, err)
			continue
		}
		for _, s := range tt.match {
			if !a.MatchInet(netip.MustParseAddrPort(s)) {
				t.Errorf("%s does not match %s", tt.entry, s)
			}
		}
		for _, s := range tt.miss {
			if a.MatchInet(netip.MustParseAddrPort(s)) {
				t.Errorf("%s matches %s", tt.entry, s)
			}
		}
	}
	for _, bad := range []string{"1.2.3.4:70000", "1.2.3.4:0-10", "1.2.3.4:10-9", "1.2.3.4:1-", "1.2.3.4:-1", "1.2.3.4:x", "[::1]:5-70000"} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
