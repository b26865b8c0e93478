//go:build linux

package seccompnotify

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// listen is decided on the address its socket is bound to, which is no
// argument of the call: the decoder reads it with getsockname on a copy
// of QEMU's fd, and the performer listens on a fresh copy only if that
// copy is bound to the very address decided on. A dup2 by another QEMU
// thread between the decision and the call then changes nothing: the
// socket listened on is the socket checked (a socket's bound address
// never changes once set). A socket that was never bound has port 0
// (inet) or no name (unix), which no derived rule admits: listen would
// bind it to an ephemeral port on every address.

func init() {
	register(sysent.PerformListen, performer{perform: performListen})
}

// BoundAddress reads the address a socket is bound to (getsockname), the
// raw bytes as the kernel gives them.
func BoundAddress(f FD) ([]byte, error) {
	buf := make([]byte, 128) // sizeof(struct sockaddr_storage)
	l := uint32(len(buf))
	_, _, e := unix.Syscall(unix.SYS_GETSOCKNAME, uintptr(f), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)))
	runtime.KeepAlive(buf)
	if e != 0 {
		return nil, e
	}
	return buf[:min(int(l), len(buf))], nil
}

// decodeBoundAddress fills r.Sock and r.SockRaw with the address the
// caller's socket fd is bound to, read on a copy of the fd taken through
// a pidfd of the caller's process. The caller must check IDValid before
// trusting it (the pid is the caller's only while it is in its call).
func decodeBoundAddress(r *orch.Request, fd int) error {
	pidfd, err := unix.PidfdOpen(r.PID, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_open", err)
	}
	pf := os.NewFile(uintptr(pidfd), "pidfd")
	defer pf.Close()
	sock, err := TakeFD(pf, fd)
	if err != nil {
		return err
	}
	defer sock.Close()
	raw, err := BoundAddress(sock)
	if err != nil {
		return err
	}
	sa, err := ParseSockaddr(raw)
	if err != nil {
		return err
	}
	r.Sock, r.SockRaw = sa, raw
	return nil
}

func performListen(g *Gate, c *Call, _ orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	if len(req.SockRaw) == 0 {
		// Nothing was decided on an address: refuse rather than let the
		// kernel listen on whatever the fd is now.
		return refused("kfv:listen", "the socket's bound address was not read", true)
	}
	sock, bad := takeSocket(g, c)
	if bad != nil {
		return *bad
	}
	defer sock.Close()
	raw, err := BoundAddress(sock)
	if err != nil {
		return failed(errnoOr(err, unix.ENOTSOCK), "emulated")
	}
	if !bytes.Equal(raw, req.SockRaw) {
		// Another socket behind the same fd number since the decision.
		return refused("kfv:listen", "the fd is no longer the socket decided on", true)
	}
	if err := unix.Listen(int(sock), int(int32(req.Args[1]))); err != nil {
		var e unix.Errno
		if errors.As(err, &e) {
			return failed(e, "emulated")
		}
		return refused("kfv:emulation", err.Error(), true)
	}
	return returns(0, 0, "emulated: listening on "+req.Sock.String())
}
