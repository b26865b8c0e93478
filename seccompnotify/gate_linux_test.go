//go:build linux

package seccompnotify

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

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

// TestNotOn: the check made before an fd is installed in QEMU finds an
// fd that is not on the object decided on.
func TestNotOn(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	obj := [2]uint64{st.Dev, st.Ino}
	for _, tc := range []struct {
		path string
		ok   bool
	}{{a, true}, {b, false}} {
		fd, err := unix.Open(tc.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		why := notOn(FD(fd), obj)
		unix.Close(fd)
		if (why == "") != tc.ok {
			t.Errorf("notOn(%s) = %q, want ok=%v", filepath.Base(tc.path), why, tc.ok)
		}
	}
	if why := notOn(FD(-1), obj); why == "" {
		t.Errorf("notOn of a closed fd found nothing wrong")
	}
}
