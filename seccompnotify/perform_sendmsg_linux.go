//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

func init() {
	register(sysent.PerformSendMsg, performer{perform: performSendMsg})
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
	m, err := ReadMsg(c.N.PID, g.Pidfd, req.Args[1], maxSendTo)
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
	if g.Listener.IDValid(c.N.ID) != nil {
		sock.Close()
		m.Close()
		return result{kind: resGone}
	}
	run := func(c *Call, _ *Target) result {
		defer sock.Close()
		defer m.Close()
		return sent(SendMsg(sock, m, c.Req.SockRaw, flags|unix.MSG_NOSIGNAL))
	}
	if blocking && flags&unix.MSG_DONTWAIT == 0 {
		// A blocking send may wait for the peer: beside the loop.
		r := g.later(c, d, nil, run)
		if r.kind != resLater {
			sock.Close()
			m.Close()
		}
		return r
	}
	return run(c, nil)
}
