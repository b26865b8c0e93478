//go:build linux && cgo

package seccompnotify

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"kfv/policy"
	"kfv/profiles"
	"kfv/sysent"
)

// The invariants of the built-in filter (docs/profiles.md, "Invariants of
// the built-in filter"): what the BPF program kfv loads for QEMU must
// never let through in the kernel, whatever the profile's rules say. The
// test compiles the built-in profile the way kfv does for a KVM and a TCG
// VM (policy.PrepareProfile, Compile, PatchPID with QEMU's pid), runs the
// program in x/net/bpf's interpreter over every syscall number of the
// three x86 ABIs and the argument classes that matter, and checks every
// call the program allows against the list below.

// Pids the sweep names: QEMU's own (patched into the program as "$pid"),
// init and a neighbour.
const (
	invQEMUPID  = 31337
	invOtherPID = 31338
)

// invariant is one property of the filter. bad says whether letting this
// call through in the kernel breaks it; the test only asks it about calls
// the program allows.
type invariant struct {
	id   string
	what string
	bad  func(c call) bool
}

// call is one syscall as the filter sees it.
type call struct {
	name string
	nr   int
	args [6]uint64
}

// lo is an int argument as the kernel reads it: its low 32 bits.
func (c call) lo(i int) uint32 { return uint32(c.args[i]) }

func (c call) String() string {
	var a []string
	for _, v := range c.args {
		a = append(a, fmt.Sprintf("%#x", v))
	}
	name := c.name
	if name == "" {
		name = "?"
	}
	return fmt.Sprintf("%s(nr %d)(%s)", name, c.nr, strings.Join(a, ", "))
}

// Constants the kernel has and x/sys/unix lacks (x86_64 values).
const (
	ioprioWhoProcess = 1
	kvmCreateVM      = 0xae01
	kvmCreateVCPU    = 0xae41
	fioSetOwn        = 0x8901
	siocSPGRP        = 0x8902
	fioAsync         = 0x5452
	shmExec          = 0o100000
	cloneNewTime     = 0x80
)

// nsFlags are clone's namespace flags. CLONE_NEWTIME shares its bit with
// clone's exit signal and the kernel takes it only from clone3 and
// unshare, but a filter has no reason to let it through either.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
	unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWCGROUP | cloneNewTime

// seccompFlagsQEMU are the flags QEMU's -sandbox installs its filter with
// (libseccomp's seccomp_load, measured with strace -f -e trace=seccomp on
// QEMU 7.2 and 10.0: SECCOMP_FILTER_FLAG_TSYNC|SECCOMP_FILTER_FLAG_TSYNC_ESRCH).
// libseccomp also probes TSYNC, LOG, SPEC_ALLOW, NEW_LISTENER and
// TSYNC_ESRCH with a NULL program (EFAULT, nothing installed).
const seccompFlagsQEMU = unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH

// pidOnly are the calls whose pid argument (index) may only be 0 (the
// caller) in the kernel: they change or read into another process's
// scheduling, limits or memory.
var pidOnly = map[string][]int{
	"sched_setaffinity":  {0},
	"sched_setparam":     {0},
	"sched_setscheduler": {0},
	"sched_setattr":      {0},
	"prlimit64":          {0},
	"migrate_pages":      {0},
	"move_pages":         {0},
	"kcmp":               {0, 1},
	"pidfd_open":         {0},
}

// signalTarget is the argument of each signal call that names the target
// process (tgkill: the thread group). Only QEMU's own pid passes; 0 and
// negative values are errors for all but kill, where 0 is QEMU's process
// group and -1 every process QEMU may signal.
var signalTarget = map[string]int{
	"kill": 0, "tgkill": 0, "tkill": 0, "rt_sigqueueinfo": 0, "rt_tgsigqueueinfo": 0,
}

