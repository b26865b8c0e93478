//go:build linux

package seccompnotify

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckCredentials(t *testing.T) {
	tid := unix.Gettid()
	cred := func(pid, uid, gid int) *unix.SocketControlMessage {
		m, err := unix.ParseSocketControlMessage(unix.UnixCredentials(&unix.Ucred{Pid: int32(pid), Uid: uint32(uid), Gid: uint32(gid)}))
		if err != nil {
			t.Fatal(err)
		}
		return &m[0]
	}
	me, uid, gid := os.Getpid(), os.Getuid(), os.Getgid()
	for _, tc := range []struct {
		name          string
		pid, uid, gid int
		want          error
	}{
		{"own", me, uid, gid, nil},
		{"another pid", 1, uid, gid, unix.EPERM},
		{"another uid", me, uid + 4242, gid, unix.EPERM},
		{"another gid", me, uid, gid + 4242, unix.EPERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkCredentials(tid, cred(tc.pid, tc.uid, tc.gid)); !errors.Is(err, tc.want) && err != tc.want {
				t.Errorf("checkCredentials(pid %d uid %d gid %d) = %v, want %v", tc.pid, tc.uid, tc.gid, err, tc.want)
			}
		})
	}
}

// TestAsOwner: a root supervisor performing for an unprivileged caller
// creates files that are the caller's, connects unix sockets whose peer
// sees the caller's ids, and still reaches what only root reaches; its
// own credentials are whole again afterwards.
func TestAsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: asOwner matters when the supervisor is root and QEMU is not")
	}
	// The caller: a process running as nobody.
	const nobody = 65534
	caller := exec.Command("sleep", "60")
	caller.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caller.Process.Kill(); caller.Wait() })
	tid := caller.Process.Pid

	private := t.TempDir() // 0700, root's: the caller cannot reach it
	sock := filepath.Join(private, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(sock, 0o700); err != nil { // and the socket root's alone
		t.Fatal(err)
	}

	type outcome struct {
		file, bound string
		err         error
		after       string
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		defer func() { done <- o }()
		if err := PrepareEmulationThread(0o022); err != nil {
			o.err = err
			return
		}
		o.file = filepath.Join(private, "created")
		o.err = asOwner(tid, func() error {
			fd, err := unix.Open(o.file, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o640)
			if err != nil {
				return err
			}
			unix.Close(fd)
			s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(s)
			if err := unix.Connect(s, &unix.SockaddrUnix{Name: sock}); err != nil {
				return err
			}
			b, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(b)
			o.bound = filepath.Join(private, "bound")
			return unix.Bind(b, &unix.SockaddrUnix{Name: o.bound})
		})
		st, _ := os.ReadFile("/proc/thread-self/status")
		o.after = string(st)
		// The thread stays locked: its file-system attributes are its
		// own, and it ends with this goroutine.
	}()
	c, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := <-done
	if o.err != nil {
		t.Fatalf("asOwner: %v", o.err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var peer *unix.Ucred
	var perr error
	raw.Control(func(fd uintptr) { peer, perr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if perr != nil {
		t.Fatal(perr)
	}
	if peer.Uid != nobody || peer.Gid != nobody {
		t.Errorf("the peer sees uid %d gid %d, want the caller's %d", peer.Uid, peer.Gid, nobody)
	}
	for _, p := range []string{o.file, o.bound} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != nobody || st.Gid != nobody {
			t.Errorf("%s is owned by %d:%d, want the caller's %d:%d", p, st.Uid, st.Gid, nobody, nobody)
		}
		if p == o.file && st.Mode&0o777 != 0o640 {
			t.Errorf("%s has mode %o, want 640 (asked 640, umask 022)", p, st.Mode&0o777)
		}
	}
	for _, want := range []string{"Uid:\t0\t0\t0\t0", "Gid:\t0\t0\t0\t0"} {
		if !strings.Contains(o.after, want) {
			t.Errorf("after asOwner the thread's status lacks %q:\n%s", want, o.after)
		}
	}
	mine, _ := os.ReadFile("/proc/self/status")
	if eff, want := capLine(o.after, "CapEff"), capLine(string(mine), "CapEff"); eff != want {
		t.Errorf("after asOwner the thread's CapEff is %s, want the process's %s", eff, want)
	}
}

func capLine(st, key string) string {
	for _, l := range strings.Split(st, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
