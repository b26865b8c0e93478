//go:build linux

package seccompnotify

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel ABI of <linux/seccomp.h>. The kernel copies exactly
// sizeof(struct seccomp_notif) bytes out on RECV; Listener checks at attach
// time with SECCOMP_GET_NOTIF_SIZES that these layouts are the kernel's.

// notifRaw is struct seccomp_notif.
type notifRaw struct {
	ID    uint64
	PID   uint32
	Flags uint32
	// struct seccomp_data
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// respRaw is struct seccomp_notif_resp.
type respRaw struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// addfdRaw is struct seccomp_notif_addfd.
type addfdRaw struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// notifSizes is struct seccomp_notif_sizes.
type notifSizes struct {
	Notif     uint16
	NotifResp uint16
	Data      uint16
}

const (
	ioctlNotifRecv    = unix.SECCOMP_IOCTL_NOTIF_RECV // _IOWR('!', 0, struct seccomp_notif)
	ioctlNotifSend    = unix.SECCOMP_IOCTL_NOTIF_SEND // _IOWR('!', 1, struct seccomp_notif_resp)
	ioctlNotifIDValid = 0x40082102                    // _IOW('!', 2, __u64)
	ioctlNotifAddFD   = 0x40182103                    // _IOW('!', 3, struct seccomp_notif_addfd)
	ioctlNotifSetFlag = 0x40082104                    // _IOW('!', 4, __u64), Linux 6.6+
)

var _ = [1]struct{}{}[unsafe.Sizeof(notifRaw{})-80]
var _ = [1]struct{}{}[unsafe.Sizeof(respRaw{})-24]
var _ = [1]struct{}{}[unsafe.Sizeof(addfdRaw{})-24]

func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return e
	}
	return nil
}

// ioctlRet is ioctlPtr for requests whose return value matters (ADDFD).
func ioctlRet(fd int, req uintptr, p unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func recvNotif(fd int, n *notifRaw) error {
	*n = notifRaw{} // the kernel requires a zeroed buffer
	return ioctlPtr(fd, ioctlNotifRecv, unsafe.Pointer(n))
}

func sendResp(fd int, r *respRaw) error {
	return ioctlPtr(fd, ioctlNotifSend, unsafe.Pointer(r))
}

func idValid(fd int, id uint64) error {
	return ioctlPtr(fd, ioctlNotifIDValid, unsafe.Pointer(&id))
}

func setNotifFlags(fd int, flags uint64) error {
	// SECCOMP_IOCTL_NOTIF_SET_FLAGS takes the flags by value, not by pointer.
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlNotifSetFlag, uintptr(flags))
	if e != 0 {
		return e
	}
	return nil
}

func addFD(fd int, a *addfdRaw) (int, error) {
	return ioctlRet(fd, ioctlNotifAddFD, unsafe.Pointer(a))
}

func getNotifSizes() (notifSizes, error) {
	var s notifSizes
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&s)))
	if e != 0 {
		return s, e
	}
	return s, nil
}

// sockFprog is struct sock_fprog.
type sockFprog struct {
	Len    uint16
	_      [6]byte
	Filter *unix.SockFilter
}

// seccompSetFilter calls seccomp(SECCOMP_SET_MODE_FILTER, flags, prog) and
// returns its result: with SECCOMP_FILTER_FLAG_NEW_LISTENER, the listener
// fd, which the kernel creates close-on-exec.
func seccompSetFilter(flags uintptr, prog []unix.SockFilter) (int, unix.Errno) {
	fp := sockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fp)))
	return int(r), e
}

// rawExecve is execve(2) without any Go runtime involvement between the
// filter load and the exec: no allocation, no scheduler call, so the loading
// thread makes no syscall but this one once the filter is in place.
func rawExecve(argv0 *byte, argv, envv []*byte) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_EXECVE,
		uintptr(unsafe.Pointer(argv0)),
		uintptr(unsafe.Pointer(&argv[0])),
		uintptr(unsafe.Pointer(&envv[0])))
	return e
}

// emptyPath is the "" path of execveat with AT_EMPTY_PATH.
var emptyPath = &[]byte{0}[0]

// rawExecveat is execveat(fd, name, argv, envv, flags), as rawExecve.
func rawExecveat(fd int, name *byte, argv, envv []*byte, flags uintptr) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_EXECVEAT, uintptr(fd),
		uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&argv[0])),
		uintptr(unsafe.Pointer(&envv[0])), flags, 0)
	return e
}