// neverAllowed are the calls no argument may let through in the kernel,
// each with why.
var neverAllowed = map[string]string{
	"execve": "runs a program", "execveat": "runs a program",
	"fork": "makes a process", "vfork": "makes a process",
	"clone3":  "its flags are in memory: ENOSYS (glibc falls back to clone) or inspected",
	"unshare": "new namespaces", "setns": "enters namespaces",
	"openat2":           "kfv performs the opens it allows; ENOSYS steers to openat",
	"io_uring_setup":    "kfv makes every ring itself, restricted",
	"io_uring_register": "registers buffers, personalities, or acts without a ring",
	"bpf":               "kernel attack surface", "perf_event_open": "kernel attack surface",
	"userfaultfd": "stalls kernel copies (exploit primitive)",
	"ptrace":      "reaches another process", "process_vm_readv": "reads another process",
	"process_vm_writev": "writes another process", "pidfd_getfd": "steals another process's fd",
	"pidfd_send_signal": "signals the process of a pidfd BPF cannot see",
	"process_madvise":   "acts on the memory of the process of a pidfd BPF cannot see",
	"process_mrelease":  "reaps the memory of the process of a pidfd BPF cannot see",
	"init_module":       "loads kernel code", "finit_module": "loads kernel code", "delete_module": "unloads kernel code",
	"kexec_load": "loads a kernel", "kexec_file_load": "loads a kernel",
	"mount": "mounts", "umount2": "mounts", "pivot_root": "mounts", "chroot": "mounts",
	"move_mount": "mounts", "open_tree": "mounts", "fsopen": "mounts", "fsconfig": "mounts",
	"fsmount": "mounts", "fspick": "mounts", "mount_setattr": "mounts",
	"keyctl": "host keyrings", "add_key": "host keyrings", "request_key": "host keyrings",
	"personality":      "READ_IMPLIES_EXEC makes every readable mapping executable",
	"remap_file_pages": "rearranges file mappings behind the mmap and mprotect checks",
}

// pathChanging are the calls that open, run or change files by path
// (package sysent: every path-naming call that is not a mere lookup).
var pathChanging = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range sysent.Select(func(e *sysent.Entry) bool { return e.Object == sysent.Path && !e.Lookup }) {
		m[n] = true
	}
	return m
}()

var invariants = []invariant{
	{"foreign-abi", "every call through the i386 or x32 ABI kills QEMU", nil}, // checked apart: it concerns the arch word
	{"pid-zero", "a call that names a process by pid is allowed in the kernel only for pid 0 (the caller)", func(c call) bool {
		if idx, ok := pidOnly[c.name]; ok {
			for _, i := range idx {
				if c.lo(i) != 0 {
					return true
				}
			}
		}
		switch c.name {
		case "setpriority": // which, who: PRIO_USER or PRIO_PGRP with who 0 reach other processes
			return c.lo(0) != unix.PRIO_PROCESS || c.lo(1) != 0
		case "ioprio_set":
			return c.lo(0) != ioprioWhoProcess || c.lo(1) != 0
		}
		return false
	}},
	{"signals-self", "a signal is allowed in the kernel only to QEMU's own pid", func(c call) bool {
		i, ok := signalTarget[c.name]
		if !ok {
			return false
		}
		t := int32(c.lo(i))
		if c.name != "kill" && t <= 0 { // EINVAL or ESRCH: reaches nobody
			return false
		}
		return t != invQEMUPID
	}},
	{"fcntl-owner", "fcntl never makes another process the target of SIGIO in the kernel: F_SETOWN only to 0 or QEMU's pid, no F_SETOWN_EX, no F_SETSIG but 0, no O_ASYNC by F_SETFL; ioctl FIOSETOWN, SIOCSPGRP and FIOASYNC never", func(c call) bool {
		switch c.name {
		case "fcntl":
			switch c.lo(1) {
			case unix.F_SETOWN:
				return c.lo(2) != 0 && c.lo(2) != invQEMUPID
			case unix.F_SETOWN_EX:
				return true
			case unix.F_SETSIG:
				return c.lo(2) != 0
			case unix.F_SETFL:
				return c.lo(2)&unix.O_ASYNC != 0
			}
		case "ioctl":
			switch c.lo(1) {
			case fioSetOwn, siocSPGRP, fioAsync:
				return true
			}
		}
		return false
	}},
	{"no-path-changes", "no call that opens, runs or changes a file by path is allowed in the kernel (package sysent: every path-naming call but lookups)", func(c call) bool {
		return pathChanging[c.name]
	}},
	{"no-exec-memory", "no mapping is made executable in the kernel: mmap, mprotect and pkey_mprotect with PROT_EXEC, shmat with SHM_EXEC", func(c call) bool {
		switch c.name {
		case "mmap", "mprotect", "pkey_mprotect":
			return c.args[2]&unix.PROT_EXEC != 0
		case "shmat":
			return c.lo(2)&shmExec != 0
		}
		return false
	}},
	{"no-processes", "clone is allowed in the kernel only with CLONE_THREAD and without namespace flags", func(c call) bool {
		return c.name == "clone" && (c.lo(0)&unix.CLONE_THREAD == 0 || c.lo(0)&nsFlags != 0)
	}},
	{"never", "never allowed in the kernel: exec, fork, vfork, clone3, namespaces, openat2, io_uring_setup and _register, bpf, perf_event_open, userfaultfd, ptrace, process_vm_*, pidfd_getfd, pidfd_send_signal, process_madvise, process_mrelease, modules, kexec, mounts, keyrings, personality, remap_file_pages", func(c call) bool {
		_, ok := neverAllowed[c.name]
		return ok
	}},
	{"seccomp-flags", "seccomp(SECCOMP_SET_MODE_FILTER) with a program is allowed in the kernel only with the flags QEMU's -sandbox uses (TSYNC, TSYNC_ESRCH): never NEW_LISTENER, LOG or SPEC_ALLOW", func(c call) bool {
		return c.name == "seccomp" && c.lo(0) == unix.SECCOMP_SET_MODE_FILTER && c.args[2] != 0 &&
			c.lo(1)&^seccompFlagsQEMU != 0
	}},
	{"kvm-create", "KVM_CREATE_VM and KVM_CREATE_VCPU are not allowed in the kernel (kfv counts them)", func(c call) bool {
		return c.name == "ioctl" && (c.lo(1) == kvmCreateVM || c.lo(1) == kvmCreateVCPU)
	}},
}

