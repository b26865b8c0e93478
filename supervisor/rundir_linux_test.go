//go:build linux

package supervisor

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReapStale: an entry whose lock no process holds is a leftover of a
// killed kfv and goes; a locked one, or one too young to have been
// locked yet, stays.
func TestReapStale(t *testing.T) {
	root := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "mon0.sock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale, held, young, cache := mk("stale"), mk("held"), mk("young"), mk(memwatchCacheName)
	lock, err := lockDir(held, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	now := time.Now()
	old := now.Add(-2 * staleAge)
	for _, p := range []string{stale, held, cache} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	reapStale(root, now)
	for p, want := range map[string]bool{stale: false, held: true, young: true, cache: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists %v after the reap, want %v", filepath.Base(p), err == nil, want)
		}
	}
	// The lock is the process's: once released, the entry is stale.
	lock.Close()
	reapStale(root, now)
	if _, err := os.Stat(held); err == nil {
		t.Errorf("held: still there once its lock was released")
	}
}

// TestMakeVMDir: the VM's directory is private and locked while its
// lock is open.
func TestMakeVMDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vm")
	lock, err := makeVMDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v, %v; want 0700", fi.Mode(), err)
	}
	if l2, err := lockDir(dir, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		l2.Close()
		t.Errorf("a second lock was granted while the VM's lock is held")
	}
}

// TestOpenRuntimeDir: kfv's runtime directory is refused when others may
// enter it or it is not a directory.
func TestOpenRuntimeDir(t *testing.T) {
	base := t.TempDir()
	ok := filepath.Join(base, "ok")
	if err := openRuntimeDir(ok); err != nil {
		t.Fatalf("new directory: %v", err)
	}
	if err := openRuntimeDir(ok); err != nil {
		t.Fatalf("existing directory: %v", err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := openRuntimeDir(open); err == nil {
		t.Errorf("a directory of mode 0755 was accepted")
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	if err := openRuntimeDir(link); err == nil {
		t.Errorf("a symbolic link was accepted")
	}
}
