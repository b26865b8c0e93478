//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// Performed calls that name a socket address: connect, bind, sendto and
// sendmsg are made on a copy of QEMU's socket (pidfd_getfd: the same open
// file description) with the very address bytes that were decided on.

func init() {
	register(sysent.PerformSockaddr, performer{perform: performSockaddr})
	register(sysent.PerformSendTo, performer{perform: performSendTo})
	register(sysent.PerformSendMsg, performer{perform: performSendMsg})
}

// maxSendTo bounds the data of a performed send copied from QEMU.
const maxSendTo = 1 << 20

// takeSocket copies the call's fd (argument 0) from QEMU; when it
// cannot, the result is the errno the native call would have got.
func takeSocket(g *Gate, c *Call) (FD, *result) {
	sock, err := TakeFD(g.pidfdOf(c), int(int32(c.Req.Args[0])))
	if err != nil {
		r := failed(errnoOr(err, unix.EBADF), "emulated")
		return -1, &r
	}
	return sock, nil
}

// sent is the result of a performed send: its byte count, or its errno.
func sent(cnt int, e unix.Errno) result {
	if e != 0 {
		return failed(e, "emulated")
	}
	return returns(int64(cnt), 0, fmt.Sprintf("emulated: %d bytes sent", cnt))
}

func performSockaddr(g *Gate, c *Call, d orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	if len(req.SockRaw) == 0 {
		return decided("")
	}
	sock, err := TakeFD(g.pidfdOf(c), int(int32(req.Args[0])))
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			return failed(errno, "emulated: "+errno.Error())
		}
		return refused("kfv:emulation", err.Error(), true)
	}
	nb, err := Nonblocking(sock)
	if err != nil {
		sock.Close()
		return refused("kfv:emulation", err.Error(), true)
	}
	// A relative AF_UNIX path resolves against the calling thread's cwd:
	// the performing thread (whose fs attributes are its own) moves there.
	relUnix := len(req.SockRaw) > 2 && req.Sock != nil && req.Sock.Family == unix.AF_UNIX &&
		req.SockRaw[2] != 0 && req.SockRaw[2] != '/'
	run := func(c *Call) result {
		defer sock.Close()
		if relUnix {
			if err := chdirToCaller(c.Req.TID); err != nil {
				return refused("kfv:emulation", err.Error(), true)
			}
		}
		call := func() unix.Errno {
			if c.Req.Syscall == "connect" {
				return Connect(sock, c.Req.SockRaw)
			}
			return Bind(sock, c.Req.SockRaw)
		}
		if req.Sock == nil || req.Sock.Family != unix.AF_UNIX {
			return failed(call(), "emulated")
		}
		// The peer of a unix socket kfv connects sees the connecting
		// thread's ids (SO_PEERCRED), and a socket file kfv binds is
		// owned by them: QEMU's, not the supervisor's (asOwner).
		var e unix.Errno
		if err := asOwner(c.Req.TID, func() error { e = call(); return nil }); err != nil {
			return refused("kfv:emulation", err.Error(), true)
		}
		return failed(e, "emulated")
	}
	if !nb && req.Syscall == "connect" {
		// A blocking connect may take long: beside the loop.
		return g.later(c, d, func() { sock.Close() }, run)
	}
	if req.Syscall == "bind" && req.Sock != nil && req.Sock.Family == unix.AF_UNIX {
		// bind creates the socket file with the binder's umask.
		if err := syncUmask(req.PID); err != nil {
			sock.Close()
			return refused("kfv:emulation", err.Error(), true)
		}
	}
	return run(c)
}

// performSendTo sends QEMU's data itself to the address decided on.
func performSendTo(g *Gate, c *Call, _ orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	if len(req.SockRaw) == 0 {
		return decided("")
	}
	size := req.Args[2]
	if size > maxSendTo {
		return failed(unix.EMSGSIZE, fmt.Sprintf("emulated sendto of %d bytes refused (limit %d)", size, maxSendTo))
	}
	data := make([]byte, size)
	if err := ReadMem(c.N.PID, req.Args[1], data); err != nil {
		return failed(unix.EFAULT, "emulated: read data: "+err.Error())
	}
	if g.Listener.IDValid(c.N.ID) != nil {
		return result{kind: resGone}
	}
	sock, bad := takeSocket(g, c)
	if bad != nil {
		return *bad
	}
	defer sock.Close()
	// MSG_DONTWAIT keeps a full socket buffer from blocking the loop; QEMU
	// uses non-blocking sockets, so the result is what it would get.
	n, e, err := sendToFor(sock, c.N.PID, data, int(int32(req.Args[3]))|unix.MSG_DONTWAIT, req.SockRaw)
	if err != nil {
		return refused("kfv:emulation", "sendto: "+err.Error(), true)
	}
	return sent(n, e)
}

