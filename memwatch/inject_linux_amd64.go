package memwatch

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// syscallInsn is the x86-64 `syscall` instruction.
var syscallInsn = []byte{0x0f, 0x05}

// inject makes thread t (frozen) execute system call nr with args, by
// pointing its instruction pointer at a `syscall` instruction at insn
// (in QEMU's own libc text) and single-stepping it, then restores its
// registers. It returns the call's result.
//
// orig_rax is set to -1 so that the kernel does not treat the stop as
// inside an interrupted system call and rewind the instruction pointer
// to restart it; the saved registers, put back afterwards, carry the
// interrupted call's orig_rax and -ERESTART* value, so the kernel
// restarts that call as if nothing had happened when the thread resumes.
func (fz *frozen) inject(t *task, insn uint64, nr uintptr, args ...uint64) (uint64, error) {
	var saved, regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.tid, &saved); err != nil {
		return 0, fmt.Errorf("inject into %d: %w", t.tid, os.NewSyscallError("ptrace(PTRACE_GETREGS)", err))
	}
	regs = saved
	regs.Rip = insn
	regs.Rax = uint64(nr)
	regs.Orig_rax = ^uint64(0)
	a := make([]uint64, 6)
	copy(a, args)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := unix.PtraceSetRegs(t.tid, &regs); err != nil {
		return 0, fmt.Errorf("inject into %d: %w", t.tid, os.NewSyscallError("ptrace(PTRACE_SETREGS)", err))
	}
	res, err := fz.step(t, insn)
	if e := unix.PtraceSetRegs(t.tid, &saved); e != nil {
		err = errors.Join(err, fmt.Errorf("restore registers of %d: %w", t.tid, os.NewSyscallError("ptrace(PTRACE_SETREGS)", e)))
	}
	return res, err
}

// step single-steps t over the syscall instruction at insn and returns
// rax. A signal that stops the thread before the step is set aside to
// be sent again after thaw.
func (fz *frozen) step(t *task, insn uint64) (uint64, error) {
	if t.sig != 0 {
		// Resuming suppresses the signal of the current stop.
		t.resend = append(t.resend, t.sig)
		t.sig = 0
	}
	for range 16 {
		if err := unix.PtraceSingleStep(t.tid); err != nil {
			return 0, fmt.Errorf("step %d: %w", t.tid, os.NewSyscallError("ptrace(PTRACE_SINGLESTEP)", err))
		}
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(t.tid, &ws, unix.WALL, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("step %d: %w", t.tid, os.NewSyscallError("wait4", err))
			}
			break
		}
		if !ws.Stopped() {
			delete(fz.tasks, t.tid)
			return 0, fmt.Errorf("step %d: thread ended (status %#x)", t.tid, uint32(ws))
		}
		if eventStop(ws) {
			continue // a late interrupt or the group stop, not the step
		}
		if sig := ws.StopSignal(); sig != syscall.SIGTRAP || ws.TrapCause() != 0 {
			t.resend = append(t.resend, int(sig)) // stopped for a signal before the step
			continue
		}
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(t.tid, &regs); err != nil {
			return 0, fmt.Errorf("step %d: %w", t.tid, os.NewSyscallError("ptrace(PTRACE_GETREGS)", err))
		}
		if regs.Rip != insn+uint64(len(syscallInsn)) {
			return 0, fmt.Errorf("step %d: stopped at %#x, not after the syscall at %#x", t.tid, regs.Rip, insn)
		}
		// The SIGTRAP of the step is not to be delivered: t.sig stays 0.
		if r := int64(regs.Rax); r < 0 && r > -4096 {
			return regs.Rax, syscall.Errno(-r)
		}
		return regs.Rax, nil
	}
	return 0, fmt.Errorf("step %d: signals keep arriving", t.tid)
}
