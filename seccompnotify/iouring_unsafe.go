//go:build linux

package seccompnotify

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring system calls kfv makes to create the rings it hands QEMU
// (perform_iouring_linux.go). x/sys/unix has their numbers, not their
// structs.

// ioUringSetup is io_uring_setup(entries, p): the kernel reads and
// rewrites the params in place.
func ioUringSetup(entries uint32, p *ringParams) (int, unix.Errno) {
	r, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p[0])), 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// ioUringRegister is io_uring_register(fd, op, arg, nr); arg may be empty.
func ioUringRegister(fd int, op uint32, arg []byte, nr int) unix.Errno {
	var p unsafe.Pointer
	if len(arg) > 0 {
		p = unsafe.Pointer(&arg[0])
	}
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(op), uintptr(p), uintptr(nr), 0, 0)
	return e
}
