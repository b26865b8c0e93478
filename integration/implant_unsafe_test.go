package integration

import (
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bpfProbe loads the implant's bpf payload program (r0 = 0; exit, a
// socket filter) from the test process and says why it cannot, or ""
// when the host lets this user load it. QEMU runs as the same user.
func bpfProbe() string {
	const (
		bpfProgLoad          = 5
		bpfProgTypeSockFiltr = 1
	)
	// struct bpf_insn: code u8, dst:4|src:4 u8, off s16, imm s32.
	insns := [2]uint64{
		0x07 | 0xb0, // BPF_ALU64|BPF_MOV|BPF_K, dst r0, imm 0
		0x95,        // BPF_JMP|BPF_EXIT
	}
	license := []byte("GPL\x00")
	// The first fields of union bpf_attr for BPF_PROG_LOAD; the rest
	// stays zero.
	var attr [128]byte
	a := (*struct {
		progType uint32
		insnCnt  uint32
		insns    uint64
		license  uint64
	})(unsafe.Pointer(&attr[0]))
	a.progType = bpfProgTypeSockFiltr
	a.insnCnt = uint32(len(insns))
	a.insns = uint64(uintptr(unsafe.Pointer(&insns[0])))
	a.license = uint64(uintptr(unsafe.Pointer(&license[0])))
	// The kernel verifies and loads the program; the fd is closed at once.
	fd, _, e := syscall.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr))
	runtime.KeepAlive(&insns)
	runtime.KeepAlive(license)
	if e != 0 {
		return "bpf(BPF_PROG_LOAD) fails for this user here: " + e.Error()
	}
	if err := syscall.Close(int(fd)); err != nil {
		return "close bpf program fd: " + err.Error()
	}
	return ""
}
