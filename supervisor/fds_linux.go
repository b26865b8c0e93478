//go:build linux

package supervisor

import (
	"os"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// inheritedFDs are the fds above 2 that were open when this process
// started: the ones its caller (a shell, libvirt) passed down. They are
// computed before main runs, when the Go runtime has opened nothing that
// survives exec: every fd then open came through exec.
var inheritedFDs = listInheritedFDs()

func listInheritedFDs() []int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil
	}
	self := int(d.Fd())
	var fds []int
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= 2 || fd == self {
			continue
		}
		fds = append(fds, fd)
	}
	sort.Ints(fds)
	return fds
}

// closedFD marks a closed slot in syscall.ProcAttr.Files.
const closedFD = ^uintptr(0)

// childFiles builds syscall.ProcAttr.Files so that stdio and every
// inherited fd arrive at their own numbers in the child, the numbers
// between them closed, and extra fds follow after the highest. It returns
// the number of the first extra fd in the child.
//
// Raw numbers, not *os.File: File.Fd() would switch a non-blocking fd
// (a tap device libvirt hands over) to blocking mode behind QEMU's back.
func childFiles(inherited []int, extra ...uintptr) ([]uintptr, int) {
	max := 2
	for _, fd := range inherited {
		if fd > max {
			max = fd
		}
	}
	files := make([]uintptr, max+1)
	for i := range files {
		files[i] = closedFD
	}
	for fd := 0; fd <= 2; fd++ {
		if isOpen(fd) {
			files[fd] = uintptr(fd)
		}
	}
	for _, fd := range inherited {
		files[fd] = uintptr(fd)
	}
	return append(files, extra...), max + 1
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// without returns fds less those in hide.
func without(fds, hide []int) []int {
	if len(hide) == 0 {
		return fds
	}
	var out []int
	for _, fd := range fds {
		keep := true
		for _, h := range hide {
			keep = keep && fd != h
		}
		if keep {
			out = append(out, fd)
		}
	}
	return out
}
