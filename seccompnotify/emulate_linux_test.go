//go:build linux

package seccompnotify

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// selfRequest builds an open request in which this very test process is
// the caller.
func selfRequest(t *testing.T, dirfd int, path string, flags int) *OpenRequest {
	t.Helper()
	pfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("pidfd_open: %v (needs Linux 5.3)", err)
	}
	f := os.NewFile(uintptr(pfd), "pidfd")
	t.Cleanup(func() { f.Close() })
	return &OpenRequest{TGID: os.Getpid(), TID: unix.Gettid(), Pidfd: f, DirFD: dirfd, Path: path, Flags: flags, Mode: 0o640}
}

func TestResolveAndOpen(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		path  string
		flags int
		want  string // canonical path, or "" for an error
		errno unix.Errno
	}{
		{"device", "/dev/null", unix.O_RDWR, "/dev/null", 0},
		{"file", filepath.Join(dir, "f"), unix.O_RDONLY, filepath.Join(dir, "f"), 0},
		{"proc self", "/proc/self/status", unix.O_RDONLY, "/proc/self/status", 0},
		{"proc thread-self", "/proc/thread-self/comm", unix.O_RDONLY, "/proc/thread-self/comm", 0},
		{"magic link refused", "/proc/self/fd/0", unix.O_RDONLY, "", unix.ELOOP},
		{"missing", filepath.Join(dir, "nope"), unix.O_RDONLY, "", unix.ENOENT},
		{"create", filepath.Join(dir, "new"), unix.O_CREAT | unix.O_WRONLY, filepath.Join(dir, "new"), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := selfRequest(t, unix.AT_FDCWD, c.path, c.flags)
			tg, err := ResolveOpen(r)
			if c.errno != 0 {
				if err != c.errno {
					t.Fatalf("ResolveOpen = %v, want %v", err, c.errno)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveOpen: %v", err)
			}
			defer tg.Close()
			if tg.Path != c.want {
				t.Errorf("Path = %q, want %q", tg.Path, c.want)
			}
			f, err := tg.Open(r)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			f.Close()
		})
	}
}
