//go:build linux && cgo

package seccompnotify

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"kfv/profiles"
)

// Filter is a compiled profile: the BPF program to load, and what the
// supervisor needs to know about it.
type Filter struct {
	// Prog is the BPF program, ready for seccomp(SECCOMP_SET_MODE_FILTER).
	Prog []unix.SockFilter
	// Names maps x86_64 syscall numbers to names, for decoding.
	Names map[int]string
	// Warnings are things the compiler changed or a reader should know.
	Warnings []string
	// PIDSlots are the instructions whose constant is QEMU's pid (the
	// profile's "$pid"), unknown until the process exists: PatchPID
	// fills them in.
	PIDSlots []int
}

// Two stand-ins for "$pid". A profile is compiled once with each; the
// instructions whose constants differ are exactly the pid slots, whatever
// other constants the program holds. Both are above PID_MAX_LIMIT (2^22),
// so no real pid is confused with them.
const (
	pidStandInA = 0x7ffffff1
	pidStandInB = 0x7ffffff2
)

// PatchPID returns a copy of prog with QEMU's pid in the slots.
func PatchPID(prog []unix.SockFilter, slots []int, pid int) ([]unix.SockFilter, error) {
	out := append([]unix.SockFilter(nil), prog...)
	for _, i := range slots {
		if i < 0 || i >= len(out) {
			return nil, fmt.Errorf("pid slot %d outside a program of %d instructions", i, len(out))
		}
		out[i].K = uint32(pid)
	}
	return out, nil
}

// Always-notified syscalls. The loader's execve of QEMU happens after the
// filter is in place, so the supervisor must see it to let it through; a
// profile's allow or deny for them is applied by the supervisor instead.
var forcedNotify = []string{"execve", "execveat"}

// Always-allowed syscalls. Between loading the filter and exec, the loading
// thread may take a signal (rt_sigreturn) or fail and exit; none of these
// may wait for a supervisor that does not have the listener yet. They are
// harmless: QEMU can always end itself.
var forcedAllow = []string{"rt_sigreturn", "exit", "exit_group"}

// mask32 limits a comparison to the low 32 bits, which is all the kernel
// reads of an int argument.
const mask32 = 0xffffffff

// maxExpansion bounds the rules one [[syscall]] table may expand to (the
// product of its "in" lists), to keep the BPF program within the kernel's
// 4096-instruction limit and catch mistakes early.
const maxExpansion = 512

// Compile turns a validated profile into a BPF filter.
//
// Semantics, per syscall: the first matching [[syscall]] rule's action
// applies, else the profile's default action. In the kernel, allow rules
// become SECCOMP_RET_ALLOW; deny rules with silent = true become
// SECCOMP_RET_ERRNO; every other deny and every inspect becomes
// SECCOMP_RET_USER_NOTIF, so that the supervisor sees and logs it (it then
// answers deny with the rule's errno). A filter whose supervisor died fails
// notified calls with ENOSYS, which is still a denial.
//
// The program pins the architecture to x86_64: calls through the i386 ABI
// (int $0x80) or the x32 ABI kill the process.
func Compile(p *profiles.Profile) (*Filter, error) {
	a, err := compile(p, pidStandInA)
	if err != nil {
		return nil, err
	}
	b, err := compile(p, pidStandInB)
	if err != nil {
		return nil, err
	}
	if len(a.Prog) != len(b.Prog) {
		return nil, fmt.Errorf("profile %s: the program's shape depends on the pid (%d vs %d instructions)", p.Name, len(a.Prog), len(b.Prog))
	}
	for i := range a.Prog {
		x, y := a.Prog[i], b.Prog[i]
		switch {
		case x == y:
		case x.Code == y.Code && x.Jt == y.Jt && x.Jf == y.Jf && x.K == pidStandInA && y.K == pidStandInB:
			a.PIDSlots = append(a.PIDSlots, i)
		default:
			return nil, fmt.Errorf("profile %s: instruction %d depends on the pid in an unexpected way", p.Name, i)
		}
	}
	return a, nil
}