// sendToFor sends data to the address bytes raw on sock for thread tid:
// a plain sendto, or on a unix socket of a root kfv a sendmsg stating
// the caller's credentials (callerCreds), since sendto has no control.
func sendToFor(sock FD, tid int, data []byte, flags int, raw []byte) (int, unix.Errno, error) {
	creds, err := callerCreds(sock, tid)
	if err != nil {
		return 0, 0, err
	}
	if creds != nil {
		n, e := SendMsg(sock, &Msg{Data: data, Control: creds, creds: true}, raw, flags)
		return n, e, nil
	}
	n, e := SendTo(sock, data, flags, raw)
	return n, e, nil
}

// msgFastOpen is MSG_FASTOPEN: a send with it on an unconnected TCP
// socket connects to msg_name.
const msgFastOpen = 0x20000000

// sendSocket copies the socket of a sendmsg or sendmmsg and says whether
// it is a stream socket and whether sends on it may block; the result,
// when set, answers the call instead.
func sendSocket(g *Gate, c *Call) (sock FD, stream, blocking bool, bad *result) {
	sock, bad = takeSocket(g, c)
	if bad != nil {
		return -1, false, false, bad
	}
	typ, terr := SocketType(sock)
	nb, nerr := Nonblocking(sock)
	if terr != nil || nerr != nil {
		sock.Close()
		r := refused("kfv:emulation", errors.Join(terr, nerr).Error(), true)
		if errors.Is(terr, unix.ENOTSOCK) {
			r = failed(unix.ENOTSOCK, "emulated")
		}
		return -1, false, false, &r
	}
	return sock, typ == unix.SOCK_STREAM, !nb, nil
}

// performSendMsg sends QEMU's message itself, on a copy of the socket it
// checked and to the address decided on (none when the message named
// none): rewriting msg_name, or swapping the fd for a datagram socket
// with dup2, after the check changes nothing. Data and control messages
// are copied from QEMU (SCM_RIGHTS fds taken with pidfd_getfd). A stream
// send larger than maxSendTo is sent in part, as a non-blocking socket
// may; a larger datagram is refused with EMSGSIZE. MSG_NOSIGNAL is always
// added (QEMU ignores SIGPIPE: it gets EPIPE either way).
func performSendMsg(g *Gate, c *Call, d orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	flags := int(int32(req.Args[2]))
	if flags&msgFastOpen != 0 {
		return refused("kfv:sendmsg", "MSG_FASTOPEN connects to the message's address", false)
	}
	if req.Sock != nil && len(req.SockRaw) == 0 {
		return refused("kfv:emulation", "the message's address was not kept", true)
	}
	sock, stream, blocking, bad := sendSocket(g, c)
	if bad != nil {
		return *bad
	}
	m, err := ReadMsg(c.N.PID, g.pidfdOf(c), req.Args[1], maxSendTo)
	if err != nil {
		sock.Close()
		var errno unix.Errno
		if !errors.As(err, &errno) {
			return refused("kfv:emulation", "read message: "+err.Error(), true)
		}
		return failed(errno, "emulated")
	}
	if m.Truncated && !stream {
		sock.Close()
		m.Close()
		return failed(unix.EMSGSIZE, fmt.Sprintf("emulated sendmsg of over %d bytes refused", maxSendTo))
	}
	creds, err := callerCreds(sock, c.N.PID)
	if err != nil {
		sock.Close()
		m.Close()
		return refused("kfv:emulation", "sendmsg: "+err.Error(), true)
	}
	m.speakFor(creds)
	if g.Listener.IDValid(c.N.ID) != nil {
		sock.Close()
		m.Close()
		return result{kind: resGone}
	}
	// A blocking send may wait for the peer: beside the loop.
	return g.maybeLater(c, d, blocking && flags&unix.MSG_DONTWAIT == 0, func() { sock.Close(); m.Close() }, func(c *Call) result {
		defer sock.Close()
		defer m.Close()
		return sent(SendMsg(sock, m, c.Req.SockRaw, flags|unix.MSG_NOSIGNAL))
	})
}
