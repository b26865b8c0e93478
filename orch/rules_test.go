package orch

import (
	"net/netip"
	"testing"

	"kfv/profiles"
)

const testProfile = `
name = "test"
[defaults]
verdict = "deny"
verdict_errno = "EACCES"

[[rule]]
name = "no-exec"
syscalls = ["execve", "execveat"]
verdict = "deny"
errno = "EPERM"
reason = "no programs"

[[rule]]
name = "libs"
syscalls = ["openat", "mmap"]
paths = ["/usr/lib/**", "/usr/share/qemu/*.bin"]
verdict = "allow"
reason = "libraries"

[[rule]]
name = "vcpu-only"
syscalls = ["openat"]
paths = ["/dev/kvm"]
threads = ["CPU */KVM"]
verdict = "allow"
reason = "vcpus"

[[rule]]
name = "no-loopback"
syscalls = ["connect", "sendto"]
addresses = ["127.0.0.0/8", "[::1]:22"]
verdict = "deny"
errno = "ECONNREFUSED"
reason = "host local"

[[rule]]
name = "dns"
syscalls = ["connect", "sendto"]
addresses = ["10.0.0.0/8:53", "192.0.2.7", "[2001:db8::/32]:443"]
verdict = "allow"
reason = "dns"

[[rule]]
name = "unix"
syscalls = ["connect"]
addresses = ["/run/kfv/*.sock", "@qemu-*"]
verdict = "allow"
reason = "own sockets"

[[rule]]
name = "inet-sockets"
syscalls = ["socket"]
families = ["AF_INET", "AF_INET6"]
verdict = "allow"
reason = "sockets"

[[rule]]
name = "send-connected"
syscalls = ["sendmsg"]
no_address = true
verdict = "allow"
reason = "connected"

[[rule]]
name = "catch-openat"
syscalls = ["openat"]
verdict = "deny"
errno = "ENOENT"
reason = "everything else"
`

func testRules(t testing.TB) *Rules {
	t.Helper()
	p, err := profiles.Parse("test.toml", []byte(testProfile))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatalf("NewRules: %v", err)
	}
	return rs
}

func inet(s string) *SockAddr {
	ap := netip.MustParseAddrPort(s)
	fam := 2
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		fam = 10
	}
	return &SockAddr{Family: fam, Addr: ap}
}

