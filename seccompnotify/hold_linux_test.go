//go:build linux

package seccompnotify

import (
	"testing"

	"golang.org/x/sys/unix"

	"kfv/orch"
)

// TestHoldWanted: after start-up, the calls kfv decides on what another
// thread can change and then continues hold QEMU's other threads still;
// nothing else does, and nothing does before start-up (outside a vCPU
// thread).
func TestHoldWanted(t *testing.T) {
	const pid = 4242
	d := &Decoder{HoldOthers: func(uint64, int, int, [2]uint64) error { return nil }}
	exec := uint64(unix.PROT_READ | unix.PROT_EXEC)
	rw := uint64(unix.PROT_READ | unix.PROT_WRITE)
	priv, anon := uint64(unix.MAP_PRIVATE), uint64(unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	cases := []struct {
		name, syscall, thread string
		args                  [6]uint64
		sealed                bool
		want                  string
		mem                   [2]uint64
	}{
		{"memslot sealed", "ioctl", "qemu-system-x86", [6]uint64{9, kvmSetUserMemoryRegion, 0x7000}, true, "KVM_SET_USER_MEMORY_REGION", [2]uint64{0x7000, 0x7020}},
		{"memslot vCPU before seal", "ioctl", "CPU 0/KVM", [6]uint64{9, kvmSetUserMemoryRegion, 0x7000}, false, "KVM_SET_USER_MEMORY_REGION", [2]uint64{0x7000, 0x7020}},
		{"memslot at start-up", "ioctl", "qemu-system-x86", [6]uint64{9, kvmSetUserMemoryRegion, 0x7000}, false, "", [2]uint64{}},
		{"other ioctl", "ioctl", "CPU 0/KVM", [6]uint64{9, 0xae80, 0}, true, "", [2]uint64{}},
		{"exec mmap of an fd", "mmap", "qemu-system-x86", [6]uint64{0, 4096, exec, priv, 7, 0}, true, "mmap of an fd with PROT_EXEC", [2]uint64{}},
		{"exec mmap at start-up", "mmap", "qemu-system-x86", [6]uint64{0, 4096, exec, priv, 7, 0}, false, "", [2]uint64{}},
		{"anonymous exec mmap", "mmap", "qemu-system-x86", [6]uint64{0, 4096, exec, anon, ^uint64(0), 0}, true, "", [2]uint64{}},
		{"data mmap of an fd", "mmap", "qemu-system-x86", [6]uint64{0, 4096, rw, priv, 7, 0}, true, "", [2]uint64{}},
		{"exec mprotect", "mprotect", "qemu-system-x86", [6]uint64{0x7000, 4096, exec}, true, "mprotect with PROT_EXEC", [2]uint64{}},
		{"exec pkey_mprotect", "pkey_mprotect", "CPU 1/KVM", [6]uint64{0x7000, 4096, exec, 0}, false, "pkey_mprotect with PROT_EXEC", [2]uint64{}},
		{"data mprotect", "mprotect", "qemu-system-x86", [6]uint64{0x7000, 4096, rw}, true, "", [2]uint64{}},
		{"openat", "openat", "qemu-system-x86", [6]uint64{0, 0x7000, 0}, true, "", [2]uint64{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d.ram.Store(nil)
			if tc.sealed {
				d.ram.Store(&guestRAM{pid: pid})
			}
			n := &Notif{Args: tc.args}
			r := &orch.Request{PID: pid, Syscall: tc.syscall, Thread: tc.thread}
			what, mem := d.holdWanted(n, r)
			if what != tc.want || mem != tc.mem {
				t.Errorf("holdWanted = %q %#x, want %q %#x", what, mem, tc.want, tc.mem)
			}
		})
	}
	// Without a hold to take (no cgroup of QEMU's own), nothing is held.
	d2 := &Decoder{}
	d2.ram.Store(&guestRAM{pid: pid})
	if what, _ := d2.holdWanted(&Notif{Args: [6]uint64{0, 4096, exec, priv, 7, 0}}, &orch.Request{PID: pid, Syscall: "mmap"}); what != "" {
		t.Errorf("holdWanted without HoldOthers = %q", what)
	}
}
