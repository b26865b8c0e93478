//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

func init() {
	register(sysent.PerformSendMmsg, performer{perform: performSendMmsg})
}

// performSendMmsg sends QEMU's vector of messages itself, message by
// message, on a copy of the socket and to the address decided on: a
// message that names an address goes to the address bytes the decision
// was taken on (the decoder admits a vector only when all its messages
// name the same one), a message that names none goes without one. So
// rewriting msg_name, or swapping the fd with dup2, after the check
// changes nothing. Each message is copied from QEMU before anything is
// sent (data and control messages, SCM_RIGHTS fds taken with
// pidfd_getfd), msg_len is written back into QEMU's array after each
// send, and the count of messages sent is returned, as the kernel's
// __sys_sendmmsg does: an error is returned only when no message was
// sent, and a partial stream send ends the vector.
func performSendMmsg(g *Gate, c *Call, d orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	flags := int(int32(req.Args[3]))
	if flags&msgFastOpen != 0 {
		return refused("kfv:sendmsg", "MSG_FASTOPEN connects to the message's address", false)
	}
	if req.Sock != nil && len(req.SockRaw) == 0 {
		return refused("kfv:emulation", "the messages name different addresses (or theirs was not kept): one decision cannot cover them", true)
	}
	vlen := uint64(uint32(req.Args[2]))
	if vlen > maxMmsg {
		vlen = maxMmsg // the kernel sends at most UIO_MAXIOV
	}
	if vlen == 0 {
		return returns(0, 0, "emulated: 0 messages sent")
	}
	sock, stream, blocking, bad := sendSocket(g, c)
	if bad != nil {
		return *bad
	}
	v := readMmsgs(g, c, vlen, stream)
	if len(v.msgs) == 0 {
		sock.Close()
		return failed(v.stop, "emulated")
	}
	creds, err := callerCreds(sock, c.N.PID)
	if err != nil {
		sock.Close()
		v.close()
		return refused("kfv:emulation", "sendmmsg: "+err.Error(), true)
	}
	for _, m := range v.msgs {
		m.speakFor(creds)
	}
	if g.Listener.IDValid(c.N.ID) != nil {
		sock.Close()
		v.close()
		return result{kind: resGone}
	}
	// A blocking send may wait for the peer: beside the loop.
	return g.maybeLater(c, d, blocking && flags&unix.MSG_DONTWAIT == 0, func() { sock.Close(); v.close() }, func(c *Call) result {
		defer sock.Close()
		defer v.close()
		return v.send(c, sock, flags|unix.MSG_NOSIGNAL)
	})
}

// mmsgs is a vector of messages copied from QEMU.
type mmsgs struct {
	msgs  []*Msg
	named []bool // message i names an address
	// stop is the errno that ended the copy before the vector's end
	// (what the kernel would fail that message with), 0 if none.
	stop unix.Errno
}

func (v *mmsgs) close() {
	for _, m := range v.msgs {
		m.Close()
	}
}

// readMmsgs copies up to vlen messages of the array at argument 1. It
// stops at the first message the kernel would refuse to send (unreadable,
// or a datagram over maxSendTo): those before it are still sent.
func readMmsgs(g *Gate, c *Call, vlen uint64, stream bool) *mmsgs {
	v := &mmsgs{}
	base := c.Req.Args[1]
	hdrs := make([]byte, vlen*sizeofMmsghdr)
	if err := ReadMem(c.N.PID, base, hdrs); err != nil {
		v.stop = unix.EFAULT
		return v
	}
	for i := uint64(0); i < vlen; i++ {
		h := hdrs[i*sizeofMmsghdr:]
		m, err := ReadMsg(c.N.PID, g.pidfdOf(c), base+i*sizeofMmsghdr, maxSendTo)
		if err != nil {
			v.stop = errnoOr(err, unix.EFAULT)
			break
		}
		if m.Truncated && !stream {
			m.Close()
			v.stop = unix.EMSGSIZE
			break
		}
		v.msgs = append(v.msgs, m)
		v.named = append(v.named, binary.NativeEndian.Uint64(h[0:]) != 0 && binary.NativeEndian.Uint32(h[8:]) != 0)
	}
	return v
}

// send sends the messages in order and writes each msg_len back.
func (v *mmsgs) send(c *Call, sock FD, flags int) result {
	base := c.Req.Args[1]
	sent := 0
	e := v.stop
	for i, m := range v.msgs {
		var raw []byte
		if v.named[i] {
			raw = c.Req.SockRaw
		}
		cnt, serr := SendMsg(sock, m, raw, flags)
		if serr != 0 {
			e = serr
			break
		}
		// msg_len, as the kernel writes it after each message it sends.
		var msgLen [4]byte
		binary.NativeEndian.PutUint32(msgLen[:], uint32(cnt))
		if err := WriteMem(c.N.PID, base+uint64(i)*sizeofMmsghdr+sizeofMsghdr, msgLen[:]); err != nil {
			e = unix.EFAULT
			break
		}
		sent++
		if cnt < len(m.Data) || m.Truncated {
			break // part of a stream message went: the kernel stops there too
		}
	}
	if sent == 0 {
		return failed(e, "emulated")
	}
	return returns(int64(sent), 0, fmt.Sprintf("emulated: %d of %d messages sent", sent, len(v.msgs)))
}
