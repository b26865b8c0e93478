//go:build linux && cgo

package seccompnotify

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"kfv/profiles"
)

// seccompData builds the "packet" a BPF interpreter reads for a seccomp
// filter. x/net/bpf loads words big-endian, so each 32-bit half of
// struct seccomp_data is stored big-endian at the offset where the kernel
// keeps it in native (little-endian) order.
func seccompData(arch uint32, nr int, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], uint32(nr))
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}

func runFilter(t *testing.T, prog []unix.SockFilter, data []byte) uint32 {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(prog))
	for i, ins := range prog {
		raw[i] = bpf.RawInstruction{Op: ins.Code, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		// Keep the raw forms: the VM runs RawInstruction too.
		t.Log("some instructions did not disassemble; running raw")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("load BPF into interpreter: %v", err)
	}
	ret, err := vm.Run(data)
	if err != nil {
		t.Fatalf("run BPF: %v", err)
	}
	return uint32(ret)
}

const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retNotify = unix.SECCOMP_RET_USER_NOTIF
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
)

func retErrno(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }

func testProfile() *profiles.Profile {
	return &profiles.Profile{
		Name: "test", Source: "test",
		DefaultAction: profiles.ActInspect,
		Syscalls: []profiles.SyscallRule{
			{Names: []string{"read", "write"}, Action: profiles.ActAllow, Reason: "hot"},
			{Names: []string{"ioctl"}, Action: profiles.ActAllow, Reason: "kvm",
				Args: []profiles.ArgCond{{Index: 1, Op: profiles.OpIn, Values: []uint64{0xae80, 0xc008ae67}}}},
			{Names: []string{"mprotect"}, Action: profiles.ActAllow, Reason: "no exec",
				Args: []profiles.ArgCond{{Index: 2, Op: profiles.OpMaskedEq, Mask: unix.PROT_EXEC, Values: []uint64{0}}}},
			{Names: []string{"clone3"}, Action: profiles.ActDeny, Errno: int(unix.ENOSYS), Silent: true, Reason: "steer"},
			{Names: []string{"mount"}, Action: profiles.ActDeny, Errno: int(unix.EPERM), Reason: "never"},
			{Names: []string{"execve"}, Action: profiles.ActDeny, Errno: int(unix.EACCES), Reason: "never"},
			{Names: []string{"exit_group"}, Action: profiles.ActDeny, Errno: int(unix.EPERM), Reason: "silly"},
			{Names: []string{"mmap"}, Action: profiles.ActAllow, Reason: "wide",
				Args: []profiles.ArgCond{{Index: 1, Op: profiles.OpLt, Values: []uint64{1 << 33}, Wide: true}}},
		},
		DefaultVerdict: profiles.VerdictDeny, DefaultVerdictErrno: int(unix.EPERM),
	}
}

