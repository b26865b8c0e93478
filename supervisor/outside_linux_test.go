//go:build linux

package supervisor

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/orch"
)

func TestParseStatState(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       byte
		err        bool
	}{
		{"running", "1234 (qemu-system-x86) R 1 1234 1234 0 -1", 'R', false},
		{"stopped", "1235 (CPU 0/KVM) T 1 1234", 'T', false},
		{"traced", "1236 (worker) t 1 1234", 't', false},
		{"paren in name", "1237 (a) S (b)) S 1 1", 'S', false},
		{"no state", "1238 (x)", 0, true},
		{"garbage", "nothing here", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatState([]byte(tc.line))
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("parseStatState(%q) = %q, %v; want %q, error %v", tc.line, got, err, tc.want, tc.err)
			}
		})
	}
	if !stoppedState('T') || !stoppedState('t') || stoppedState('S') || stoppedState('D') {
		t.Error("stoppedState: only T and t are stops")
	}
}

func TestParseCgroupV2(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
		ok               bool
	}{
		{"unified", "0::/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator\n", "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator", true},
		{"root", "0::/\n", "/", true},
		{"hybrid", "12:freezer:/x\n1:name=systemd:/y\n0::/user.slice/session-1.scope\n", "/user.slice/session-1.scope", true},
		{"v1 only", "12:freezer:/x\n1:name=systemd:/y\n", "", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseCgroupV2(tc.text)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseCgroupV2 = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseFrozen(t *testing.T) {
	for text, want := range map[string]bool{
		"populated 1\nfrozen 1\n": true,
		"populated 1\nfrozen 0\n": false,
		"":                        false,
		"frozen 10\n":             false,
	} {
		if got := parseFrozen(text); got != want {
			t.Errorf("parseFrozen(%q) = %v, want %v", text, got, want)
		}
	}
}

// TestOwnCgroup builds cgroup trees in a directory: the freezer is used on
// the highest cgroup whose whole subtree holds QEMU alone.
func TestOwnCgroup(t *testing.T) {
	const qemu = 4242
	type cg struct {
		path  string
		procs string
	}
	for _, tc := range []struct {
		name   string
		tree   []cg
		cgPath string
		want   string
	}{
		{"libvirt scope", []cg{
			{"machine.slice", "7 8"},
			{"machine.slice/vm.scope", ""},
			{"machine.slice/vm.scope/libvirt", "4242"},
			{"machine.slice/vm.scope/libvirt/emulator", "4242"},
			{"machine.slice/vm.scope/libvirt/vcpu0", "4242"},
		}, "/machine.slice/vm.scope/libvirt/emulator", "machine.slice/vm.scope"},
		{"shared with kfv-run", []cg{
			{"system.slice", ""},
			{"system.slice/vm.service", "100 4242"},
		}, "/system.slice/vm.service", ""},
		{"swtpm in the scope", []cg{
			{"machine.slice", ""},
			{"machine.slice/vm.scope", ""},
			{"machine.slice/vm.scope/swtpm", "55"},
			{"machine.slice/vm.scope/qemu", "4242"},
		}, "/machine.slice/vm.scope/qemu", "machine.slice/vm.scope/qemu"},
		{"root", nil, "/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, c := range tc.tree {
				d := filepath.Join(root, c.path)
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, text := range map[string]string{"cgroup.procs": c.procs, "cgroup.freeze": "0\n"} {
					if err := os.WriteFile(filepath.Join(d, name), []byte(text), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := ""
			if tc.want != "" {
				want = filepath.Join(root, tc.want)
			}
			if got := ownCgroup(root, tc.cgPath, qemu); got != want {
				t.Errorf("ownCgroup = %q, want %q", got, want)
			}
		})
	}
}

func TestLinkMsg(t *testing.T) {
	ne := binary.NativeEndian
	for _, up := range []bool{false, true} {
		b := linkMsg(7, up, 3)
		if len(b) != unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg || int(ne.Uint32(b)) != len(b) {
			t.Fatalf("length %d, header says %d", len(b), ne.Uint32(b))
		}
		if ne.Uint16(b[4:]) != unix.RTM_NEWLINK || ne.Uint16(b[6:]) != unix.NLM_F_REQUEST|unix.NLM_F_ACK || ne.Uint32(b[8:]) != 3 {
			t.Errorf("header % x", b[:16])
		}
		ifi := b[unix.NLMSG_HDRLEN:]
		var wantFlags uint32
		if up {
			wantFlags = unix.IFF_UP
		}
		if ifi[0] != unix.AF_UNSPEC || int32(ne.Uint32(ifi[4:])) != 7 || ne.Uint32(ifi[8:]) != wantFlags || ne.Uint32(ifi[12:]) != unix.IFF_UP {
			t.Errorf("up=%v: ifinfomsg % x", up, ifi)
		}
	}
}

func TestParseAck(t *testing.T) {
	ne := binary.NativeEndian
	ack := func(seq uint32, code int32) []byte {
		b := make([]byte, unix.NLMSG_HDRLEN+4+unix.NLMSG_HDRLEN)
		ne.PutUint32(b, uint32(len(b)))
		ne.PutUint16(b[4:], unix.NLMSG_ERROR)
		ne.PutUint32(b[8:], seq)
		ne.PutUint32(b[unix.NLMSG_HDRLEN:], uint32(code))
		return b
	}
	if err := parseAck(ack(1, 0), 1); err != nil {
		t.Errorf("success ack: %v", err)
	}
	if err := parseAck(ack(1, -int32(unix.EPERM)), 1); !errors.Is(err, unix.EPERM) {
		t.Errorf("EPERM ack: %v", err)
	}
	if err := parseAck(ack(2, 0), 1); err == nil {
		t.Error("ack of another request taken")
	}
	if err := parseAck([]byte{1, 2}, 1); err == nil {
		t.Error("short message taken")
	}
	bad := ack(1, 0)
	ne.PutUint32(bad, 1000)
	if err := parseAck(bad, 1); err == nil {
		t.Error("overlong length taken")
	}
}

// TestOutsideFreeze stops a real process from outside and sees every
// thread stopped, then resumes it.
func TestOutsideFreeze(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("needs sleep(1): %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Skipf("needs pidfd_open (Linux 5.3): %v", err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	proc := &process{pid: cmd.Process.Pid, pidfd: pidfd, started: cmd.Process.Pid, startedFD: pidfd}
	var o outside
	how, err := o.sigstopLocked(proc.pid, pidfd)
	if err != nil || how != "SIGSTOP: 1 of 1 threads stopped" {
		t.Fatalf("stop: %q, %v", how, err)
	}
	if !o.isPaused() {
		t.Error("not paused after the stop")
	}
	if how, err := o.thaw(proc); err != nil || how != "SIGCONT" {
		t.Fatalf("thaw: %q, %v", how, err)
	}
	waitRunning := func() bool {
		for i := 0; i < 500; i++ {
			if s, _, err := threadsStopped(proc.pid); err == nil && s == 0 {
				return true
			}
			time.Sleep(2 * time.Millisecond)
		}
		return false
	}
	if !waitRunning() {
		t.Error("still stopped after SIGCONT")
	}
	if how, err := o.thaw(proc); err != nil || how != "" {
		t.Errorf("second thaw: %q, %v; want nothing to do", how, err)
	}
}

// TestShutInetSockets shuts down this process's inet sockets through
// pidfd_getfd copies: the peer of a connection sees its end, a unix
// socket is left alone.
func TestShutInetSockets(t *testing.T) {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("needs pidfd_open (Linux 5.3): %v", err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("needs a loopback listener: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	n, err := shutInetSockets(os.Getpid(), pidfd)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
		t.Skipf("needs pidfd_getfd on itself: %v", err)
	}
	if err != nil || n < 3 {
		t.Fatalf("shut %d inet sockets (%v), want the listener and both ends", n, err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("peer read after shutdown: %v, want EOF", err)
	}
	if _, err := unix.Write(pair[0], []byte("x")); err != nil {
		t.Errorf("the unix socket was touched: %v", err)
	}
}

// TestNetCall: what kfv's network switch refuses while the link is down.
func TestNetCall(t *testing.T) {
	s := &session{proc: &process{}}
	unixAddr := &orch.SockAddr{Family: unix.AF_UNIX, Path: "/run/vm/qmp.sock"}
	inet := &orch.SockAddr{Family: unix.AF_INET}
	for _, tc := range []struct {
		name string
		r    orch.Request
		want string
	}{
		{"inet socket", orch.Request{Syscall: "socket", Args: [6]uint64{unix.AF_INET}}, "socket(family 2)"},
		{"inet6 socket", orch.Request{Syscall: "socket", Args: [6]uint64{unix.AF_INET6}}, "socket(family 10)"},
		{"unix socket", orch.Request{Syscall: "socket", Args: [6]uint64{unix.AF_UNIX}}, ""},
		{"connect to a unix path", orch.Request{Syscall: "connect", Sock: unixAddr}, ""},
		{"connect to inet", orch.Request{Syscall: "connect", Sock: inet}, "connect"},
		{"sendmsg, socket unknown", orch.Request{Syscall: "sendmsg"}, "sendmsg"},
		{"openat", orch.Request{Syscall: "openat"}, ""},
		{"recvfrom", orch.Request{Syscall: "recvfrom"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.netCall(&tc.r); got != tc.want {
				t.Errorf("netCall = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseCgroup2Mount(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"unified", "25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n", "/sys/fs/cgroup"},
		{"hybrid", "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n" +
			"31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
			"40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified"},
		{"a subtree mounted", "40 30 0:35 /machine.slice /mnt/cg rw - cgroup2 cgroup2 rw\n", ""},
		{"none", "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", ""},
		{"escaped", "40 30 0:35 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n", "/mnt/my cg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseCgroup2Mount(tc.text); got != tc.want {
				t.Errorf("parseCgroup2Mount = %q, want %q", got, tc.want)
			}
		})
	}
}
