//go:build linux

package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// What of kfv must have a path: the sockets QEMU listens on for the
// manager's QMP monitors that kfv proxies (QEMU serves a private path,
// kfv the manager's: qmpproxy.Rewrite). kfv's own monitor has none (a
// socket pair, monitor.go) and checkpoints are unnamed files.
//
// Those sockets live in a directory per VM under kfv's runtime
// directory, which only kfv's user can enter. The process that serves
// the monitors holds a lock (flock) on the VM's directory for as long as
// it runs; the kernel drops the lock whatever ends that process, so a
// directory nobody holds is a leftover of a kfv that was killed, and
// the next kfv to make one removes it.

// runtimeDir is kfv's runtime directory: /run/kfv for root, else
// $XDG_RUNTIME_DIR/kfv, else kfv-UID in the temporary directory.
func runtimeDir() string {
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/kfv"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "kfv")
	}
	return filepath.Join(os.TempDir(), "kfv-"+strconv.Itoa(uid))
}

// staleAge is how old an unlocked entry must be before it is taken for
// a leftover: an entry is locked within moments of being made, and a
// kfv starting then must not remove it.
const staleAge = 10 * time.Second

// openRuntimeDir makes kfv's runtime directory if it is missing and
// checks that it is a directory of this user's, which nobody else may
// enter: the sockets in it are QEMU's monitors.
func openRuntimeDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("kfv's runtime directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("kfv's runtime directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("kfv's runtime directory %s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("kfv's runtime directory %s is not a directory", dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("kfv's runtime directory %s belongs to uid %d, not to kfv's user (uid %d)", dir, st.Uid, os.Geteuid())
	case st.Mode&0o077 != 0:
		return fmt.Errorf("kfv's runtime directory %s has mode %o: only its owner may enter it (chmod 0700)", dir, st.Mode&0o777)
	}
	return nil
}

// vmDirName returns a name for one VM's directory under kfv's runtime
// directory, which it makes if it is missing; makeVMDir makes it.
func vmDirName() (string, error) {
	root := runtimeDir()
	if err := openRuntimeDir(root); err != nil {
		return "", err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("kfv's runtime directory: %w", err)
	}
	return filepath.Join(root, hex.EncodeToString(b[:])), nil
}

// makeVMDir makes the VM's directory dir (vmDirName), locked for as long
// as the returned file is open (hand it to the process that serves the
// VM's monitors), after removing the leftovers of killed kfvs.
func makeVMDir(dir string) (*os.File, error) {
	reapStale(filepath.Dir(dir), time.Now())
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kfv's runtime directory: %w", err)
	}
	lock, err := lockDir(dir, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("kfv's runtime directory: %w", err)
	}
	return lock, nil
}

// lockDir opens dir and takes a lock on it (flock how).
func lockDir(dir string, how int) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	if err := unix.Flock(fd, how); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "flock", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// reapStale removes the entries of root that no process holds and that
// are older than staleAge at now. What cannot be removed is left for a
// later start: a leftover costs a directory, not a failed launch.
func reapStale(root string, now time.Time) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == memwatchCacheName {
			continue
		}
		p := filepath.Join(root, e.Name())
		if fi, err := e.Info(); err != nil || now.Sub(fi.ModTime()) < staleAge {
			continue
		}
		lock, err := lockDir(p, unix.LOCK_EX|unix.LOCK_NB)
		if err != nil {
			continue // in use, or gone meanwhile
		}
		os.RemoveAll(p)
		lock.Close()
	}
}