func TestCompileSemantics(t *testing.T) {
	f, err := Compile(testProfile())
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	cases := []struct {
		name string
		data []byte
		want uint32
	}{
		{"allowed syscall", seccompData(x86, unix.SYS_READ), retAllow},
		{"unlisted syscall goes to default inspect", seccompData(x86, unix.SYS_OPENAT), retNotify},
		{"ioctl KVM_RUN allowed", seccompData(x86, unix.SYS_IOCTL, 5, 0xae80), retAllow},
		{"ioctl second value allowed", seccompData(x86, unix.SYS_IOCTL, 5, 0xc008ae67), retAllow},
		{"ioctl high bits ignored like the kernel", seccompData(x86, unix.SYS_IOCTL, 5, 0xdead_0000_ae80), retAllow},
		{"ioctl other request inspected", seccompData(x86, unix.SYS_IOCTL, 5, 0x5401), retNotify},
		{"mprotect without exec allowed", seccompData(x86, unix.SYS_MPROTECT, 0, 4096, unix.PROT_READ|unix.PROT_WRITE), retAllow},
		{"mprotect with exec inspected", seccompData(x86, unix.SYS_MPROTECT, 0, 4096, unix.PROT_READ|unix.PROT_EXEC), retNotify},
		{"mprotect exec hidden in high bits is still not exec", seccompData(x86, unix.SYS_MPROTECT, 0, 4096, 1<<34|unix.PROT_READ), retAllow},
		{"silent deny stays in kernel", seccompData(x86, unix.SYS_CLONE3), retErrno(unix.ENOSYS)},
		{"logged deny is notified", seccompData(x86, unix.SYS_MOUNT), retNotify},
		{"execve always notified", seccompData(x86, unix.SYS_EXECVE), retNotify},
		{"execveat always notified", seccompData(x86, unix.SYS_EXECVEAT), retNotify},
		{"exit_group always allowed", seccompData(x86, unix.SYS_EXIT_GROUP), retAllow},
		{"rt_sigreturn always allowed", seccompData(x86, unix.SYS_RT_SIGRETURN), retAllow},
		{"wide lt below", seccompData(x86, unix.SYS_MMAP, 0, 1<<32), retAllow},
		{"wide lt above", seccompData(x86, unix.SYS_MMAP, 0, 1<<34), retNotify},
		{"i386 ABI kills", seccompData(unix.AUDIT_ARCH_I386, 11), retKill},
		{"x32 ABI kills", seccompData(x86, 0x40000000|unix.SYS_READ), retKill},
		{"x32 execve kills", seccompData(x86, 0x40000000|520), retKill},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := runFilter(t, f.Prog, c.data); got != c.want {
				t.Errorf("filter returned %#x, want %#x", got, c.want)
			}
		})
	}
	if f.Names[unix.SYS_OPENAT] != "openat" {
		t.Errorf("Names[openat] = %q", f.Names[unix.SYS_OPENAT])
	}
	if len(f.Warnings) == 0 {
		t.Error("no warning for a profile that denies execve and exit_group in the kernel")
	}
}

func TestProgRoundTrip(t *testing.T) {
	f, err := Compile(testProfile())
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeProg(EncodeProg(f.Prog))
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(f.Prog) {
		t.Fatalf("round trip changed length %d -> %d", len(f.Prog), len(back))
	}
	for i := range back {
		if back[i] != f.Prog[i] {
			t.Fatalf("instruction %d changed", i)
		}
	}
	if _, err := DecodeProg(make([]byte, 7)); err == nil {
		t.Error("DecodeProg accepted 7 bytes")
	}
}

func TestCompileSelfPID(t *testing.T) {
	p := &profiles.Profile{
		Name: "self", Source: "self", DefaultAction: profiles.ActInspect,
		Syscalls: []profiles.SyscallRule{
			{Names: []string{"tgkill"}, Action: profiles.ActAllow, Reason: "kick",
				Args: []profiles.ArgCond{{Index: 0, Op: profiles.OpEq, Self: true, Values: []uint64{0}}, {Index: 2, Op: profiles.OpEq, Values: []uint64{uint64(unix.SIGUSR1)}}}},
		},
	}
	f, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.PIDSlots) == 0 {
		t.Fatal("no pid slot found for a $pid condition")
	}
	const pid = 4242
	prog, err := PatchPID(f.Prog, f.PIDSlots, pid)
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	if got := runFilter(t, prog, seccompData(x86, unix.SYS_TGKILL, pid, 4243, uint64(unix.SIGUSR1))); got != retAllow {
		t.Errorf("tgkill of QEMU itself: %#x, want allow", got)
	}
	if got := runFilter(t, prog, seccompData(x86, unix.SYS_TGKILL, 999, 999, uint64(unix.SIGUSR1))); got != retNotify {
		t.Errorf("tgkill of another process: %#x, want notify", got)
	}
	if got := runFilter(t, f.Prog, seccompData(x86, unix.SYS_TGKILL, pid, pid, uint64(unix.SIGUSR1))); got != retNotify {
		t.Errorf("unpatched program allowed a pid it cannot know: %#x", got)
	}
	if _, err := PatchPID(f.Prog, []int{len(f.Prog)}, 1); err == nil {
		t.Error("PatchPID accepted a slot outside the program")
	}
}