func compile(p *profiles.Profile, pid uint64) (*Filter, error) {
	out := &Filter{Names: map[int]string{}}
	def, err := kernelAction(p.DefaultAction, p.DefaultErrno, false)
	if err != nil {
		return nil, fmt.Errorf("profile %s: default action: %w", p.Name, err)
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("create libseccomp filter: %w", err)
	}
	defer f.Release()
	// Kill the whole process, not a thread, for a foreign ABI: a QEMU with
	// one thread killed would keep running in an unknown state.
	if err := f.SetBadArchAction(libseccomp.ActKillProcess); err != nil {
		return nil, fmt.Errorf("set bad-arch action: %w", err)
	}
	// A binary tree keeps the cost of the hot path low for ~350 syscalls.
	if err := f.SetOptimize(2); err != nil {
		out.Warnings = append(out.Warnings, fmt.Sprintf("libseccomp cannot build a binary-tree filter (%v); using a linear one", err))
	}

	special := map[string]string{}
	for _, n := range forcedNotify {
		special[n] = "notify"
	}
	for _, n := range forcedAllow {
		special[n] = "allow"
	}

	for _, r := range p.Syscalls {
		act, err := kernelAction(r.Action, r.Errno, r.Silent)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Pos, err)
		}
		conds, err := expandConds(r.Args, pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Pos, err)
		}
		for _, name := range r.Names {
			if s, ok := special[name]; ok {
				want := map[string]profiles.Action{"notify": profiles.ActInspect, "allow": profiles.ActAllow}[s]
				if r.Action != want || len(r.Args) > 0 {
					out.Warnings = append(out.Warnings, fmt.Sprintf("%s: %s is always %sed in the kernel; the supervisor applies this rule instead", r.Pos, name, map[string]string{"notify": "inspect", "allow": "allow"}[s]))
				}
				continue
			}
			nr, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				return nil, fmt.Errorf("%s: syscall %q: %w", r.Pos, name, err)
			}
			if act == def {
				// libseccomp refuses rules whose action is the default
				// one; the default covers them.
				continue
			}
			if len(conds) == 0 {
				if err := f.AddRuleExact(nr, act); err != nil {
					return nil, fmt.Errorf("%s: add rule for %s: %w", r.Pos, name, err)
				}
				continue
			}
			for _, c := range conds {
				if err := f.AddRuleConditionalExact(nr, act, c); err != nil {
					return nil, fmt.Errorf("%s: add conditional rule for %s: %w", r.Pos, name, err)
				}
			}
		}
	}
	for name, s := range special {
		nr, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			return nil, fmt.Errorf("syscall %q: %w", name, err)
		}
		act := libseccomp.ActNotify
		if s == "allow" {
			act = libseccomp.ActAllow
		}
		if act == def {
			continue
		}
		if err := f.AddRuleExact(nr, act); err != nil {
			return nil, fmt.Errorf("add rule for %s: %w", name, err)
		}
	}

	prog, err := exportBPF(f)
	if err != nil {
		return nil, err
	}
	if len(prog) > 4096 {
		return nil, fmt.Errorf("profile %s compiles to %d BPF instructions; the kernel takes at most 4096", p.Name, len(prog))
	}
	out.Prog = prog
	for i := 0; i < 1024; i++ {
		if n, err := libseccomp.ScmpSyscall(i).GetName(); err == nil {
			out.Names[i] = n
		}
	}
	return out, nil
}

func kernelAction(a profiles.Action, errno int, silent bool) (libseccomp.ScmpAction, error) {
	switch a {
	case profiles.ActAllow:
		return libseccomp.ActAllow, nil
	case profiles.ActInspect:
		return libseccomp.ActNotify, nil
	case profiles.ActDeny:
		if !silent {
			return libseccomp.ActNotify, nil
		}
		if errno <= 0 || errno > 4095 {
			return 0, fmt.Errorf("errno %d out of range", errno)
		}
		return libseccomp.ActErrno.SetReturnCode(int16(errno)), nil
	}
	return 0, fmt.Errorf("unknown action %v", a)
}

// expandConds turns a rule's conditions into the list of libseccomp
// condition sets it stands for: "in" lists multiply out, since a libseccomp
// rule ANDs its conditions.
func expandConds(args []profiles.ArgCond, pid uint64) ([][]libseccomp.ScmpCondition, error) {
	if len(args) == 0 {
		return nil, nil
	}
	sets := [][]libseccomp.ScmpCondition{nil}
	for _, a := range args {
		if a.Self {
			a.Values = []uint64{pid}
		}
		alts, err := condAlternatives(a)
		if err != nil {
			return nil, err
		}
		if len(sets)*len(alts) > maxExpansion {
			return nil, fmt.Errorf("argument conditions expand to more than %d filter rules", maxExpansion)
		}
		var next [][]libseccomp.ScmpCondition
		for _, s := range sets {
			for _, c := range alts {
				n := append(append([]libseccomp.ScmpCondition(nil), s...), c)
				next = append(next, n)
			}
		}
		sets = next
	}
	return sets, nil
}

