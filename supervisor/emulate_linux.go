//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/profiles"
	"kfv/seccompnotify"
)

// Emulated calls. An allow decided from a pointer argument must not be
// answered with CONTINUE: another QEMU thread could rewrite the path or
// the address between the supervisor's read and the kernel's (DESIGN.md
// section 4). For these calls the supervisor performs the call itself on
// what it checked, and hands QEMU the result: an fd installed with
// SECCOMP_IOCTL_NOTIF_ADDFD (+ SEND), or the call's return value.

// maxSendTo bounds the data of an emulated sendto copied from QEMU.
const maxSendTo = 1 << 20

// msgFastOpen is MSG_FASTOPEN: sendmsg with it on an unconnected TCP socket
// connects to msg_name.
const msgFastOpen = 0x20000000

// emulates reports whether the supervisor performs syscall itself when it
// is allowed.
func (s *session) emulates(syscall string) bool {
	return profiles.Performed(syscall)
}

// emulate answers a call the supervisor performs itself, given the
// decision d taken on the request as decoded. An open is decided again on
// the object it reaches when that differs from the path as written
// (redecide). It reports whether it answered the notification.
func (s *session) emulate(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision, redecide bool) bool {
	switch req.Syscall {
	case "open", "openat", "creat":
		s.emulateOpen(n, req, decodeErr, d, redecide)
	case "connect", "bind":
		s.emulateSockaddr(n, req, decodeErr, d)
	case "sendto":
		s.emulateSendTo(n, req, decodeErr, d)
	case "sendmsg":
		s.emulateSendMsg(n, req, decodeErr, d)
	case "sendmmsg":
		s.checkSendMsg(n, req, decodeErr, d)
	case "unlink", "unlinkat":
		s.emulateUnlink(n, req, decodeErr, d, redecide)
	default:
		return false
	}
	return true
}

// emulateDecided carries out a held call the vertical orchestrator
// allowed: d is final.
func (s *session) emulateDecided(n *seccompnotify.Notif, req *orch.Request, d orch.Decision, detail string) {
	d.Reason = join(d.Reason, detail)
	s.emulate(n, req, nil, d, false)
}

// openArgs extracts dirfd, flags and mode of an open-family call.
func openArgs(req *orch.Request) (dirfd, flags int, mode uint32) {
	a := req.Args
	switch req.Syscall {
	case "open":
		return unix.AT_FDCWD, int(int32(a[1])), uint32(a[2])
	case "creat":
		return unix.AT_FDCWD, unix.O_CREAT | unix.O_WRONLY | unix.O_TRUNC, uint32(a[1])
	}
	return int(int32(a[0])), int(int32(a[2])), uint32(a[3])
}