// filterVM is a compiled program in the interpreter, loaded once.
type filterVM struct{ vm *bpf.VM }

func newFilterVM(t testing.TB, prog []unix.SockFilter) *filterVM {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(prog))
	for i, ins := range prog {
		raw[i] = bpf.RawInstruction{Op: ins.Code, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	insns, _ := bpf.Disassemble(raw) // what does not disassemble stays raw, which the VM runs too
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("load BPF into the interpreter: %v", err)
	}
	return &filterVM{vm}
}

func (f *filterVM) run(t testing.TB, arch uint32, nr int, args [6]uint64) uint32 {
	ret, err := f.vm.Run(seccompData(arch, nr, args[:]...))
	if err != nil {
		t.Fatalf("run BPF: %v", err)
	}
	return uint32(ret)
}

// letsThrough reports whether the kernel runs a call the filter answered
// with ret: ALLOW, LOG, and TRACE (which a tracer may continue).
func letsThrough(ret uint32) bool {
	switch ret & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_LOG, unix.SECCOMP_RET_TRACE:
		return true
	}
	return false
}

func actionName(ret uint32) string {
	switch ret & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_ALLOW:
		return "ALLOW"
	case unix.SECCOMP_RET_LOG:
		return "LOG"
	case unix.SECCOMP_RET_TRACE:
		return "TRACE"
	case unix.SECCOMP_RET_USER_NOTIF:
		return "USER_NOTIF"
	case unix.SECCOMP_RET_ERRNO:
		return fmt.Sprintf("ERRNO(%d)", ret&unix.SECCOMP_RET_DATA)
	case unix.SECCOMP_RET_KILL_PROCESS:
		return "KILL_PROCESS"
	case unix.SECCOMP_RET_KILL_THREAD:
		return "KILL_THREAD"
	case unix.SECCOMP_RET_TRAP:
		return "TRAP"
	}
	return "?"
}

// syscallNames maps every x86_64 number libseccomp or the profiles know
// to its name.
func syscallNames() map[int]string {
	m := map[int]string{}
	for nr := 0; nr < 1024; nr++ {
		if n, err := libseccomp.ScmpSyscall(nr).GetNameByArch(libseccomp.ArchAMD64); err == nil && !strings.HasPrefix(n, "UNKNOWN") {
			m[nr] = n
		}
	}
	for _, n := range profiles.SyscallNames() {
		if nr, ok := profiles.SyscallNumber(n); ok {
			if _, ok := m[nr]; !ok {
				m[nr] = n
			}
		}
	}
	return m
}

