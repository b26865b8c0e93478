//go:build linux

package seccompnotify

import (
	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

func init() {
	register(sysent.PerformSendMmsg, performer{perform: performSendMmsg})
}

// performSendMmsg lets sendmmsg continue only where the address in the
// messages cannot matter (QEMU 7.2 makes no sendmmsg; sendmsg is
// performed): a connected stream socket (the kernel ignores msg_name, or
// fails with EISCONN) and no MSG_FASTOPEN (which connects to msg_name).
// The flags are a register argument: they cannot change under the check.
// Datagram sockets send wherever msg_name says, which another thread can
// rewrite after the check: denied.
func performSendMmsg(g *Gate, c *Call, _ orch.Decision, _ *Target, _ error) result {
	if c.Req.Args[3]&msgFastOpen != 0 {
		return refused("kfv:sendmsg", "MSG_FASTOPEN connects to the message's address", false)
	}
	sock, err := TakeFD(g.Pidfd, int(int32(c.Req.Args[0])))
	if err != nil {
		return refused("kfv:sendmsg", err.Error(), false)
	}
	typ, terr := SocketType(sock)
	_, perr := unix.Getpeername(int(sock))
	sock.Close()
	if terr != nil || typ != unix.SOCK_STREAM || perr != nil {
		return refused("kfv:sendmsg", "only connected stream sockets may send with sendmsg: a datagram's address can be rewritten after the check", false)
	}
	return decided("connected stream socket")
}