func (s *session) emulateOpen(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision, redecide bool) {
	if decodeErr != nil || req.PathArg == "" && req.Path == "" {
		// The path could not be read: decided on what is known (the
		// rules see no path, so path rules do not match).
		s.answer(n, req, d, errText(decodeErr), false)
		return
	}
	dirfd, flags, mode := openArgs(req)
	or := &seccompnotify.OpenRequest{TGID: req.PID, TID: req.TID, Pidfd: s.pidfd, DirFD: dirfd, Path: req.PathArg, Flags: flags, Mode: mode}
	t, rerr := seccompnotify.ResolveOpen(or)
	async := false
	if rerr == nil {
		// The target goes to finishOpen, which may run beside the loop.
		defer func() {
			if !async {
				t.Close()
			}
		}()
		if t.Path != req.Path && redecide {
			req.Path = t.Path // decide on the object reached, not the string
			d = s.cfg.Decider.Decide(req)
		}
	}
	detail := ""
	if rerr == nil && req.PathArg != t.Path {
		detail = "requested " + strconv.Quote(req.PathArg)
	}
	if d.Action != orch.Allow || s.cfg.Mode == Audit {
		s.answer(n, req, d, detail, false)
		return
	}
	if flags&unix.O_PATH != 0 {
		// ADDFD cannot install an O_PATH fd (EBADF), so this one call
		// continues. It is safe without emulation: an O_PATH fd reads and
		// writes nothing, and every open through it (openat on it as a
		// dirfd, or its /proc magic link) is emulated and checked on the
		// object it reaches.
		s.answer(n, req, d, join(detail, "O_PATH: continued"), false)
		return
	}
	if flags&unix.O_CREAT != 0 || flags&unix.O_TMPFILE == unix.O_TMPFILE {
		// Creations get QEMU's umask of the moment on this thread.
		if err := s.syncUmask(req.PID); err != nil {
			s.answer(n, req, denyDecision(d, "kfv:emulation", err.Error()), detail, true)
			return
		}
	}
	var errno unix.Errno
	if rerr != nil {
		if !errors.As(rerr, &errno) {
			s.answer(n, req, denyDecision(d, "kfv:emulation", "resolve: "+rerr.Error()), detail, true)
			return
		}
		s.answerErrno(n, req, d, errno, join(detail, "emulated: "+errno.Error()))
		return
	}
	if t.MayBlock(flags) {
		// A FIFO or a device may wait for its other end: open it beside
		// the loop, which goes on answering the other threads. The
		// request is copied: the loop reuses its own.
		async = true
		r := *req
		nc := *n
		// Opening an existing object creates nothing: no umask or cwd is
		// involved, so a plain goroutine does (cheaper than a worker
		// thread with fs attributes of its own).
		go s.finishOpen(&nc, &r, d, t, or, detail, true)
		return
	}
	s.finishOpen(n, req, d, t, or, detail, false)
}

// emulateUnlink removes the entry that was decided on, in the directory
// kfv resolved: a path rewritten by another thread after the check
// cannot make QEMU remove something else. The decision is taken again
// on the entry's canonical path when it differs from the path as written.
func (s *session) emulateUnlink(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision, redecide bool) {
	if decodeErr != nil || req.PathArg == "" && req.Path == "" {
		s.answer(n, req, d, errText(decodeErr), false)
		return
	}
	dirfd, flags := unix.AT_FDCWD, 0
	if req.Syscall == "unlinkat" {
		dirfd, flags = int(int32(req.Args[0])), int(int32(req.Args[2]))
	}
	ur := &seccompnotify.OpenRequest{TGID: req.PID, TID: req.TID, Pidfd: s.pidfd, DirFD: dirfd, Path: req.PathArg}
	t, rerr := seccompnotify.ResolveEntry(ur, flags&unix.AT_REMOVEDIR != 0)
	detail := ""
	if rerr == nil {
		defer t.Close()
		if t.Path != req.Path && redecide {
			req.Path = t.Path
			d = s.cfg.Decider.Decide(req)
		}
		if req.PathArg != t.Path {
			detail = "requested " + strconv.Quote(req.PathArg)
		}
	}
	if d.Action != orch.Allow || s.cfg.Mode == Audit {
		s.answer(n, req, d, detail, false)
		return
	}
	var errno unix.Errno
	if rerr == nil {
		rerr = t.Remove(flags)
	}
	if rerr != nil && !errors.As(rerr, &errno) {
		s.answer(n, req, denyDecision(d, "kfv:emulation", "resolve: "+rerr.Error()), detail, true)
		return
	}
	s.answerErrno(n, req, d, errno, join(detail, "emulated"))
}

// finishOpen opens the checked target and installs it in QEMU as the
// call's result. async: run off the notification loop, on a thread of its
// own with QEMU's umask.
func (s *session) finishOpen(n *seccompnotify.Notif, req *orch.Request, d orch.Decision, t *seccompnotify.Target, or *seccompnotify.OpenRequest, detail string, async bool) {
	if async {
		defer t.Close()
	}
	f, err := t.Open(or)
	if err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			errno = unix.EIO
		}
		s.answerErrno(n, req, d, errno, join(detail, "emulated: "+errno.Error()))
		return
	}
	defer f.Close()
	var fdFlags uint32
	if or.Flags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.O_CLOEXEC
	}
	fd, err := s.listener.AddFD(n.ID, f, fdFlags, true)
	switch {
	case errors.Is(err, seccompnotify.ErrGone):
		s.emitDecision(req, d, "allow", "", join(detail, "caller gone before the answer"))
	case err != nil:
		// The fd could not be installed: the call has not been answered.
		s.answer(n, req, denyDecision(d, "kfv:emulation", "install fd: "+err.Error()), detail, true)
	default:
		s.emitDecision(req, d, "allow", "", join(detail, "emulated: fd "+strconv.Itoa(fd)))
	}
}