// sweepNumbers are the numbers tried: every x86_64 syscall and some past
// the table's end.
func sweepNumbers() []int {
	var out []int
	for nr := 0; nr <= 600; nr++ {
		out = append(out, nr)
	}
	return append(out, 1023, 4096, 0xffff, 0x3fffffff)
}

// Argument values tried in every position: nothing, pids (QEMU's, init,
// a neighbour, negative ones, high bits the kernel ignores over a pid),
// all bits.
// negOther is -invOtherPID as a sign-extended register: a process group
// for kill and F_SETOWN.
var negOther = ^uint64(invOtherPID - 1)

var genericValues = []uint64{
	0, 1, invQEMUPID, invOtherPID, 1<<32 | invOtherPID, 1<<32 | invQEMUPID, 1 << 32,
	negOther, negOther & 0xffffffff, ^uint64(0), 0xffffffff,
}

// genericVectors are every value in each position alone, and every pair
// of values in the first three positions (where a call's pid, command,
// flags or protection are).
func genericVectors() [][6]uint64 {
	out := [][6]uint64{{}}
	for i := range 6 {
		for _, v := range genericValues {
			var a [6]uint64
			a[i] = v
			out = append(out, a)
		}
	}
	for i := range 3 {
		for j := i + 1; j < 3; j++ {
			for _, v := range genericValues {
				for _, w := range genericValues {
					var a [6]uint64
					a[i], a[j] = v, w
					out = append(out, a)
				}
			}
		}
	}
	return out
}

var pidValues = []uint64{
	0, invQEMUPID, 1, invOtherPID, negOther, negOther & 0xffffffff,
	^uint64(0), 1<<32 | invOtherPID, 1<<32 | invQEMUPID, 1 << 32,
}

// hi sets bits above the 32 the kernel reads of an int argument.
func hi(v uint64) uint64 { return 1<<32 | v }

// cross returns the vectors whose position i takes each of vals[i].
func cross(vals ...[]uint64) [][6]uint64 {
	out := [][6]uint64{{}}
	for i, vs := range vals {
		var next [][6]uint64
		for _, a := range out {
			for _, v := range vs {
				b := a
				b[i] = v
				next = append(next, b)
			}
		}
		out = next
	}
	return out
}

