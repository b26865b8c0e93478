//go:build linux

package seccompnotify

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// utimensatEmpty sets the times of fd's object, O_PATH fds included
// (utimensat with an empty path and AT_EMPTY_PATH); nil ts sets both to
// now, as a NULL times argument does.
func utimensatEmpty(fd int, ts []unix.Timespec) error {
	empty := [1]byte{}
	var tp unsafe.Pointer
	if ts != nil {
		if len(ts) != 2 {
			return unix.EINVAL
		}
		tp = unsafe.Pointer(&ts[0])
	}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), uintptr(unsafe.Pointer(&empty[0])), uintptr(tp), unix.AT_EMPTY_PATH, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