func condAlternatives(a profiles.ArgCond) ([]libseccomp.ScmpCondition, error) {
	idx := uint(a.Index)
	mk := func(op libseccomp.ScmpCompareOp, v ...uint64) ([]libseccomp.ScmpCondition, error) {
		c, err := libseccomp.MakeCondition(idx, op, v...)
		if err != nil {
			return nil, fmt.Errorf("argument %d %s: %w", a.Index, a.Op, err)
		}
		return []libseccomp.ScmpCondition{c}, nil
	}
	if len(a.Values) == 0 {
		return nil, fmt.Errorf("argument %d %s: no value", a.Index, a.Op)
	}
	v := a.Values[0]
	if !a.Wide {
		switch a.Op {
		case profiles.OpEq:
			return mk(libseccomp.CompareMaskedEqual, mask32, v&mask32)
		case profiles.OpIn:
			var out []libseccomp.ScmpCondition
			for _, v := range a.Values {
				c, err := mk(libseccomp.CompareMaskedEqual, mask32, v&mask32)
				if err != nil {
					return nil, err
				}
				out = append(out, c...)
			}
			return out, nil
		case profiles.OpMaskedEq:
			return mk(libseccomp.CompareMaskedEqual, a.Mask&mask32, v&a.Mask&mask32)
		}
		return nil, fmt.Errorf("argument %d: %s needs wide = true", a.Index, a.Op)
	}
	switch a.Op {
	case profiles.OpEq:
		return mk(libseccomp.CompareEqual, v)
	case profiles.OpNe:
		return mk(libseccomp.CompareNotEqual, v)
	case profiles.OpLt:
		return mk(libseccomp.CompareLess, v)
	case profiles.OpLe:
		return mk(libseccomp.CompareLessOrEqual, v)
	case profiles.OpGt:
		return mk(libseccomp.CompareGreater, v)
	case profiles.OpGe:
		return mk(libseccomp.CompareGreaterEqual, v)
	case profiles.OpMaskedEq:
		return mk(libseccomp.CompareMaskedEqual, a.Mask, v&a.Mask)
	case profiles.OpIn:
		var out []libseccomp.ScmpCondition
		for _, v := range a.Values {
			c, err := mk(libseccomp.CompareEqual, v)
			if err != nil {
				return nil, err
			}
			out = append(out, c...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("argument %d: unknown op %v", a.Index, a.Op)
}

// exportBPF has libseccomp write the program into a memfd (its export API
// takes an fd) and decodes the struct sock_filter array.
func exportBPF(f *libseccomp.ScmpFilter) ([]unix.SockFilter, error) {
	fd, err := unix.MemfdCreate("kfv-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	mf := os.NewFile(uintptr(fd), "kfv-bpf")
	defer mf.Close()
	if err := f.ExportBPF(mf); err != nil {
		return nil, fmt.Errorf("export BPF: %w", err)
	}
	if _, err := mf.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind BPF memfd: %w", err)
	}
	raw, err := io.ReadAll(mf)
	if err != nil {
		return nil, fmt.Errorf("read BPF: %w", err)
	}
	return DecodeProg(raw)
}

// DecodeProg decodes an array of struct sock_filter in native byte order.
func DecodeProg(raw []byte) ([]unix.SockFilter, error) {
	if len(raw) == 0 || len(raw)%8 != 0 {
		return nil, fmt.Errorf("BPF program of %d bytes is not a whole number of instructions", len(raw))
	}
	prog := make([]unix.SockFilter, len(raw)/8)
	for i := range prog {
		b := raw[i*8:]
		prog[i] = unix.SockFilter{
			Code: binary.NativeEndian.Uint16(b[0:]),
			Jt:   b[2],
			Jf:   b[3],
			K:    binary.NativeEndian.Uint32(b[4:]),
		}
	}
	return prog, nil
}

// EncodeProg is the inverse of DecodeProg.
func EncodeProg(prog []unix.SockFilter) []byte {
	raw := make([]byte, 8*len(prog))
	for i, ins := range prog {
		b := raw[i*8:]
		binary.NativeEndian.PutUint16(b[0:], ins.Code)
		b[2], b[3] = ins.Jt, ins.Jf
		binary.NativeEndian.PutUint32(b[4:], ins.K)
	}
	return raw
}