// specificVectors are the argument classes that matter for one call.
func specificVectors(name string) [][6]uint64 {
	if idx, ok := pidOnly[name]; ok {
		vals := make([][]uint64, 6)
		for i := range vals {
			vals[i] = []uint64{0}
		}
		for _, i := range idx {
			vals[i] = pidValues
		}
		return cross(vals...)
	}
	if i, ok := signalTarget[name]; ok {
		vals := make([][]uint64, i+1)
		vals[i] = pidValues
		sigArg := map[string]int{"kill": 1, "tgkill": 2, "tkill": 1, "rt_sigqueueinfo": 1, "rt_tgsigqueueinfo": 2}[name]
		for len(vals) <= sigArg {
			vals = append(vals, nil)
		}
		for j := range vals {
			if vals[j] == nil {
				vals[j] = []uint64{0, invQEMUPID, invOtherPID}
			}
		}
		vals[sigArg] = []uint64{0, uint64(unix.SIGUSR1), uint64(unix.SIGURG), uint64(unix.SIGKILL), uint64(unix.SIGTERM)}
		return cross(vals...)
	}
	switch name {
	case "setpriority":
		return cross([]uint64{unix.PRIO_PROCESS, unix.PRIO_PGRP, unix.PRIO_USER, 3, hi(unix.PRIO_PROCESS), hi(unix.PRIO_USER)},
			pidValues, []uint64{0, 0xffffffffffffffec /* -20 */, 19})
	case "ioprio_set":
		return cross([]uint64{0, ioprioWhoProcess, 2, 3, hi(ioprioWhoProcess), hi(3)}, pidValues, []uint64{0, 1 << 13})
	case "fcntl":
		cmds := []uint64{unix.F_DUPFD, unix.F_GETFD, unix.F_SETFD, unix.F_GETFL, unix.F_SETFL, unix.F_GETOWN,
			unix.F_SETOWN, unix.F_SETOWN_EX, unix.F_GETOWN_EX, unix.F_SETSIG, unix.F_GETSIG, unix.F_SETLEASE,
			unix.F_NOTIFY, unix.F_DUPFD_CLOEXEC, unix.F_SETLK, unix.F_OFD_SETLK, unix.F_ADD_SEALS}
		for _, c := range []uint64{unix.F_SETOWN, unix.F_SETOWN_EX, unix.F_SETSIG, unix.F_SETFL} {
			cmds = append(cmds, hi(c))
		}
		arg := append(append([]uint64(nil), pidValues...),
			unix.O_ASYNC, unix.O_ASYNC|unix.O_NONBLOCK, hi(unix.O_ASYNC), unix.O_NONBLOCK, hi(0),
			uint64(unix.SIGKILL), uint64(unix.SIGIO), hi(uint64(unix.SIGKILL)), 0x7ffd0000)
		return cross([]uint64{3}, cmds, arg)
	case "ioctl":
		reqs := []uint64{kvmCreateVM, kvmCreateVCPU, fioSetOwn, siocSPGRP, fioAsync, 0xae80 /* KVM_RUN */}
		for _, r := range reqs[:5] {
			reqs = append(reqs, hi(r))
		}
		return cross([]uint64{3, 10}, reqs, []uint64{0, 1, 0x7ffd0000})
	case "mmap":
		prots := []uint64{0, unix.PROT_READ, unix.PROT_READ | unix.PROT_WRITE, unix.PROT_EXEC, unix.PROT_READ | unix.PROT_EXEC,
			7, hi(unix.PROT_EXEC), hi(unix.PROT_READ), 0xffffffff, ^uint64(0)}
		return cross([]uint64{0, 0x7f0000000000}, []uint64{4096, 1 << 30}, prots,
			[]uint64{unix.MAP_PRIVATE | unix.MAP_ANONYMOUS, unix.MAP_SHARED, unix.MAP_PRIVATE | unix.MAP_FIXED},
			[]uint64{^uint64(0), 3}, []uint64{0})
	case "mprotect", "pkey_mprotect":
		prots := []uint64{0, unix.PROT_READ, unix.PROT_READ | unix.PROT_WRITE, unix.PROT_EXEC, unix.PROT_READ | unix.PROT_EXEC,
			7, hi(unix.PROT_EXEC), hi(unix.PROT_READ), 0xffffffff, ^uint64(0), unix.PROT_EXEC | unix.PROT_GROWSDOWN}
		return cross([]uint64{0x7f0000000000}, []uint64{4096}, prots, []uint64{0, 1, ^uint64(0)})
	case "shmat":
		return cross([]uint64{0, 5}, []uint64{0, 0x7f0000000000}, []uint64{0, shmExec, unix.SHM_RDONLY | shmExec, hi(shmExec)})
	case "clone":
		// glibc's pthread_create: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID.
		const thread = 0x3d0f00
		flags := []uint64{thread, thread &^ unix.CLONE_THREAD, uint64(unix.SIGCHLD), 0, hi(thread &^ unix.CLONE_THREAD),
			hi(0), unix.CLONE_THREAD, ^uint64(0), 0xffffffff}
		for b := uint64(1); b < 1<<32; b <<= 1 {
			if b&nsFlags != 0 {
				flags = append(flags, thread|b, b|uint64(unix.SIGCHLD), hi(thread|b))
			}
		}
		flags = append(flags, thread|nsFlags)
		return cross(flags, []uint64{0, 0x7f0000000000})
	case "seccomp":
		ops := []uint64{unix.SECCOMP_SET_MODE_STRICT, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_GET_ACTION_AVAIL,
			unix.SECCOMP_GET_NOTIF_SIZES, 4, hi(unix.SECCOMP_SET_MODE_FILTER)}
		flags := []uint64{0, seccompFlagsQEMU, hi(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER), 0xffffffff}
		for b := uint64(1); b <= 1<<8; b <<= 1 {
			flags = append(flags, b, seccompFlagsQEMU|b)
		}
		return cross(ops, flags, []uint64{0, 0x7f0000001000, 1 << 32})
	}
	return nil
}

