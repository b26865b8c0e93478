package orch

import "testing"

func TestAttribute(t *testing.T) {
	tests := []struct {
		name  string
		req   Request
		layer Layer
		hrsc  string
	}{
		{"vcpu kvm", Request{Thread: "CPU 0/KVM", Syscall: "openat"}, L2, "vcpu0"},
		{"vcpu tcg", Request{Thread: "CPU 1/TCG", Syscall: "openat"}, L2, "vcpu1"},
		{"vcpu big", Request{Thread: "CPU 1000/KVM", Syscall: "openat"}, L2, "vcpu1000"},
		{"vcpu not a number", Request{Thread: "CPU x/KVM", Syscall: "openat"}, L2, "thread:CPU x/KVM"},
		{"worker", Request{Thread: "worker", Syscall: "openat"}, L2, "block-worker"},
		{"monitor", Request{Thread: "IO mon_iothread", Syscall: "connect"}, L2, "monitor"},
		{"iothread", Request{Thread: "IO iothread0", Syscall: "openat"}, L2, "iothread:iothread0"},
		{"main truncated", Request{Thread: "qemu-system-x86", Syscall: "openat"}, L2, "main-loop"},
		{"main full", Request{Thread: "qemu-system-x86_64", Syscall: "openat"}, L2, "main-loop"},
		{"rcu", Request{Thread: "call_rcu", Syscall: "openat"}, L2, "rcu"},
		{"vnc", Request{Thread: "vnc_worker", Syscall: "openat"}, L2, "vnc"},
		{"other", Request{Thread: "gmain", Syscall: "openat"}, L2, "thread:gmain"},
		{"unknown thread", Request{Syscall: "openat"}, L2, "thread:?"},
		{"mmap is L1", Request{Thread: "CPU 0/KVM", Syscall: "mmap"}, L1, "vcpu0"},
		{"mprotect is L1", Request{Thread: "CPU 0/TCG", Syscall: "mprotect"}, L1, "vcpu0"},
		{"ioctl kvm", Request{Thread: "qemu-system-x86", Syscall: "ioctl", Fds: map[int]string{0: "/dev/kvm"}}, L1, "main-loop"},
		{"ioctl vm", Request{Syscall: "ioctl", Thread: "CPU 2/KVM", Fds: map[int]string{0: "anon_inode:kvm-vcpu:2"}}, L1, "vcpu2"},
		{"ioctl tty", Request{Syscall: "ioctl", Thread: "qemu-system-x86", Fds: map[int]string{0: "/dev/pts/3"}}, L2, "main-loop"},
		{"ioctl no fd", Request{Syscall: "ioctl", Thread: "worker"}, L2, "block-worker"},
		{"signal", Request{Syscall: "kill", Thread: "worker"}, L2, "block-worker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, h := Attribute(&tt.req)
			if l != tt.layer || h != tt.hrsc {
				t.Errorf("Attribute = %s %q, want %s %q", l, h, tt.layer, tt.hrsc)
			}
		})
	}
}