func TestDecide(t *testing.T) {
	rs := testRules(t)
	tests := []struct {
		name   string
		req    Request
		action profiles.Verdict
		errno  int
		rule   string
	}{
		{"exec denied", Request{Syscall: "execve", Path: "/bin/sh"}, profiles.VerdictDeny, 1, "no-exec"},
		{"lib deep", Request{Syscall: "openat", Path: "/usr/lib/x86_64-linux-gnu/qemu/block-curl.so"}, profiles.VerdictAllow, 0, "libs"},
		{"star no slash", Request{Syscall: "openat", Path: "/usr/share/qemu/x/bios.bin"}, profiles.VerdictDeny, 2, "catch-openat"},
		{"star one elem", Request{Syscall: "openat", Path: "/usr/share/qemu/bios.bin"}, profiles.VerdictAllow, 0, "libs"},
		{"mmap by fd", Request{Syscall: "mmap", Args: protExec, Fds: map[int]string{4: "/usr/lib/libc.so.6"}}, profiles.VerdictAllow, 0, "libs"},
		{"mmap anonymous", Request{Syscall: "mmap", Args: protExec}, profiles.VerdictDeny, 13, "default"},
		{"mmap socket fd", Request{Syscall: "mmap", Args: protExec, Fds: map[int]string{4: "socket:[12]"}}, profiles.VerdictDeny, 13, "default"},
		{"kvm from vcpu", Request{Syscall: "openat", Path: "/dev/kvm", Thread: "CPU 3/KVM"}, profiles.VerdictAllow, 0, "vcpu-only"},
		{"kvm from worker", Request{Syscall: "openat", Path: "/dev/kvm", Thread: "worker"}, profiles.VerdictDeny, 2, "catch-openat"},
		{"kvm no thread", Request{Syscall: "openat", Path: "/dev/kvm"}, profiles.VerdictDeny, 2, "catch-openat"},
		{"loopback first match", Request{Syscall: "connect", Sock: inet("127.0.0.1:53")}, profiles.VerdictDeny, 111, "no-loopback"},
		{"v6 loopback port", Request{Syscall: "connect", Sock: inet("[::1]:22")}, profiles.VerdictDeny, 111, "no-loopback"},
		{"v6 loopback other port", Request{Syscall: "connect", Sock: inet("[::1]:23")}, profiles.VerdictDeny, 13, "default"},
		{"dns cidr port", Request{Syscall: "sendto", Sock: inet("10.1.2.3:53")}, profiles.VerdictAllow, 0, "dns"},
		{"dns wrong port", Request{Syscall: "sendto", Sock: inet("10.1.2.3:54")}, profiles.VerdictDeny, 13, "default"},
		{"v4 mapped", Request{Syscall: "connect", Sock: inet("[::ffff:10.1.2.3]:53")}, profiles.VerdictAllow, 0, "dns"},
		{"single ip any port", Request{Syscall: "connect", Sock: inet("192.0.2.7:9")}, profiles.VerdictAllow, 0, "dns"},
		{"v6 cidr port", Request{Syscall: "connect", Sock: inet("[2001:db8::1]:443")}, profiles.VerdictAllow, 0, "dns"},
		{"unix glob", Request{Syscall: "connect", Sock: &SockAddr{Family: 1, Path: "/run/kfv/vm1.sock"}}, profiles.VerdictAllow, 0, "unix"},
		{"unix glob deeper", Request{Syscall: "connect", Sock: &SockAddr{Family: 1, Path: "/run/kfv/x/vm1.sock"}}, profiles.VerdictDeny, 13, "default"},
		{"abstract", Request{Syscall: "connect", Sock: &SockAddr{Family: 1, Path: "@qemu-mon"}}, profiles.VerdictAllow, 0, "unix"},
		{"abstract other", Request{Syscall: "connect", Sock: &SockAddr{Family: 1, Path: "@/org/freedesktop"}}, profiles.VerdictDeny, 13, "default"},
		{"family", Request{Syscall: "socket", Sock: &SockAddr{Family: 10}}, profiles.VerdictAllow, 0, "inet-sockets"},
		{"family other", Request{Syscall: "socket", Sock: &SockAddr{Family: 16}}, profiles.VerdictDeny, 13, "default"},
		{"family missing", Request{Syscall: "socket"}, profiles.VerdictDeny, 13, "default"},
		{"no address", Request{Syscall: "sendmsg"}, profiles.VerdictAllow, 0, "send-connected"},
		{"with address", Request{Syscall: "sendmsg", Sock: inet("192.0.2.1:1")}, profiles.VerdictDeny, 13, "default"},
		{"unmatched syscall", Request{Syscall: "kill"}, profiles.VerdictDeny, 13, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := rs.Decide(&tt.req)
			if d.Action != tt.action || d.Errno != tt.errno || d.Rule != tt.rule {
				t.Errorf("Decide = %v errno %d rule %q, want %v errno %d rule %q", d.Action, d.Errno, d.Rule, tt.action, tt.errno, tt.rule)
			}
		})
	}
}