// violation is a call the program lets through against an invariant.
type violation struct {
	inv, prog string
	c         call
	ret       uint32
}

// filterPrograms compiles the built-in profile as kfv does for a KVM VM,
// a TCG VM with user-mode networking, and a VM that connects to an inet
// address (which adds a kernel rule), each with QEMU's pid patched in.
func filterPrograms(t testing.TB, p *profiles.Profile) map[string][]unix.SockFilter {
	t.Helper()
	lines := map[string][]string{
		"kvm": {"-accel", "kvm", "-m", "256", "-display", "none", "-nodefaults"},
		"tcg": {"-accel", "tcg", "-m", "256", "-display", "none", "-nodefaults",
			"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"},
		"kvm+inet-chardev": {"-accel", "kvm", "-m", "256", "-display", "none", "-nodefaults",
			"-chardev", "socket,id=c0,host=192.0.2.1,port=4444", "-serial", "chardev:c0"},
	}
	out := map[string][]unix.SockFilter{}
	for name, args := range lines {
		q, _, err := policy.PrepareProfile(p, args, nil, "/", fstest.MapFS{})
		if err != nil {
			t.Fatalf("%s: prepare the profile: %v", name, err)
		}
		f, err := Compile(q)
		if err != nil {
			t.Fatalf("%s: compile: %v", name, err)
		}
		prog, err := PatchPID(f.Prog, f.PIDSlots, invQEMUPID)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = prog
	}
	return out
}

// checkInvariants runs every program over the sweep (of the x86_64 calls,
// only the one named only, when it is not "") and returns what breaks the
// invariants and how many calls it ran.
func checkInvariants(t testing.TB, progs map[string][]unix.SockFilter, only string) ([]violation, int) {
	t.Helper()
	runs := 0
	names := syscallNames()
	generic := genericVectors()
	var out []violation
	progNames := make([]string, 0, len(progs))
	for n := range progs {
		progNames = append(progNames, n)
	}
	sort.Strings(progNames)
	for _, pn := range progNames {
		vm := newFilterVM(t, progs[pn])
		// Foreign ABIs: the i386 numbers and the x32 ones (x86_64's
		// arch word, bit 30 set), whatever the arguments.
		for _, nr := range sweepNumbers() {
			for _, a := range [][6]uint64{{}, {invOtherPID, invOtherPID, 7, 7, 7, 7}} {
				for _, abi := range []struct {
					arch uint32
					nr   int
				}{{unix.AUDIT_ARCH_I386, nr}, {unix.AUDIT_ARCH_X86_64, nr | 0x40000000}, {0, nr}} {
					runs++
					if ret := vm.run(t, abi.arch, abi.nr, a); ret != unix.SECCOMP_RET_KILL_PROCESS {
						out = append(out, violation{"foreign-abi", pn, call{name: fmt.Sprintf("arch %#x", abi.arch), nr: abi.nr, args: a}, ret})
					}
				}
			}
		}
		for _, nr := range sweepNumbers() {
			name := names[nr]
			if only != "" && name != only {
				continue
			}
			// The classes that matter first, so a report's examples are theirs.
			vecs := append(specificVectors(name), generic...)
			for _, a := range vecs {
				ret := vm.run(t, unix.AUDIT_ARCH_X86_64, nr, a)
				runs++
				if !letsThrough(ret) {
					continue
				}
				c := call{name: name, nr: nr, args: a}
				for _, inv := range invariants {
					if inv.bad != nil && inv.bad(c) {
						out = append(out, violation{inv.id, pn, c, ret})
					}
				}
			}
		}
	}
	return out, runs
}

