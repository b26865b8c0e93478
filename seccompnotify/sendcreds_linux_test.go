//go:build linux

package seccompnotify

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPerformedSendStatesCallersCredentials: a root kfv sending on a
// unix socket for an unprivileged caller must not lend the message its
// own credentials. The peer, with SO_PASSCRED, sees the caller's pid,
// uid and gid, as for the caller's own send; a plain send of kfv's
// shows root and kfv's pid, which is what the fix is about.
func TestPerformedSendStatesCallersCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the credentials of a performed send matter when kfv is root and QEMU is not")
	}
	const nobody = 65534
	pair := func(typ int) (*os.File, int) {
		fds, err := unix.Socketpair(unix.AF_UNIX, typ, 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fds[0]), "caller's socket"), fds[1]
	}
	// The receiver: a named datagram socket with SO_PASSCRED, which a
	// sendto names (performSendTo's case).
	recvPath := filepath.Join(t.TempDir(), "r")
	recv, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(recv)
	if err := unix.Bind(recv, &unix.SockaddrUnix{Name: recvPath}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(recv, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	// The caller: a process running as nobody that holds an unbound
	// datagram socket at fd 3, taken with pidfd_getfd as for QEMU's.
	callerSock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	csf := os.NewFile(uintptr(callerSock), "caller's dgram socket")
	// And a stream pair for sendmsg without an address, whose peer end
	// is the test's.
	streamEnd, streamPeer := pair(unix.SOCK_STREAM)
	defer unix.Close(streamPeer)
	if err := unix.SetsockoptInt(streamPeer, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	caller := exec.Command("sleep", "60")
	caller.ExtraFiles = []*os.File{csf, streamEnd}
	caller.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, NoSetGroups: true}}
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caller.Process.Kill(); caller.Wait() })
	csf.Close()
	streamEnd.Close()
	tid := caller.Process.Pid
	pidfd, err := unix.PidfdOpen(tid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf := os.NewFile(uintptr(pidfd), "pidfd")
	defer pf.Close()
	take := func(fd int) FD {
		s, err := TakeFD(pf, fd)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	dgram, stream := take(3), take(4)

	seen := func(fd int, what string) unix.Ucred {
		t.Helper()
		buf := make([]byte, 64)
		oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("%s: recvmsg: %v", what, err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: control messages %v, %v: want one SCM_CREDENTIALS", what, msgs, err)
		}
		uc, err := unix.ParseUnixCredentials(&msgs[0])
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return *uc
	}
	raw := sockaddrUnix(recvPath)
	want := unix.Ucred{Pid: int32(tid), Uid: nobody, Gid: nobody}

	// What kfv's own send tells the peer: root and kfv's pid.
	if _, e := SendTo(dgram, []byte("plain"), unix.MSG_DONTWAIT, raw); e != 0 {
		t.Fatal(e)
	}
	if got := seen(recv, "kfv's plain sendto"); got.Uid != 0 || got.Pid != int32(os.Getpid()) {
		t.Fatalf("kfv's plain sendto: peer sees %+v, want root and kfv's pid %d (the case the credentials are stated for)", got, os.Getpid())
	}

	// performSendTo's send.
	if _, e, err := sendToFor(dgram, tid, []byte("sendto"), unix.MSG_DONTWAIT, raw); err != nil || e != 0 {
		t.Fatal(err, e)
	}
	if got := seen(recv, "performed sendto"); got != want {
		t.Errorf("performed sendto: peer sees %+v, want the caller's %+v", got, want)
	}

	// performSendMsg's and performSendMmsg's send, without an address.
	creds, err := callerCreds(stream, tid)
	if err != nil || creds == nil {
		t.Fatalf("callerCreds on a unix stream socket = %v, %v", creds, err)
	}
	m := &Msg{Data: []byte("sendmsg")}
	m.speakFor(creds)
	m.speakFor(creds) // once only
	if _, e := SendMsg(stream, m, nil, unix.MSG_DONTWAIT); e != 0 {
		t.Fatal(e)
	}
	if got := seen(streamPeer, "performed sendmsg"); got != want {
		t.Errorf("performed sendmsg: peer sees %+v, want the caller's %+v", got, want)
	}

	// A message with the caller's own SCM_CREDENTIALS keeps it alone.
	own := &Msg{Data: []byte("own"), Control: unix.UnixCredentials(&want), creds: true}
	own.speakFor(unix.UnixCredentials(&unix.Ucred{Pid: 1}))
	if len(own.Control) != unix.CmsgSpace(unix.SizeofUcred) {
		t.Errorf("a message with its own SCM_CREDENTIALS got another: %d control bytes", len(own.Control))
	}

	// Not on inet sockets, where SCM_CREDENTIALS means nothing.
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udp)
	if c, err := callerCreds(FD(udp), tid); c != nil || err != nil {
		t.Errorf("callerCreds on a UDP socket = %v, %v, want none", c, err)
	}
}

// sockaddrUnix is the raw struct sockaddr_un of path, as a decoded
// request keeps it.
func sockaddrUnix(path string) []byte {
	b := make([]byte, 2+len(path)+1)
	b[0] = unix.AF_UNIX // little-endian sa_family
	copy(b[2:], path)
	return b
}