// emulateSockaddr performs connect or bind on a copy of QEMU's socket with
// the very address bytes that were decided on.
func (s *session) emulateSockaddr(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision) {
	if decodeErr != nil || d.Action != orch.Allow || s.cfg.Mode == Audit || len(req.SockRaw) == 0 {
		s.answer(n, req, d, errText(decodeErr), false)
		return
	}
	sock, err := seccompnotify.TakeFD(s.pidfd, int(int32(req.Args[0])))
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			s.answerErrno(n, req, d, errno, "emulated: "+errno.Error())
			return
		}
		s.answer(n, req, denyDecision(d, "kfv:emulation", err.Error()), "", true)
		return
	}
	nb, err := seccompnotify.Nonblocking(sock)
	if err != nil {
		sock.Close()
		s.answer(n, req, denyDecision(d, "kfv:emulation", err.Error()), "", true)
		return
	}
	// A relative AF_UNIX path resolves against the calling thread's cwd:
	// the emulating thread (whose fs attributes are its own) moves there.
	relUnix := len(req.SockRaw) > 2 && req.Sock != nil && req.Sock.Family == unix.AF_UNIX &&
		req.SockRaw[2] != 0 && req.SockRaw[2] != '/'
	run := func() {
		defer sock.Close()
		if relUnix {
			if err := chdirToCaller(req.TID); err != nil {
				s.answer(n, req, denyDecision(d, "kfv:emulation", err.Error()), "", true)
				return
			}
		}
		var e unix.Errno
		if req.Syscall == "connect" {
			e = seccompnotify.Connect(sock, req.SockRaw)
		} else {
			e = seccompnotify.Bind(sock, req.SockRaw)
		}
		s.answerErrno(n, req, d, e, "emulated")
	}
	if !nb && req.Syscall == "connect" {
		// A blocking connect may take long: beside the loop, on copies
		// of the notification and request, which the loop reuses.
		nc, rc := *n, *req
		n, req = &nc, &rc
		if relUnix {
			// The worker moves to QEMU's cwd: it needs fs attributes of
			// its own.
			s.workers.run(run)
		} else {
			go run()
		}
		return
	}
	if req.Syscall == "bind" && req.Sock != nil && req.Sock.Family == unix.AF_UNIX {
		// bind creates the socket file with the binder's umask.
		if err := s.syncUmask(req.PID); err != nil {
			sock.Close()
			s.answer(n, req, denyDecision(d, "kfv:emulation", err.Error()), "", true)
			return
		}
	}
	run()
}

// emulateSendTo sends QEMU's data itself to the address decided on.
func (s *session) emulateSendTo(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision) {
	if decodeErr != nil || d.Action != orch.Allow || s.cfg.Mode == Audit || len(req.SockRaw) == 0 {
		s.answer(n, req, d, errText(decodeErr), false)
		return
	}
	size := req.Args[2]
	if size > maxSendTo {
		s.answerErrno(n, req, d, unix.EMSGSIZE, fmt.Sprintf("emulated sendto of %d bytes refused (limit %d)", size, maxSendTo))
		return
	}
	data := make([]byte, size)
	if err := seccompnotify.ReadMem(n.PID, req.Args[1], data); err != nil {
		s.answerErrno(n, req, d, unix.EFAULT, "emulated: read data: "+err.Error())
		return
	}
	if s.listener.IDValid(n.ID) != nil {
		return
	}
	sock, ok := s.takeSocket(n, req, d)
	if !ok {
		return
	}
	// MSG_DONTWAIT keeps a full socket buffer from blocking the loop; QEMU
	// uses non-blocking sockets, so the result is what it would get.
	cnt, e := seccompnotify.SendTo(sock, data, int(int32(req.Args[3]))|unix.MSG_DONTWAIT, req.SockRaw)
	sock.Close()
	s.answerSent(n, req, d, cnt, e)
}