// report prints violations grouped by invariant and syscall, a few
// examples each, and returns the groups.
func report(t *testing.T, vs []violation) []string {
	t.Helper()
	type key struct{ inv, name string }
	groups := map[key][]violation{}
	for _, v := range vs {
		k := key{v.inv, v.c.name}
		groups[k] = append(groups[k], v)
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].inv != keys[j].inv {
			return keys[i].inv < keys[j].inv
		}
		return keys[i].name < keys[j].name
	})
	var summary []string
	for _, k := range keys {
		g := groups[k]
		var progs []string
		for _, v := range g {
			if !slices.Contains(progs, v.prog) {
				progs = append(progs, v.prog)
			}
		}
		sort.Strings(progs)
		classes := map[string]int{}
		for _, v := range g {
			classes[argClass(v.c)]++
		}
		var cl []string
		for c, n := range classes {
			if c != "" {
				cl = append(cl, fmt.Sprintf("%s: %d", c, n))
			}
		}
		sort.Strings(cl)
		var b strings.Builder
		fmt.Fprintf(&b, "invariant %s broken by %s: %d calls let through (programs %s)", k.inv, k.name, len(g), strings.Join(progs, ", "))
		if len(cl) > 0 {
			fmt.Fprintf(&b, "; by %s", strings.Join(cl, ", "))
		}
		for _, inv := range invariants {
			if inv.id == k.inv {
				fmt.Fprintf(&b, "\n\tthe invariant: %s", inv.what)
			}
		}
		if why, ok := neverAllowed[k.name]; ok && k.inv == "never" {
			fmt.Fprintf(&b, "\n\t%s: %s", k.name, why)
		}
		// One example of each class of arguments, then more up to four.
		b.WriteString("\n\te.g.")
		shown, seen := map[int]bool{}, map[string]bool{}
		for i, v := range g {
			if c := argClass(v.c); !seen[c] && len(shown) < 8 {
				seen[c], shown[i] = true, true
			}
		}
		for i := 0; i < len(g) && len(shown) < 4; i++ {
			shown[i] = true
		}
		for i, v := range g {
			if shown[i] {
				fmt.Fprintf(&b, "\n\t%s -> %s (%#x) [%s]", v.c, actionName(v.ret), v.ret, v.prog)
			}
		}
		t.Error(b.String())
		summary = append(summary, k.inv+" "+k.name)
	}
	return summary
}

// argClass names the part of a call's arguments that selects what it
// does, for the report: fcntl's command, ioctl's request, setpriority's
// which, clone's namespace flags, seccomp's flags.
func argClass(c call) string {
	switch c.name {
	case "fcntl":
		n := map[uint32]string{unix.F_SETOWN: "F_SETOWN", unix.F_SETOWN_EX: "F_SETOWN_EX", unix.F_SETSIG: "F_SETSIG", unix.F_SETFL: "F_SETFL"}[c.lo(1)]
		if n == "" {
			n = fmt.Sprintf("cmd %d", c.lo(1))
		}
		return n
	case "ioctl":
		return fmt.Sprintf("request %#x", c.lo(1))
	case "setpriority", "ioprio_set":
		return fmt.Sprintf("which %d", c.lo(0))
	case "clone":
		if c.lo(0)&unix.CLONE_THREAD == 0 {
			return "no CLONE_THREAD"
		}
		return fmt.Sprintf("CLONE_THREAD with namespace flags %#x", c.lo(0)&nsFlags)
	case "seccomp":
		return fmt.Sprintf("flags %#x", c.lo(1))
	}
	return ""
}

// TestBuiltinFilterInvariants checks the program kfv loads for QEMU
// against the invariants of docs/profiles.md.
func TestBuiltinFilterInvariants(t *testing.T) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	progs := filterPrograms(t, p)
	// A program that killed or refused everything would meet every
	// invariant: the hot path must pass, so the sweep runs the real one.
	hot := []call{
		{name: "read", args: [6]uint64{3, 0x7f0000000000, 4096}},
		{name: "futex"},
		{name: "ioctl", args: [6]uint64{10, 0xae80 /* KVM_RUN */}},
		{name: "mmap", args: [6]uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS, ^uint64(0)}},
		{name: "clone", args: [6]uint64{0x3d0f00}},
		{name: "tgkill", args: [6]uint64{invQEMUPID, invQEMUPID + 5, uint64(unix.SIGUSR1)}},
	}
	for pn, prog := range progs {
		vm := newFilterVM(t, prog)
		for _, c := range hot {
			nr, ok := profiles.SyscallNumber(c.name)
			if !ok {
				t.Fatalf("no number for %s", c.name)
			}
			c.nr = nr
			if ret := vm.run(t, unix.AUDIT_ARCH_X86_64, nr, c.args); ret != unix.SECCOMP_RET_ALLOW {
				t.Errorf("%s: hot-path call %s -> %s (%#x), want ALLOW", pn, c, actionName(ret), ret)
			}
		}
	}
	vs, runs := checkInvariants(t, progs, "")
	t.Logf("%d programs (%d instructions for kvm), %d calls run", len(progs), len(progs["kvm"]), runs)
	if broken := report(t, vs); len(broken) > 0 {
		t.Logf("%d invariant/syscall pairs broken: %s", len(broken), strings.Join(broken, "; "))
	}
}

