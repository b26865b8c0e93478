package orch

import (
	"testing"

	"kfv/profiles"
)

// BenchmarkEngineDecide measures the decision plane on the notification path
// with the built-in profile: an allowed open from the main loop (the
// common case), a denied one from a vCPU (signature and behaviour
// findings), and an allowed one with origin judged.
func BenchmarkEngineDecide(b *testing.B) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		b.Fatal(err)
	}
	e, err := NewEngine(p, nil)
	if err != nil {
		b.Fatal(err)
	}
	e.SetText([]AddrRange{{Start: 0x1000, End: 0x2000}, {Start: 0x7f1000000000, End: 0x7f1000200000}})
	cases := []struct {
		name string
		req  Request
	}{
		{"allow", Request{Syscall: "openat", Thread: "qemu-system-x86", Path: "/usr/share/qemu/kvmvapic.bin"}},
		{"allow-origin", Request{Syscall: "openat", Thread: "qemu-system-x86", Path: "/usr/share/qemu/kvmvapic.bin", IP: 0x7f1000100010}},
		{"deny-vcpu", Request{Syscall: "openat", Thread: "CPU 0/KVM", Path: "/etc/shadow", IP: 0x7f1000100010}},
		{"l1-ioctl", Request{Syscall: "ioctl", Thread: "CPU 0/KVM", Args: [6]uint64{5, kvmSetUserMemoryRegion}, Fds: map[int]string{0: "anon_inode:kvm-vm"}, Backing: "anon", IP: 0x7f1000100010}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(&c.req)
			}
		})
	}
}
