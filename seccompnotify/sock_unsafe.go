//go:build linux

package seccompnotify

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FD is an fd the supervisor holds for an emulated call. It is a raw
// number on purpose: an *os.File of a non-blocking socket would be
// registered with Go's poller, and File.Fd would switch the shared file
// description to blocking mode behind QEMU's back.
type FD int

// Close closes the fd.
func (f FD) Close() error { return unix.Close(int(f)) }

// TakeFD copies the caller's fd into the supervisor (pidfd_getfd): the same
// open file description, so calls made on the copy act on the caller's
// socket or file. The copy is close-on-exec.
func TakeFD(pidfd *os.File, fd int) (FD, error) {
	if pidfd == nil {
		return -1, unix.EBADF // no pidfd of the caller's process
	}
	nfd, err := unix.PidfdGetfd(int(pidfd.Fd()), fd, 0)
	if err != nil {
		if err == unix.EBADF {
			return -1, unix.EBADF
		}
		return -1, os.NewSyscallError("pidfd_getfd", err)
	}
	return FD(nfd), nil
}

// Nonblocking reports whether the open file description is O_NONBLOCK.
func Nonblocking(f FD) (bool, error) {
	fl, err := unix.FcntlInt(uintptr(f), unix.F_GETFL, 0)
	if err != nil {
		return false, os.NewSyscallError("fcntl(F_GETFL)", err)
	}
	return fl&unix.O_NONBLOCK != 0, nil
}

// Connect calls connect(2) on f with the socket address bytes exactly as
// read from the caller, and returns the kernel's errno (0 on success).
func Connect(f FD, raw []byte) unix.Errno {
	return sockaddrCall(unix.SYS_CONNECT, f, raw)
}

// Bind calls bind(2) on f with the caller's address bytes.
func Bind(f FD, raw []byte) unix.Errno {
	return sockaddrCall(unix.SYS_BIND, f, raw)
}

func sockaddrCall(nr uintptr, f FD, raw []byte) unix.Errno {
	if len(raw) == 0 {
		return unix.EINVAL
	}
	_, _, e := unix.Syscall(nr, uintptr(f), uintptr(unsafe.Pointer(&raw[0])), uintptr(len(raw)))
	runtime.KeepAlive(raw)
	return e
}

// SendTo calls sendto(2) on f with data copied from the caller and the
// caller's address bytes; it returns the byte count or the errno.
func SendTo(f FD, data []byte, flags int, raw []byte) (int, unix.Errno) {
	var p, a unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	if len(raw) > 0 {
		a = unsafe.Pointer(&raw[0])
	}
	n, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(f), uintptr(p), uintptr(len(data)), uintptr(flags), uintptr(a), uintptr(len(raw)))
	runtime.KeepAlive(data)
	runtime.KeepAlive(raw)
	return int(n), e
}

// SocketType returns SO_TYPE of a socket (SOCK_STREAM, SOCK_DGRAM...).
func SocketType(f FD) (int, error) {
	t, err := unix.GetsockoptInt(int(f), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt(SO_TYPE)", err)
	}
	return t, nil
}

// PrepareEmulationThread locks the calling goroutine to its OS thread and
// gives that thread file-system attributes of its own (unshare(CLONE_FS)):
// its umask becomes umask and later Fchdir calls move only it. Emulated
// creations then get the caller's umask without touching the rest of the
// supervisor. The thread is never unlocked: when its goroutine ends, Go
// ends the thread with it.
func PrepareEmulationThread(umask int) error {
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return os.NewSyscallError("unshare(CLONE_FS)", err)
	}
	unix.Umask(umask)
	return nil
}

// ProcessUmask reads a process's umask from /proc/PID/status.
func ProcessUmask(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read umask: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			u, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return 0, fmt.Errorf("parse umask %q: %w", v, err)
			}
			return int(u), nil
		}
	}
	return 0, fmt.Errorf("no Umask line in /proc/%d/status", pid)
}

// SendMsg calls sendmsg(2) on f with the message, to the address bytes
// raw (none when empty), and returns the byte count or the errno.
func SendMsg(f FD, m *Msg, raw []byte, flags int) (int, unix.Errno) {
	var msg unix.Msghdr
	var iov unix.Iovec
	if len(m.Data) > 0 {
		iov.Base = &m.Data[0]
		iov.SetLen(len(m.Data))
		msg.Iov, msg.Iovlen = &iov, 1
	}
	if len(raw) > 0 {
		msg.Name, msg.Namelen = &raw[0], uint32(len(raw))
	}
	if len(m.Control) > 0 {
		msg.Control = &m.Control[0]
		msg.SetControllen(len(m.Control))
	}
	n, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(f), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	runtime.KeepAlive(m)
	runtime.KeepAlive(raw)
	return int(n), e
}

// cmsg builds one control message of the given level and type around
// data.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}