// TestInvariantsCatchProfileEdits shows that the check fails when an edit
// of the profile breaks an invariant: each edit of a parsed copy allows
// one call in the kernel, with any arguments or with conditions that
// look right but are not (a pointer compared on 32 bits, who without
// which, kill's pid 0), and the check must name that invariant and call.
func TestInvariantsCatchProfileEdits(t *testing.T) {
	base, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	eq := func(i int, v uint64) profiles.ArgCond {
		return profiles.ArgCond{Index: i, Op: profiles.OpEq, Values: []uint64{v}}
	}
	edits := []struct {
		name, syscall, inv string
		args               []profiles.ArgCond
	}{
		{"sched_setaffinity any pid", "sched_setaffinity", "pid-zero", nil},
		{"setpriority who 0 any which", "setpriority", "pid-zero", []profiles.ArgCond{eq(1, 0)}},
		{"kill any pid", "kill", "signals-self", nil},
		{"kill pid 0", "kill", "signals-self", []profiles.ArgCond{eq(0, 0)}},
		{"fcntl any command", "fcntl", "fcntl-owner", nil},
		{"openat any flags", "openat", "no-path-changes", nil},
		{"mprotect any prot", "mprotect", "no-exec-memory", nil},
		{"clone any flags", "clone", "no-processes", nil},
		{"unshare", "unshare", "never", nil},
		{"seccomp any flags", "seccomp", "seccomp-flags", nil},
		{"seccomp program NULL on 32 bits", "seccomp", "seccomp-flags", []profiles.ArgCond{eq(2, 0)}},
		{"ioctl any request", "ioctl", "kvm-create", nil},
	}
	// A program that allows everything breaks every invariant: none of
	// them is vacuous (the foreign-ABI one included, which no profile
	// edit reaches).
	t.Run("allow everything", func(t *testing.T) {
		ret, err := bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		vs, _ := checkInvariants(t, map[string][]unix.SockFilter{"allow-all": {{Code: ret.Op, K: ret.K}}}, "")
		broken := map[string]bool{}
		for _, v := range vs {
			broken[v.inv] = true
		}
		for _, inv := range invariants {
			if !broken[inv.id] {
				t.Errorf("a filter that allows everything passes invariant %s", inv.id)
			}
		}
	})
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			p := allowInKernel(base, e.syscall, e.args)
			progs := filterPrograms(t, p)
			delete(progs, "kvm+inet-chardev") // one KVM and one TCG program are enough here
			vs, _ := checkInvariants(t, progs, e.syscall)
			found := false
			for _, v := range vs {
				if v.inv == e.inv && v.c.name == e.syscall {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("a profile that allows %s (%s) in the kernel passes invariant %s", e.syscall, e.name, e.inv)
			}
		})
	}
}

// allowInKernel returns a copy of p where name is taken out of every
// kernel rule and allowed in the kernel under args alone.
func allowInKernel(p *profiles.Profile, name string, args []profiles.ArgCond) *profiles.Profile {
	q := *p
	q.Syscalls = nil
	for _, r := range p.Syscalls {
		r.Names = slices.DeleteFunc(slices.Clone(r.Names), func(n string) bool { return n == name })
		if len(r.Names) > 0 {
			q.Syscalls = append(q.Syscalls, r)
		}
	}
	q.Syscalls = append(q.Syscalls, profiles.SyscallRule{Names: []string{name}, Action: profiles.ActAllow, Args: args,
		Reason: "test: an edit that breaks an invariant"})
	return &q
}
