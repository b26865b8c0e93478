package orch

import (
	"net/netip"
	"testing"
	"time"

	"kfv/profiles"
)

// The built-in profile's escalation ladder, end to end: the requests a
// payload makes go through Engine.Decide, their findings through
// VO.Observe, as the supervisor does.

const (
	protRX                 = 0x5
	kvmSetUserMemoryRegion = 0x4020ae46
	afInet                 = 2
)

type ladder struct {
	t  *testing.T
	ck *clock
	e  *Engine
	v  *VO
}

func newLadder(t *testing.T, accel string) *ladder {
	t.Helper()
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	p = profiles.ForFeatures(p, []string{accel, profiles.FeatureUserNet}) // the benign mix includes slirp
	ck := &clock{t0}
	e, err := NewEngine(p, ck.now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVO(p, ck.now)
	if err != nil {
		t.Fatal(err)
	}
	return &ladder{t: t, ck: ck, e: e, v: v}
}

// call decides r and passes its findings to the VO.
func (l *ladder) call(r Request) (Decision, []Reaction) {
	d := l.e.Decide(&r)
	var rs []Reaction
	for _, f := range d.Findings {
		rs = append(rs, l.v.Observe(f)...)
	}
	return d, rs
}

func TestLadderBuiltin(t *testing.T) {
	t.Run("rwx mapping from a vCPU: deny, vNICs down (L1 to L3)", func(t *testing.T) {
		l := newLadder(t, "kvm")
		d, rs := l.call(Request{Syscall: "mprotect", Thread: "CPU 0/KVM", TID: 11, Args: protRWX, Backing: "anon"})
		if d.Action != profiles.VerdictDeny || d.Rule != "no-exec-memory" || d.Layer != L1 {
			t.Fatalf("decision %+v", d)
		}
		if kinds(rs) != "hardware-finding-cuts-network:link_down:all-nics" {
			t.Fatalf("reactions %q", kinds(rs))
		}
		if c := rs[0].Chain; len(c) != 1 || c[0].Rule != "no-exec-memory" || c[0].Severity != profiles.SevHigh || c[0].HRSC != "vcpu0" || c[0].TID != 11 {
			t.Errorf("chain %+v", c)
		}
	})
	t.Run("kvm memory slot over QEMU's heap: deny, vNICs down", func(t *testing.T) {
		l := newLadder(t, "kvm")
		d, rs := l.call(Request{Syscall: "ioctl", Thread: "CPU 0/KVM", Args: [6]uint64{5, kvmSetUserMemoryRegion}, Fds: map[int]string{0: "anon_inode:kvm-vm"}, Backing: "[heap]",
			Mem: &MemSlot{Slot: 9, GPA: 0x100000000, Size: 0x10000, HVA: 0x5555000}})
		if d.Action != profiles.VerdictDeny || d.Rule != "no-kvm-memslot-host-memory" || d.Layer != L1 {
			t.Fatalf("decision %+v", d)
		}
		if kinds(rs) != "hardware-finding-cuts-network:link_down:all-nics" {
			t.Fatalf("reactions %q", kinds(rs))
		}
	})
	t.Run("shell from a block worker, three times: pause, vNICs down", func(t *testing.T) {
		l := newLadder(t, "tcg")
		exec := Request{Syscall: "execve", Thread: "worker", Path: "/bin/sh"}
		for i := 0; i < 2; i++ {
			d, rs := l.call(exec)
			if d.Action != profiles.VerdictDeny || len(rs) != 0 {
				t.Fatalf("attempt %d: %v, reactions %q", i+1, d.Action, kinds(rs))
			}
			// signature and behaviour both see it
			if len(d.Findings) != 2 || d.Findings[0].Detector != profiles.DetSignature || d.Findings[1].Detector != profiles.DetBehaviour {
				t.Fatalf("findings %+v", d.Findings)
			}
			l.ck.advance(3 * time.Second)
		}
		_, rs := l.call(exec)
		if kinds(rs) != "repeated-denials:pause repeated-denials:link_down:all-nics" {
			t.Fatalf("third attempt: reactions %q", kinds(rs))
		}
		if len(rs[0].Chain) != 3 {
			t.Errorf("chain of %d findings, want the 3 denials", len(rs[0].Chain))
		}
		// Within the cool-down, more denials order nothing new.
		for i := 0; i < 3; i++ {
			if _, rs := l.call(exec); len(rs) != 0 {
				t.Errorf("in cool-down: %q", kinds(rs))
			}
		}
	})
	t.Run("denials spread over resources or time: deny only", func(t *testing.T) {
		l := newLadder(t, "tcg")
		for _, th := range []string{"worker", "CPU 0/TCG", "qemu-system-x86"} {
			if _, rs := l.call(Request{Syscall: "openat", Thread: th, Path: "/etc/shadow"}); len(rs) != 0 {
				t.Errorf("%s: %q", th, kinds(rs))
			}
		}
		for i := 0; i < 3; i++ {
			l.ck.advance(6 * time.Second)
			if _, rs := l.call(Request{Syscall: "openat", Thread: "qemu-system-x86", Path: "/etc/shadow"}); len(rs) != 0 {
				t.Errorf("slow denial %d: %q", i, kinds(rs))
			}
		}
	})
	t.Run("benign surprises, many times: denied at low severity, no reaction", func(t *testing.T) {
		l := newLadder(t, "kvm")
		const xfsIocDioinfo, unknownIoctl, prSetMM = 0x800c581e, 0xc0de0042, 35
		surprises := []Request{
			// A host tunable another QEMU build reads at start-up.
			{Syscall: "openat", Thread: "qemu-system-x86", Path: "/proc/sys/vm/nr_hugepages"},
			// A file-attribute ioctl on a file that is not the VM's image.
			{Syscall: "ioctl", Thread: "worker", Args: [6]uint64{7, xfsIocDioinfo}, Fds: map[int]string{0: "/var/tmp/other.img"}},
			// An ioctl and a prctl the profile does not know.
			{Syscall: "ioctl", Thread: "qemu-system-x86", Args: [6]uint64{7, unknownIoctl}, Fds: map[int]string{0: "/dev/null"}},
			{Syscall: "prctl", Thread: "qemu-system-x86", Args: [6]uint64{prSetMM}},
		}
		for _, r := range surprises {
			for i := 0; i < 5; i++ {
				d, rs := l.call(r)
				if d.Action != profiles.VerdictDeny {
					t.Fatalf("%s %s: %v by %s, want a denial", r.Syscall, r.Path, d.Action, d.Rule)
				}
				if len(d.Findings) != 1 || d.Findings[0].Severity != profiles.SevLow {
					t.Fatalf("%s (rule %s): findings %+v, want one of low severity", r.Syscall, d.Rule, d.Findings)
				}
				if len(rs) != 0 {
					t.Fatalf("%s, attempt %d: reactions %q", r.Syscall, i+1, kinds(rs))
				}
			}
		}
	})
	t.Run("what attackers want, by no rule, three times: pause, vNICs down", func(t *testing.T) {
		for _, r := range []Request{
			{Syscall: "openat", Thread: "qemu-system-x86", Path: "/var/lib/libvirt/images/other-vm.qcow2", Args: [6]uint64{0, 0, 2}},
			// Writing a host tunable is not reading one.
			{Syscall: "openat", Thread: "qemu-system-x86", Path: "/proc/sys/kernel/core_pattern", Args: [6]uint64{0, 0, 1}},
			{Syscall: "kill", Thread: "qemu-system-x86", Args: [6]uint64{4242, 9}},
			{Syscall: "connect", Thread: "qemu-system-x86", Sock: &SockAddr{Family: afUnix, Path: "/run/other-vm/qmp.sock"}},
			{Syscall: "socket", Thread: "qemu-system-x86", Args: [6]uint64{17, 3}}, // AF_PACKET
		} {
			l := newLadder(t, "kvm")
			var rs []Reaction
			for i := 0; i < 3; i++ {
				var d Decision
				d, rs = l.call(r)
				if d.Action != profiles.VerdictDeny || len(d.Findings) == 0 || d.Findings[0].Severity < profiles.SevMedium {
					t.Fatalf("%s: %v by %s, findings %+v: want a denial of medium or more", r.Syscall, d.Action, d.Rule, d.Findings)
				}
			}
			if kinds(rs) != "repeated-denials:pause repeated-denials:link_down:all-nics" {
				t.Errorf("%s, third denial: reactions %q", r.Syscall, kinds(rs))
			}
		}
	})
	t.Run("injected code: denied although a rule allows it, kill", func(t *testing.T) {
		l := newLadder(t, "kvm")
		l.e.SetText([]AddrRange{{Start: 0x7f1000000000, End: 0x7f1000200000, Path: "/lib/x86_64-linux-gnu/libc.so.6"}})
		ok := Request{Syscall: "socket", Thread: "qemu-system-x86", Sock: &SockAddr{Family: afInet}, IP: 0x7f1000100010}
		if d, rs := l.call(ok); d.Action != profiles.VerdictAllow || len(d.Findings) != 0 || len(rs) != 0 {
			t.Fatalf("socket from libc: %+v %q", d, kinds(rs))
		}
		bad := ok
		bad.IP = 0x7f2000000105 // anonymous memory
		d, rs := l.call(bad)
		if d.Action != profiles.VerdictDeny || d.Rule != "origin-text" || d.Findings[0].Severity != profiles.SevCritical {
			t.Fatalf("socket from shellcode: %+v", d)
		}
		if kinds(rs) != "injected-code:kill" {
			t.Fatalf("reactions %q", kinds(rs))
		}
	})
	t.Run("vCPU: glibc's CPU count is no finding, a file beside it is", func(t *testing.T) {
		l := newLadder(t, "tcg")
		const rdonly, wronly = 0x80000, 0x80001 // O_CLOEXEC, as glibc opens it
		d, rs := l.call(Request{Syscall: "openat", Thread: "CPU 0/TCG", Path: "/sys/devices/system/cpu/online", Args: [6]uint64{0, 0, rdonly}})
		if d.Action != profiles.VerdictAllow || len(d.Findings) != 0 || len(rs) != 0 {
			t.Errorf("get_nprocs from a vCPU: %v by %s, findings %+v, reactions %q", d.Action, d.Rule, d.Findings, kinds(rs))
		}
		for _, r := range []Request{
			{Syscall: "openat", Thread: "CPU 0/TCG", Path: "/sys/devices/system/cpu/online", Args: [6]uint64{0, 0, wronly}},
			{Syscall: "openat", Thread: "CPU 0/TCG", Path: "/sys/devices/system/cpu/cpu0/online", Args: [6]uint64{0, 0, rdonly}},
			{Syscall: "openat", Thread: "CPU 0/TCG", Path: "/proc/stat", Args: [6]uint64{0, 0, rdonly}},
		} {
			if d, _ := l.call(r); d.Action != profiles.VerdictDeny {
				t.Errorf("vCPU open of %s flags %#x: %v by %s, want a denial", r.Path, r.Args[2], d.Action, d.Rule)
			}
		}
	})
	t.Run("vCPU opening a file an allow rule covers: behaviour denies", func(t *testing.T) {
		l := newLadder(t, "tcg")
		d, rs := l.call(Request{Syscall: "openat", Thread: "CPU 0/TCG", Path: "/usr/share/qemu/bios.bin"})
		if d.Action != profiles.VerdictDeny || d.Rule != "vcpu-no-files" || d.Errno != 13 {
			t.Fatalf("decision %+v", d)
		}
		if len(rs) != 0 {
			t.Errorf("one behaviour finding on L2 orders nothing: %q", kinds(rs))
		}
	})
	t.Run("memwatch: tampered code is scrubbed and the vNICs go down, once", func(t *testing.T) {
		l := newLadder(t, "kvm")
		rs := l.v.Observe(Finding{Time: t0, Layer: L1, HRSC: HRSCMemory, Detector: profiles.DetMemwatch, Severity: profiles.SevCritical, Detail: "text modified"})
		if kinds(rs) != "code-tampered:scrub code-tampered:link_down:all-nics" {
			t.Errorf("reactions %q", kinds(rs))
		}
	})
}

// TestLadderBenign replays what the benign workloads send the supervisor
// (kfv-run --mode audit, QEMU 7.2): no finding of severity medium or
// more, no reaction.
func TestLadderBenign(t *testing.T) {
	for _, accel := range []string{"kvm", "tcg"} {
		t.Run(accel, func(t *testing.T) {
			l := newLadder(t, accel)
			l.e.SetText([]AddrRange{{Start: 0x7f1000000000, End: 0x7f1000200000}})
			libc := uint64(0x7f1000100010)
			main := "qemu-system-x86"
			var reqs []Request
			for i := 0; i < 60; i++ {
				reqs = append(reqs, Request{Syscall: "openat", Thread: main, Path: "/usr/lib/x86_64-linux-gnu/libz.so.1", IP: libc})
				reqs = append(reqs, Request{Syscall: "mmap", Thread: main, Args: [6]uint64{0, 4096, protRX, 0x812, 3}, Backing: "/usr/lib/x86_64-linux-gnu/libz.so.1", Fds: map[int]string{4: "/usr/lib/x86_64-linux-gnu/libz.so.1"}, IP: libc})
			}
			reqs = append(reqs,
				// (/dev/kvm comes from the VM's configuration: package policy.)
				Request{Syscall: "openat", Thread: main, Path: "/dev/urandom", Args: [6]uint64{0xffffff9c, 0, 2}, IP: libc},
				Request{Syscall: "openat", Thread: main, Path: "/proc/self/status", IP: libc},
				Request{Syscall: "socket", Thread: main, Sock: &SockAddr{Family: afInet}, IP: libc},
				Request{Syscall: "connect", Thread: main, Sock: &SockAddr{Family: afInet, Addr: netip.MustParseAddrPort("127.0.0.1:4444")}, IP: libc},
				Request{Syscall: "tgkill", Thread: main, PID: 100, Args: [6]uint64{100, 101, 10}, IP: libc},
			)
			if accel == "kvm" {
				for i := 0; i < 10; i++ {
					reqs = append(reqs, Request{Syscall: "ioctl", Thread: main, Args: [6]uint64{5, kvmSetUserMemoryRegion}, Fds: map[int]string{0: "anon_inode:kvm-vm"}, Backing: "anon", IP: libc})
					// A Linux guest programming its PCI BARs: from the vCPU.
					reqs = append(reqs, Request{Syscall: "ioctl", Thread: "CPU 0/KVM", Args: [6]uint64{5, kvmSetUserMemoryRegion}, Fds: map[int]string{0: "anon_inode:kvm-vm"}, Backing: "memfd:pc.ram", IP: libc})
				}
			} else {
				reqs = append(reqs, Request{Syscall: "mprotect", Thread: main, Args: [6]uint64{0x7f0000000000, 1 << 30, 7}, Backing: "anon", IP: libc})
			}
			for _, r := range reqs {
				d, rs := l.call(r)
				if d.Action != profiles.VerdictAllow {
					t.Errorf("%s by %s denied by %q", r.Syscall, r.Thread, d.Rule)
				}
				for _, f := range d.Findings {
					if f.Severity >= profiles.SevMedium {
						t.Errorf("%s by %s: finding %+v", r.Syscall, r.Thread, f)
					}
				}
				if len(rs) != 0 {
					t.Errorf("%s by %s: reactions %q", r.Syscall, r.Thread, kinds(rs))
				}
			}
		})
	}
}

// TestBuiltinPlane checks invariants of the built-in decision plane.
func TestBuiltinPlane(t *testing.T) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !e.JudgesOrigin() {
		t.Error("the built-in profile has no origin detector")
	}
	for _, r := range p.Rules {
		if r.Verdict == profiles.VerdictDeny && (r.Name == "no-exec-memory" || r.Name == "no-kvm-memslot-host-memory") && r.Severity < profiles.SevHigh {
			t.Errorf("rule %s: severity %v, the L1 rung of the ladder needs high", r.Name, r.Severity)
		}
	}
	for _, c := range p.Correlate {
		if !c.Once && c.Cooldown == 0 {
			t.Errorf("correlate %s fires on every later finding: give it once or a cooldown", c.Name)
		}
	}
}
