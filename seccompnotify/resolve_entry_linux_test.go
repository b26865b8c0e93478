//go:build linux

package seccompnotify

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The caller here is the test process itself: its /proc entries, its cwd
// and a pidfd of its own stand for QEMU's.
func callerRequest(t *testing.T, dirfd int, p string) *OpenRequest {
	t.Helper()
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	t.Cleanup(func() { f.Close() })
	return &OpenRequest{TGID: os.Getpid(), TID: unix.Gettid(), Pidfd: f, DirFD: dirfd, Path: p}
}

// shareFixture: DIR/share with a file, and DIR/outside with a victim,
// reached from the share through the symlink share/esc.
func shareFixture(t *testing.T) (share, outside string) {
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	share, outside = filepath.Join(d, "share"), filepath.Join(d, "outside")
	for _, x := range []string{share, outside} {
		if err := os.Mkdir(x, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(share, "mine"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(share, "esc")); err != nil {
		t.Fatal(err)
	}
	return share, outside
}

func TestResolveObjectFollowsToTheObject(t *testing.T) {
	share, outside := shareFixture(t)
	for _, c := range []struct {
		path   string
		follow bool
		want   string
	}{
		{share + "/mine", true, share + "/mine"},
		{share + "/esc/victim", true, outside + "/victim"},        // a symlink in the tree
		{share + "/../outside/victim", true, outside + "/victim"}, // ".."
		{share + "/esc", false, share + "/esc"},                   // lchown: the link itself
	} {
		tg, err := ResolveObject(callerRequest(t, unix.AT_FDCWD, c.path), c.follow)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if tg.Path != c.want {
			t.Errorf("%s (follow %t): decided on %s, want %s", c.path, c.follow, tg.Path, c.want)
		}
		tg.Close()
	}
}

// /proc/self/fd/N is the caller's fd N: the object it refers to is what
// kfv decides on and changes, not the magic link.
func TestResolveObjectOwnFD(t *testing.T) {
	_, outside := shareFixture(t)
	fd, err := unix.Open(outside+"/victim", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, p := range []string{"/proc/self/fd/" + itoa(fd), "/proc/thread-self/fd/" + itoa(fd)} {
		tg, err := ResolveObject(callerRequest(t, unix.AT_FDCWD, p), true)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if tg.Path != outside+"/victim" {
			t.Errorf("%s: decided on %s, want the fd's file", p, tg.Path)
		}
		if err := tg.Chmod(0o640); err != nil {
			t.Errorf("chmod through the copy: %v", err)
		}
		tg.Close()
	}
	var st unix.Stat_t
	if err := unix.Stat(outside+"/victim", &st); err != nil || st.Mode&0o7777 != 0o640 {
		t.Errorf("mode %#o, %v; want 0640", st.Mode&0o7777, err)
	}
	// A closed fd: ENOENT, as /proc answers. Another process's fd: a
	// magic link kfv does not follow.
	if _, err := ResolveObject(callerRequest(t, unix.AT_FDCWD, "/proc/self/fd/999999"), true); err != unix.ENOENT {
		t.Errorf("closed fd: %v, want ENOENT", err)
	}
	if tg, err := ResolveObject(callerRequest(t, unix.AT_FDCWD, "/proc/1/fd/0"), true); err != unix.ELOOP && err != unix.EACCES {
		tg.Close()
		t.Errorf("another process's fd: %v, want ELOOP (or EACCES from /proc)", err)
	}
}

func TestOwnFD(t *testing.T) {
	for _, c := range []struct {
		p  string
		n  int
		ok bool
	}{
		{"/proc/10/fd/3", 3, true},
		{"/proc/10/task/11/fd/7", 7, true},
		{"/proc/10/task/12/fd/7", 0, false}, // another thread's table is not the caller's name for it
		{"/proc/11/fd/3", 0, false},
		{"/proc/10/fd/3/x", 0, false},
		{"/proc/10/fd/+3", 0, false},
		{"/proc/10/fd/03", 0, false},
		{"/proc/10/fd/", 0, false},
		{"/proc/10/fdinfo/3", 0, false},
	} {
		n, ok := ownFD(c.p, 10, 11)
		if n != c.n || ok != c.ok {
			t.Errorf("ownFD(%q) = %d, %t; want %d, %t", c.p, n, ok, c.n, c.ok)
		}
	}
}

// Entries are resolved in their parent, without following the last
// component; the canonical path says where the parent really is.
func TestResolveEntryAndCreate(t *testing.T) {
	share, outside := shareFixture(t)
	tg, err := ResolveCreate(callerRequest(t, unix.AT_FDCWD, share+"/esc/newdir/"), true)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Path != outside+"/newdir" {
		t.Errorf("mkdir through the symlink decided on %s, want %s", tg.Path, outside+"/newdir")
	}
	tg.Close()
	for _, p := range []string{share + "/.", share + "/..", "/"} {
		if _, err := ResolveCreate(callerRequest(t, unix.AT_FDCWD, p), true); err != unix.EEXIST {
			t.Errorf("mkdir %s: %v, want EEXIST", p, err)
		}
	}
	if _, err := ResolveCreate(callerRequest(t, unix.AT_FDCWD, share+"/x/"), false); err != unix.ENOENT {
		t.Errorf("symlink x/: %v, want ENOENT", err)
	}
	// Relative to a directory fd, as QEMU's local backend calls.
	dfd, err := unix.Open(share, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	from, err := ResolveEntry(callerRequest(t, dfd, "mine"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	to, err := ResolveEntry(callerRequest(t, dfd, "esc"), false)
	if err != nil {
		t.Fatal(err)
	}
	if from.Path != share+"/mine" || to.Path != share+"/esc" {
		t.Errorf("entries %s, %s", from.Path, to.Path)
	}
	// The rename acts in the parents resolved: a symlink swapped in for
	// the share's path afterwards changes nothing.
	if err := os.Rename(share, share+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, share); err != nil {
		t.Fatal(err)
	}
	to.Close()
	to, err = ResolveEntry(callerRequest(t, dfd, "renamed"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	if err := from.Rename(to, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(share + ".moved/renamed"); err != nil {
		t.Errorf("the rename did not happen in the directory resolved: %v", err)
	}
	if _, err := os.Stat(outside + "/renamed"); err == nil {
		t.Error("the rename followed the swapped-in symlink out of the tree")
	}
}

// asCaller gives the performing thread the caller's file-system ids: a
// root supervisor acting for a non-root caller cannot chown to another
// user nor chmod a file it does not own.
func TestAsCallerDropsPrivilege(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the point is a root supervisor acting for a non-root caller")
	}
	// Not t.TempDir: its parent is root's 0700, which nobody cannot
	// search.
	d, err := os.MkdirTemp("", "kfv-ascaller-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(d, "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	them := Creds{FSUID: nobody, FSGID: nobody}
	run := func(fn func() error) error {
		us, err := ownCreds()
		if err != nil {
			t.Fatal(err)
		}
		lockThread(t)
		if err := setFSCreds(them); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := setFSCreds(us); err != nil {
				panic(err)
			}
		}()
		return fn()
	}
	if err := run(func() error { return unix.Chmod(f, 0o777) }); err != unix.EPERM {
		t.Errorf("chmod of root's file as nobody: %v, want EPERM", err)
	}
	if err := run(func() error { return unix.Mkdir(filepath.Join(d, "sub"), 0o755) }); err != nil {
		t.Fatalf("mkdir as nobody in a 0777 directory: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(d, "sub"), &st); err != nil || st.Uid != nobody {
		t.Errorf("the directory made as nobody is owned by %d (%v), want %d", st.Uid, err, nobody)
	}
	if err := run(func() error { return unix.Chown(filepath.Join(d, "sub"), 0, 0) }); err != unix.EPERM {
		t.Errorf("chown to root as nobody: %v, want EPERM", err)
	}
	if u, _ := unix.SetfsuidRetUid(-1); u != 0 {
		t.Errorf("fsuid %d after the call, want 0 restored", u)
	}
}

func TestParseCreds(t *testing.T) {
	c, err := parseCreds("Name:\tqemu\nUid:\t0\t1000\t1000\t1001\nGid:\t5\t6\t7\t8\nGroups:\t30 4 \n", "status")
	if err != nil {
		t.Fatal(err)
	}
	if c.FSUID != 1001 || c.FSGID != 8 || len(c.Groups) != 2 || c.Groups[0] != 4 {
		t.Errorf("got %+v", c)
	}
	if _, err := parseCreds("Uid:\t0 0\nGid:\t0\t0\t0\t0\n", "status"); err == nil || !strings.Contains(err.Error(), "Uid") {
		t.Errorf("a short Uid line: %v, want an error naming it", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// lockThread keeps the test on one thread while it changes that
// thread's credentials.
func lockThread(t *testing.T) { t.Helper(); runtime.LockOSThread() }