func TestDefaultAllow(t *testing.T) {
	p, err := profiles.Parse("a.toml", []byte("name = \"a\"\n[defaults]\nverdict = \"allow\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	d := rs.Decide(&Request{Syscall: "openat", Path: "/etc/shadow"})
	if d.Action != profiles.VerdictAllow || d.Errno != 0 || d.Rule != "default" {
		t.Errorf("Decide = %+v, want default allow", d)
	}
}

func TestNewRulesErrors(t *testing.T) {
	tests := []struct {
		name string
		p    *profiles.Profile
	}{
		{"nil", nil},
		{"bad glob", &profiles.Profile{Rules: []profiles.VerdictRule{{Name: "x", Verdict: profiles.VerdictAllow, Paths: []string{"/a/[b"}}}}},
		{"bad address", &profiles.Profile{Rules: []profiles.VerdictRule{{Name: "x", Verdict: profiles.VerdictAllow, Addresses: []string{"nope"}}}}},
		{"bad verdict", &profiles.Profile{Rules: []profiles.VerdictRule{{Name: "x"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewRules(tt.p); err == nil {
				t.Error("NewRules: no error")
			}
		})
	}
}

func TestBuiltinQEMU(t *testing.T) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		req    Request
		action profiles.Verdict
		rule   string
	}{
		{"shell", Request{Syscall: "execve", Path: "/bin/sh", Thread: "CPU 0/KVM"}, profiles.VerdictDeny, "no-exec"},
		{"fork", Request{Syscall: "clone", Thread: "worker"}, profiles.VerdictDeny, "no-fork"},
		{"firmware", Request{Syscall: "openat", Path: "/usr/share/seabios/bios-256k.bin", Thread: "qemu-system-x86"}, profiles.VerdictAllow, "qemu-data"},
		{"shadow", Request{Syscall: "openat", Path: "/etc/shadow", Thread: "CPU 0/KVM"}, profiles.VerdictDeny, "default"},
		{"lib exec", Request{Syscall: "mmap", Args: protExec, Backing: "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6"}, profiles.VerdictAllow, "exec-libraries"},
		{"lib writable and exec", Request{Syscall: "mmap", Args: protRWX, Backing: "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6"}, profiles.VerdictDeny, "no-exec-memory"},
		{"tmp exec", Request{Syscall: "mmap", Args: protExec, Backing: "/tmp/x.so", Thread: "qemu-system-x86"}, profiles.VerdictDeny, "no-exec-memory"},
		{"tcg buffer", Request{Syscall: "mprotect", Args: protRWX, Backing: "anon", Thread: "qemu-system-x86"}, profiles.VerdictAllow, "tcg-code-buffer"},
		{"qemu text made rwx from main", Request{Syscall: "mprotect", Args: protRWX, Backing: "/usr/bin/qemu-system-x86_64", Thread: "qemu-system-x86"}, profiles.VerdictDeny, "no-exec-memory"},
		{"rwx from vcpu", Request{Syscall: "mmap", Args: protExec, Backing: "anon", Thread: "CPU 0/TCG"}, profiles.VerdictDeny, "no-exec-memory"},
		{"rwx from worker", Request{Syscall: "mmap", Args: protRWX, Backing: "anon", Thread: "worker"}, profiles.VerdictDeny, "no-exec-memory"},
		{"memslot over guest ram", Request{Syscall: "ioctl", Args: [6]uint64{9, 0x4020ae46}, Backing: "anon", Thread: "qemu-system-x86"}, profiles.VerdictAllow, "kvm-memslot-guest-ram"},
		{"memslot deleted", Request{Syscall: "ioctl", Args: [6]uint64{9, 0x4020ae46}, Backing: "none", Thread: "CPU 0/KVM"}, profiles.VerdictAllow, "kvm-memslot-guest-ram"},
		{"memslot over a library", Request{Syscall: "ioctl", Args: [6]uint64{9, 0x4020ae46}, Backing: "/tmp/implant.so", Thread: "CPU 0/KVM"}, profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"memslot over the heap", Request{Syscall: "ioctl", Args: [6]uint64{9, 0x4020ae46}, Backing: "[heap]", Thread: "CPU 0/KVM"}, profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"proc mem", Request{Syscall: "openat", Path: "/proc/self/mem", Args: [6]uint64{0, 0, 2}, Thread: "worker"}, profiles.VerdictDeny, "no-proc-escape"},
		{"proc root escape", Request{Syscall: "openat", Path: "/proc/self/root/etc/shadow", Thread: "worker"}, profiles.VerdictDeny, "no-proc-escape"},
		{"proc status read", Request{Syscall: "openat", Path: "/proc/self/status", Thread: "qemu-system-x86"}, profiles.VerdictAllow, "qemu-host-info"},
		{"firmware opened for writing", Request{Syscall: "openat", Path: "/usr/share/seabios/bios-256k.bin", Args: [6]uint64{0, 0, 2}}, profiles.VerdictDeny, "default"},
		{"socket from worker", Request{Syscall: "socket", Sock: &SockAddr{Family: 2}, Thread: "worker"}, profiles.VerdictDeny, "no-network-from-device-threads"},
		{"socket from main loop", Request{Syscall: "socket", Sock: &SockAddr{Family: 2}, Thread: "qemu-system-x86"}, profiles.VerdictAllow, "sockets"},
		{"slirp to loopback", Request{Syscall: "connect", Sock: inet("127.0.0.1:5555"), Thread: "qemu-system-x86"}, profiles.VerdictAllow, "slirp-host-loopback"},
		{"loopback from monitor", Request{Syscall: "connect", Sock: inet("127.0.0.1:5555"), Thread: "IO mon_iothread"}, profiles.VerdictDeny, "no-host-local-inet"},
		{"bind from vcpu", Request{Syscall: "bind", Sock: inet("0.0.0.0:4444"), Thread: "CPU 1/TCG"}, profiles.VerdictDeny, "no-network-from-device-threads"},
		// Binds and listens are admitted by the rules kfv derives for
		// the VM (policy): the profile alone admits none, not even from
		// the main loop.
		{"bind from main, profile alone", Request{Syscall: "bind", Sock: inet("0.0.0.0:4444"), Thread: "qemu-system-x86"}, profiles.VerdictDeny, "default"},
		{"listen from main, profile alone", Request{Syscall: "listen", Sock: inet("0.0.0.0:4444"), Thread: "qemu-system-x86"}, profiles.VerdictDeny, "default"},
		{"metadata service", Request{Syscall: "connect", Sock: inet("169.254.169.254:80")}, profiles.VerdictDeny, "no-host-local-inet"},
		{"docker socket", Request{Syscall: "connect", Sock: &SockAddr{Family: 1, Path: "/run/docker.sock"}}, profiles.VerdictDeny, "default"},
		{"netlink", Request{Syscall: "socket", Sock: &SockAddr{Family: 16}}, profiles.VerdictDeny, "no-host-network-control"},
		// io_uring: kfv makes the rings (the setup is performed), QEMU
		// submits on them in the kernel, and nothing else of io_uring
		// passes. The ring's memory is a mapping of its fd, never
		// executable and never a memory slot.
		{"ring setup from a vcpu", Request{Syscall: "io_uring_setup", Thread: "CPU 0/TCG"}, profiles.VerdictAllow, "io-uring-restricted-rings"},
		{"ring enter", Request{Syscall: "io_uring_enter", Thread: "IO iothread0"}, profiles.VerdictAllow, "io-uring-enter"},
		{"ring register", Request{Syscall: "io_uring_register", Thread: "qemu-system-x86"}, profiles.VerdictDeny, "no-io-uring-register"},
		{"ring mapped", Request{Syscall: "mmap", Args: [6]uint64{0, 4096, 0x3, 0x8001, 5, 0}, Backing: "anon_inode:[io_uring]", Thread: "qemu-system-x86"}, profiles.VerdictAllow, "syscall:mmap"},
		{"ring mapped executable", Request{Syscall: "mmap", Args: protExec, Backing: "anon_inode:[io_uring]", Thread: "qemu-system-x86"}, profiles.VerdictDeny, "no-exec-memory"},
		{"memslot over a ring", Request{Syscall: "ioctl", Args: [6]uint64{9, 0x4020ae46}, Backing: "anon_inode:[io_uring]", Thread: "qemu-system-x86"}, profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := rs.Decide(&tt.req)
			if d.Action != tt.action || d.Rule != tt.rule {
				t.Errorf("Decide = %v rule %q, want %v rule %q", d.Action, d.Rule, tt.action, tt.rule)
			}
			if d.Reason == "" {
				t.Error("decision without a reason")
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		b.Fatal(err)
	}
	rs, err := NewRules(p)
	if err != nil {
		b.Fatal(err)
	}
	reqs := []struct {
		name string
		req  Request
	}{
		{"openat-allowed", Request{Syscall: "openat", Path: "/usr/share/qemu/kvmvapic.bin", Thread: "qemu-system-x86"}},
		{"openat-default", Request{Syscall: "openat", Path: "/etc/shadow", Thread: "CPU 1/KVM"}},
		{"connect-inet", Request{Syscall: "connect", Sock: inet("198.51.100.4:443"), Thread: "qemu-system-x86"}},
		{"ioctl-l1", Request{Syscall: "ioctl", Fds: map[int]string{0: "anon_inode:kvm-vcpu:0"}, Thread: "CPU 0/KVM"}},
	}
	for _, r := range reqs {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rs.Decide(&r.req)
			}
		})
	}
}

// protExec are mmap arguments with PROT_READ|PROT_EXEC, the calls the
// filter sends to the supervisor.
var protExec = [6]uint64{0, 4096, 0x5, 0x2, 0, 0}

// protRWX adds PROT_WRITE.
var protRWX = [6]uint64{0, 4096, 0x7, 0x22, 0, 0}

// TestOwnTargetAndLimit: own_target admits a call only when the decoder
// found its pid argument naming QEMU; limit admits so many calls per
// process, then a later rule decides, and a new process starts afresh.
func TestOwnTargetAndLimit(t *testing.T) {
	p, err := profiles.Parse("l.toml", []byte(`
name = "l"
[defaults]
verdict = "deny"
verdict_errno = "EACCES"

[[rule]]
name = "own"
syscalls = ["sched_setaffinity", "prlimit64"]
own_target = true
verdict = "allow"
reason = "QEMU itself"

[[rule]]
name = "once"
syscalls = ["ioctl"]
args = [{ index = 1, op = "eq", value = "KVM_CREATE_VM" }]
limit = 1
verdict = "allow"
reason = "one VM"

[[rule]]
name = "no-more"
syscalls = ["ioctl", "sched_setaffinity", "prlimit64"]
verdict = "deny"
errno = "EPERM"
severity = "high"
reason = "others"
`))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	var vm [6]uint64
	vm[1] = 0xae01 // KVM_CREATE_VM
	for _, tc := range []struct {
		name string
		req  Request
		rule string
	}{
		{"own thread", Request{Syscall: "sched_setaffinity", PID: 10, OwnTarget: true}, "own"},
		{"neighbour", Request{Syscall: "sched_setaffinity", PID: 10}, "no-more"},
		{"limit own", Request{Syscall: "prlimit64", PID: 10, OwnTarget: true}, "own"},
		{"first VM", Request{Syscall: "ioctl", PID: 10, Args: vm}, "once"},
		{"second VM", Request{Syscall: "ioctl", PID: 10, Args: vm}, "no-more"},
		{"third VM", Request{Syscall: "ioctl", PID: 10, Args: vm}, "no-more"},
		{"restarted QEMU", Request{Syscall: "ioctl", PID: 11, Args: vm}, "once"},
		{"restarted QEMU again", Request{Syscall: "ioctl", PID: 11, Args: vm}, "no-more"},
	} {
		if d := rs.Decide(&tc.req); d.Rule != tc.rule {
			t.Errorf("%s: rule %q (%v), want %q", tc.name, d.Rule, d.Action, tc.rule)
		}
	}
	for _, bad := range []string{
		"name = \"b\"\n[[rule]]\nname = \"x\"\nown_target = true\nverdict = \"allow\"\nreason = \"r\"\n",
		"name = \"b\"\n[[rule]]\nname = \"x\"\nsyscalls = [\"openat\"]\nown_target = true\nverdict = \"allow\"\nreason = \"r\"\n",
		"name = \"b\"\n[[rule]]\nname = \"x\"\nsyscalls = [\"ioctl\"]\nlimit = 2\nverdict = \"deny\"\nreason = \"r\"\n",
		"name = \"b\"\n[[rule]]\nname = \"x\"\nsyscalls = [\"ioctl\"]\nlimit = 0\nverdict = \"allow\"\nreason = \"r\"\n",
	} {
		if _, err := profiles.Parse("b.toml", []byte(bad)); err == nil {
			t.Errorf("Parse accepted\n%s", bad)
		}
	}
}
