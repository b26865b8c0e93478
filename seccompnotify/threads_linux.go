//go:build linux

package seccompnotify

import (
	"bytes"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// threadNames reads the names of a process's threads cheaply: it keeps one
// open fd per thread on /proc/PID/task/TID/comm and re-reads it (pread) on
// every call, so a thread that renames itself (QEMU names its threads as
// they start) is always seen under its current name. Opening the fd under
// /proc/PID/task also proves the thread belongs to PID. The name is never
// cached, only the fd; a thread that died makes pread fail and the fd is
// dropped (a later thread with the same tid gets a fresh one).
type threadNames struct {
	mu  sync.Mutex
	pid int
	fds map[int]int // tid -> fd
}

// maxThreadFDs bounds the fds kept (QEMU has tens of threads).
const maxThreadFDs = 1024

func newThreadNames(pid int) *threadNames {
	return &threadNames{pid: pid, fds: map[int]int{}}
}

// nameKept returns tid's name and whether tid is a thread of the process
// (a nil t knows no process), and whether the name was read through an
// fd kept from before (kept): one opened for an earlier call of tid. A
// read that succeeds on such an fd proves that the thread it was opened
// for is alive, so it is still the one that has the id tid, and so the
// caller of a notification received after the fd was opened: the name is
// the caller's without a NOTIF_ID_VALID check. A fd opened now could be
// for a thread that took the id of a caller gone since the notification.
func (t *threadNames) nameKept(tid int) (name string, ok, kept bool) {
	if t == nil {
		return "", false, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var buf [64]byte
	for attempt := 0; attempt < 2; attempt++ {
		fd, ok := t.fds[tid]
		if !ok {
			var err error
			fd, err = unix.Open("/proc/"+strconv.Itoa(t.pid)+"/task/"+strconv.Itoa(tid)+"/comm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", false, false // not a thread of pid (or gone)
			}
			if len(t.fds) >= maxThreadFDs {
				t.closeAllLocked()
			}
			t.fds[tid] = fd
		}
		n, err := unix.Pread(fd, buf[:], 0)
		if err == nil {
			return string(bytes.TrimSuffix(buf[:n], []byte("\n"))), true, ok
		}
		// The thread is gone (or the tid was reused): retry once with a
		// fresh fd.
		unix.Close(fd)
		delete(t.fds, tid)
	}
	return "", false, false
}

// closeAllLocked closes every kept fd.
//
// Preconditions: t.mu is held.
func (t *threadNames) closeAllLocked() {
	for tid, fd := range t.fds {
		unix.Close(fd)
		delete(t.fds, tid)
	}
}

// Close closes the kept fds.
func (t *threadNames) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeAllLocked()
}