// takeSocket copies the call's fd (argument 0) from QEMU; when it cannot,
// it answers the call with the errno the native call would have got.
func (s *session) takeSocket(n *seccompnotify.Notif, req *orch.Request, d orch.Decision) (seccompnotify.FD, bool) {
	sock, err := seccompnotify.TakeFD(s.pidfd, int(int32(req.Args[0])))
	if err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			errno = unix.EBADF
		}
		s.answerErrno(n, req, d, errno, "emulated")
		return -1, false
	}
	return sock, true
}

// answerSent answers an emulated send with its byte count, or its errno.
func (s *session) answerSent(n *seccompnotify.Notif, req *orch.Request, d orch.Decision, cnt int, e unix.Errno) {
	if e != 0 {
		s.answerErrno(n, req, d, e, "emulated")
		return
	}
	if err := s.listener.Return(n.ID, int64(cnt)); err != nil && !errors.Is(err, seccompnotify.ErrGone) {
		s.emitDecision(req, d, "allow", "", req.Syscall+" emulated: answer failed: "+err.Error())
		return
	}
	s.emitDecision(req, d, "allow", "", fmt.Sprintf("emulated: %d bytes sent", cnt))
}

// emulateSendMsg sends QEMU's message itself, on a copy of the socket it
// checked and to the address decided on (none when the message named
// none): rewriting msg_name, or swapping the fd for a datagram socket
// with dup2, after the check changes nothing. Data and control messages
// are copied from QEMU (SCM_RIGHTS fds taken with pidfd_getfd). A stream
// send larger than maxSendTo is sent in part, as a non-blocking socket
// may; a larger datagram is refused with EMSGSIZE. MSG_NOSIGNAL is always
// added (QEMU ignores SIGPIPE: it gets EPIPE either way).
func (s *session) emulateSendMsg(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision) {
	if decodeErr != nil || d.Action != orch.Allow || s.cfg.Mode == Audit {
		s.answer(n, req, d, errText(decodeErr), false)
		return
	}
	flags := int(int32(req.Args[2]))
	if flags&msgFastOpen != 0 {
		s.answer(n, req, denyDecision(d, "kfv:sendmsg", "MSG_FASTOPEN connects to the message's address"), "", false)
		return
	}
	if req.Sock != nil && len(req.SockRaw) == 0 {
		s.answer(n, req, denyDecision(d, "kfv:emulation", "the message's address was not kept"), "", true)
		return
	}
	sock, ok := s.takeSocket(n, req, d)
	if !ok {
		return
	}
	typ, terr := seccompnotify.SocketType(sock)
	nb, nerr := seccompnotify.Nonblocking(sock)
	if terr != nil || nerr != nil {
		sock.Close()
		if errors.Is(terr, unix.ENOTSOCK) {
			s.answerErrno(n, req, d, unix.ENOTSOCK, "emulated")
			return
		}
		s.answer(n, req, denyDecision(d, "kfv:emulation", errors.Join(terr, nerr).Error()), "", true)
		return
	}
	m, err := seccompnotify.ReadMsg(n.PID, s.pidfd, req.Args[1], maxSendTo)
	if err != nil {
		sock.Close()
		var errno unix.Errno
		if !errors.As(err, &errno) {
			s.answer(n, req, denyDecision(d, "kfv:emulation", "read message: "+err.Error()), "", true)
			return
		}
		s.answerErrno(n, req, d, errno, "emulated")
		return
	}
	if m.Truncated && typ != unix.SOCK_STREAM {
		sock.Close()
		m.Close()
		s.answerErrno(n, req, d, unix.EMSGSIZE, fmt.Sprintf("emulated sendmsg of over %d bytes refused", maxSendTo))
		return
	}
	if s.listener.IDValid(n.ID) != nil {
		sock.Close()
		m.Close()
		return
	}
	run := func() {
		defer sock.Close()
		defer m.Close()
		cnt, e := seccompnotify.SendMsg(sock, m, req.SockRaw, flags|unix.MSG_NOSIGNAL)
		s.answerSent(n, req, d, cnt, e)
	}
	if !nb && flags&unix.MSG_DONTWAIT == 0 {
		// A blocking send may wait for the peer: beside the loop, on
		// copies of the notification and request, which it reuses.
		nc, rc := *n, *req
		n, req = &nc, &rc
		go run()
		return
	}
	run()
}

