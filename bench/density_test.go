package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseDensity(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []int
		err      string // part of the error, "" for none
	}{
		{name: "default", in: defaultDensity, want: []int{1, 10, 25, 50}},
		{name: "quick", in: " 1, 10 ", want: []int{1, 10}},
		{name: "zero", in: "1,0", err: `"0" is not a number of VMs`},
		{name: "word", in: "ten", err: `"ten" is not a number of VMs`},
		{name: "empty", in: " , ", err: "no number of VMs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDensity(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "-density") {
					t.Fatalf("parseDensity(%q) = %v, %v; want an error naming -density and %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("parseDensity(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}
