//go:build linux

package supervisor

import (
	"fmt"
	"testing"

	"kfv/orch"
)

// TestSummarizeArgs: the raw arguments read as fmt's %#x renders them,
// alone and after a decoded path.
func TestSummarizeArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    orch.Request
	}{
		{"zeros", orch.Request{}},
		{"mixed", orch.Request{Args: [6]uint64{1, 0xffffffffffffff9c, 0x7ffd1234abcd, 0, 0x80000, ^uint64(0)}}},
		{"after a path", orch.Request{Path: "/dev/kvm", Args: [6]uint64{3, 0xae01}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.r.Args
			want := fmt.Sprintf("args=[%#x %#x %#x %#x %#x %#x]", a[0], a[1], a[2], a[3], a[4], a[5])
			if tc.r.Path != "" {
				want = fmt.Sprintf("path=%q ", tc.r.Path) + want
			}
			if got := summarize(&tc.r); got != want {
				t.Errorf("summarize = %q, want %q", got, want)
			}
		})
	}
}