// checkSendMsg lets sendmmsg continue only where the address in
// the message cannot matter (QEMU 7.2 makes no sendmmsg; sendmsg is
// emulated): a connected stream socket (the kernel ignores
// msg_name, or fails with EISCONN) and no MSG_FASTOPEN (which connects to
// msg_name). The flags are a register argument: they cannot change under
// the check. Datagram sockets send wherever msg_name says, which another
// thread can rewrite after the check: denied.
func (s *session) checkSendMsg(n *seccompnotify.Notif, req *orch.Request, decodeErr error, d orch.Decision) {
	if decodeErr != nil || d.Action != orch.Allow || s.cfg.Mode == Audit {
		s.answer(n, req, d, errText(decodeErr), false)
		return
	}
	flags := req.Args[2]
	if req.Syscall == "sendmmsg" {
		flags = req.Args[3]
	}
	if flags&msgFastOpen != 0 {
		s.answer(n, req, denyDecision(d, "kfv:sendmsg", "MSG_FASTOPEN connects to the message's address"), "", false)
		return
	}
	sock, err := seccompnotify.TakeFD(s.pidfd, int(int32(req.Args[0])))
	if err != nil {
		s.answer(n, req, denyDecision(d, "kfv:sendmsg", err.Error()), "", false)
		return
	}
	typ, terr := seccompnotify.SocketType(sock)
	_, perr := unix.Getpeername(int(sock))
	sock.Close()
	if terr != nil || typ != unix.SOCK_STREAM || perr != nil {
		why := "only connected stream sockets may send with sendmsg: a datagram's address can be rewritten after the check"
		s.answer(n, req, denyDecision(d, "kfv:sendmsg", why), "", false)
		return
	}
	s.answer(n, req, d, "connected stream socket", false)
}

// denyDecision turns d into a denial by kfv's own check.
func denyDecision(d orch.Decision, rule, reason string) orch.Decision {
	d.Action, d.Errno, d.Rule, d.Reason = orch.Deny, int(unix.EPERM), rule, reason
	return d
}

// answerErrno answers with the emulated call's own result: 0 for
// success, else its errno, which is what QEMU would have got natively.
func (s *session) answerErrno(n *seccompnotify.Notif, req *orch.Request, d orch.Decision, e unix.Errno, detail string) {
	var err error
	if e == 0 {
		err = s.listener.Return(n.ID, 0)
	} else {
		err = s.listener.Fail(n.ID, e)
	}
	if err != nil {
		if errors.Is(err, seccompnotify.ErrGone) {
			detail = join(detail, "caller gone before the answer")
		} else {
			detail = join(detail, "answer failed: "+err.Error())
		}
	}
	errno := ""
	if e != 0 {
		errno = unix.ErrnoName(e)
	}
	s.emitDecision(req, d, "allow", errno, detail)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return "decode: " + err.Error()
}

// syncUmask gives the loop thread (whose file-system attributes are its
// own) the caller's current umask.
func (s *session) syncUmask(pid int) error {
	u, err := seccompnotify.ProcessUmask(pid)
	if err != nil {
		return err
	}
	unix.Umask(u)
	return nil
}

// chdirToCaller moves the calling thread, which must have file-system
// attributes of its own (PrepareEmulationThread), to the caller's cwd.
func chdirToCaller(tid int) error {
	fd, err := unix.Open("/proc/"+strconv.Itoa(tid)+"/cwd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the caller's cwd: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("move to the caller's cwd: %w", err)
	}
	return nil
}
