//go:build linux

package seccompnotify

import (
	"testing"

	"kfv/sysent"
)

// Every performer sysent names has its code here, and nothing is
// registered for a performer no syscall uses: a syscall known to the
// table and not to the gate (or the reverse) fails here.
func TestEveryPerformerIsRegistered(t *testing.T) {
	used := map[sysent.Performer]bool{}
	for _, e := range sysent.Entries() {
		used[e.Perform] = true
	}
	for k := sysent.PerformNone + 1; k < sysent.NumPerformers; k++ {
		p := performers[k]
		switch {
		case p.perform == nil && used[k]:
			t.Errorf("performer %s: named by sysent, not registered", k)
		case p.perform != nil && !used[k]:
			t.Errorf("performer %s: registered, no syscall uses it", k)
		}
	}
	if performers[sysent.PerformNone].perform != nil {
		t.Error("PerformNone has a performer")
	}
}
