package resources

import (
	"errors"
	"testing"
)

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		in, host, port string
		want           string // AddressError.Want; "" for no error
	}{
		{in: "10.0.0.1:4444", host: "10.0.0.1", port: "4444"},
		{in: "logs.example:514", host: "logs.example", port: "514"},
		{in: ":5900", host: "", port: "5900"},
		{in: "[2001:db8::5]:7000", host: "2001:db8::5", port: "7000"},
		{in: "[::]:4444", host: "::", port: "4444"},
		{in: "::1:22", host: "::1", port: "22"},
		{in: "0.0.0.0:4444-4450", host: "0.0.0.0", port: "4444-4450"},
		{in: "localhost", want: "HOST:PORT"},
		{in: "", want: "HOST:PORT"},
		{in: "[::1]", want: "[ADDRESS]:PORT"},
		{in: "[::1:22", want: "[ADDRESS]:PORT"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			host, port, err := SplitHostPort(tc.in)
			if tc.want != "" {
				var ae *AddressError
				if !errors.As(err, &ae) || ae.Want != tc.want || ae.Address != tc.in {
					t.Fatalf("SplitHostPort(%q) error %v, want an *AddressError wanting %s", tc.in, err, tc.want)
				}
				return
			}
			if err != nil || host != tc.host || port != tc.port {
				t.Fatalf("SplitHostPort(%q) = %q, %q, %v; want %q, %q", tc.in, host, port, err, tc.host, tc.port)
			}
			if j := joinHostPort(host, port); j != tc.in && "["+host+"]:"+port != j {
				t.Errorf("joinHostPort(%q, %q) = %q", host, port, j)
			}
		})
	}
}

func TestIsFlag(t *testing.T) {
	for name, want := range map[string]bool{"nodefaults": true, "S": true, "snapshot": true, "drive": false, "qmp": false, "no-such-option": false} {
		if got := IsFlag(name); got != want {
			t.Errorf("IsFlag(%q) = %v, want %v", name, got, want)
		}
	}
}
