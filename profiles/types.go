package profiles

import (
	"fmt"
	"slices"
	"time"
)

// Pos is a place in a profile's source, for error messages.
type Pos struct {
	File string
	Line int // 1-based; 0 when unknown
	Col  int // 1-based; 0 when unknown
}

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Col == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Action is what the kernel filter does with a syscall.
type Action int

const (
	// ActAllow lets the call through in the kernel: the hot path.
	ActAllow Action = iota + 1
	// ActDeny fails the call in the kernel with Errno.
	ActDeny
	// ActInspect sends the call to the supervisor (SECCOMP_RET_USER_NOTIF).
	ActInspect
)

var actions = enum[Action]{what: "action", names: []string{ActAllow: "allow", ActDeny: "deny", ActInspect: "inspect"}}

func (a Action) String() string { return actions.name(a) }

// Op is a comparison on one syscall argument.
type Op int

const (
	OpEq       Op = iota + 1 // arg == Values[0]
	OpNe                     // arg != Values[0] (only with Wide)
	OpIn                     // arg is one of Values
	OpMaskedEq               // arg & Mask == Values[0]
	OpLt                     // arg < Values[0] (only with Wide)
	OpLe                     // arg <= Values[0] (only with Wide)
	OpGt                     // arg > Values[0] (only with Wide)
	OpGe                     // arg >= Values[0] (only with Wide)
)

var ops = enum[Op]{what: "op", names: []string{
	OpEq: "eq", OpNe: "ne", OpIn: "in", OpMaskedEq: "masked_eq",
	OpLt: "lt", OpLe: "le", OpGt: "gt", OpGe: "ge",
}}

func (o Op) String() string { return ops.name(o) }

// ArgCond is a condition on one argument of a syscall. Conditions of one
// SyscallRule are ANDed.
//
// By default only the low 32 bits of the argument are compared, because the
// kernel reads int-typed arguments (fds, flags, prot, ioctl requests) from
// the low 32 bits and ignores the rest: a 64-bit comparison of such an
// argument could be sidestepped by setting high bits. Wide compares all 64
// bits, for size and pointer-typed arguments; ordering comparisons (lt, le,
// gt, ge) and ne need it, since libseccomp cannot express them on 32 bits.
type ArgCond struct {
	Index  int      // 0..5
	Op     Op       //
	Values []uint64 // one value, or several for OpIn
	Mask   uint64   // for OpMaskedEq
	Wide   bool     // compare all 64 bits
	// Self makes the value QEMU's own process id ("$pid" in TOML),
	// known only at launch: the filter compiler and orch substitute it.
	Self bool
	Pos  Pos
}

// SelfPID is the TOML value that stands for QEMU's process id.
const SelfPID = "$pid"

// SyscallRule is one [[syscall]] table: what the kernel filter does with the
// named syscalls, when the conditions (if any) hold.
type SyscallRule struct {
	// Name identifies the rule in events; when the TOML gives none it is
	// "syscall:" + Names[0].
	Name   string
	Names  []string
	Action Action
	Errno  int // for ActDeny
	// Silent makes a deny happen in the kernel (SECCOMP_RET_ERRNO) without
	// reaching the supervisor, so without an event. Meant for steering
	// denials that are not attacks, such as clone3 -> ENOSYS so that libc
	// falls back to clone, whose flags BPF can check. Other denials are
	// sent to the supervisor, which denies them too and logs them.
	Silent bool
	Args   []ArgCond
	// Severity grades the finding a logged denial makes (detector
	// "signature"); 0 stands for SevMedium.
	Severity Severity
	Reason   string
	Pos      Pos
}

// Verdict is what the supervisor answers for an inspected call.
type Verdict int

const (
	// VerdictAllow lets the call proceed.
	VerdictAllow Verdict = iota + 1
	// VerdictDeny fails the call with an errno.
	VerdictDeny
)

var verdicts = enum[Verdict]{what: "verdict", names: []string{VerdictAllow: "allow", VerdictDeny: "deny"}}

func (v Verdict) String() string { return verdicts.name(v) }

// VerdictRule is one [[rule]] table: a verdict for inspected calls that
// match every non-empty criterion. Rules are tried in order; the first match
// decides.
type VerdictRule struct {
	Name     string
	Syscalls []string // empty: any inspected syscall
	// Paths are globs matched against the path a file syscall names,
	// made absolute against the caller's cwd or dirfd. "*" matches within
	// one path element, "**" across elements.
	Paths []string
	// Families are socket address families (AF_UNIX, AF_INET...), matched
	// against socket's domain argument or the address of connect/bind/sendto.
	Families []int
	// Addresses are matched against a socket address: for AF_UNIX a path
	// glob (an abstract name starts with "@"); for AF_INET/AF_INET6 "IP",
	// "IP:PORT", "CIDR" or "CIDR:PORT" ("[IPv6]:PORT" for v6 with a port).
	Addresses []string
	// Threads are globs matched against the calling thread's name
	// (/proc/PID/task/TID/comm), e.g. "CPU */KVM".
	Threads []string
	// NoAddress, when set, matches only calls that carry no socket
	// address (Request.Sock is nil): sendmsg on a connected socket, say.
	NoAddress bool
	// Args are conditions on the call's arguments, evaluated by the
	// supervisor with the kernel's semantics (low 32 bits unless Wide).
	// A rule with Args names its Syscalls.
	Args []ArgCond
	// Backing are globs matched against what backs the memory the call
	// names: "anon" (anonymous memory), "[heap]", "[stack]", a file's path,
	// "memfd:NAME", or "none" (no memory, e.g. a memory slot being
	// deleted). Set for mmap, mprotect, pkey_mprotect and the KVM memory
	// slot ioctl.
	Backing []string
	// Accel limits the rule to VMs on these accelerators ("kvm", "tcg");
	// empty: any. Under TCG QEMU has executable anonymous memory (its
	// translation buffer) that no KVM VM has; see ForAccel.
	Accel []string
	// Needs limits the rule to VMs whose command line turns on all these
	// features (FeatureUserNet); empty: any.
	Needs []string
	// OwnTarget matches only calls whose process argument (the syscall
	// table's PIDArg: sched_setaffinity's pid, setpriority's who...)
	// names QEMU itself: 0, or one of the threads of QEMU's process.
	OwnTarget bool
	// Limit, when positive, makes an allow rule admit at most that many
	// calls per QEMU process: once it has, the rule no longer matches
	// and a later rule decides (KVM_CREATE_VM once, KVM_CREATE_VCPU once
	// per vCPU the command line can have).
	Limit   int
	Verdict Verdict
	Errno   int // for VerdictDeny
	// Severity grades the finding a deny makes (detector "signature");
	// 0 stands for SevMedium. Only deny rules have one.
	Severity Severity
	// Daemonize makes an allow rule admit only QEMU's daemonizing forks
	// (orch.Engine keeps their count): glibc's fork, from a process's
	// main thread while it has no vCPU, once per process, at most
	// orch.DaemonizeForks in all. Package policy sets it for a command
	// line with -daemonize; a profile file cannot.
	Daemonize bool
	// Ifnames are the interface names a TUNSETIFF may set, exactly
	// ("tap%d" is the kernel's template: it names the next free tap);
	// the call's struct ifreq is read once and performed on kfv's copy
	// of the fd. Package policy sets it for the VM's taps; a profile file
	// cannot.
	Ifnames []string
	Reason  string
	Pos     Pos
}

// Profile is a loaded, validated profile.
type Profile struct {
	Name        string
	Description string
	// Source is the file the profile came from, or "builtin:NAME".
	Source string
	// Extends is, for an overlay (overlay.go), the Source of the profile
	// it stacks on, and ExtendsPos where the overlay says so; "" for a
	// profile of its own.
	Extends    string
	ExtendsPos Pos

	// DefaultAction is what the kernel does with a syscall no SyscallRule
	// matches; DefaultErrno goes with ActDeny.
	DefaultAction Action
	DefaultErrno  int

	Syscalls []SyscallRule
	Rules    []VerdictRule

	// DefaultVerdict answers an inspected call that no VerdictRule
	// matches; DefaultVerdictErrno goes with VerdictDeny.
	DefaultVerdict      Verdict
	DefaultVerdictErrno int

	// Landlock is how hard kfv insists on QEMU's Landlock wall
	// ([defaults] landlock: "required", "best-effort" or "off"; "" when
	// the profile does not say, which is best-effort). A setting of the
	// operator's (--landlock, kfv.toml) wins over it.
	Landlock string

	// HRSCs attribute calls to hypervisor resources, first match wins;
	// Interfaces give calls their layer, first match wins. A profile
	// without any takes the built-in qemu profile's (see orch).
	HRSCs      []HRSC
	Interfaces []Interface
	// Detectors are the behaviour, rate and origin detectors.
	Detectors []Detector
	// HO holds the horizontal orchestrators' policies, at most one per
	// layer.
	HO []HOPolicy
	// Correlate holds the vertical orchestrator's rules, in order.
	Correlate []CorrelateRule

	// Warnings are "FILE:LINE:COL: message" lines about settings that
	// load but loosen the profile or cannot take effect; print them at
	// startup.
	Warnings []string
}

// Accels are the accelerators a rule's accel criterion may name.
var Accels = []string{"kvm", "tcg"}

// Features a rule's needs criterion may name: what a VM's command line
// turns on.
const (
	// FeatureUserNet: user-mode networking (slirp), which connects
	// wherever the guest connects.
	FeatureUserNet = "user-net"
)

// Features are the names a rule's needs criterion may use.
var Features = []string{FeatureUserNet}

// ForAccel returns a copy of p without the verdict rules whose accel
// criterion names none of accels (the accelerators the VM may run on).
// Rules without the criterion are kept.
func ForAccel(p *Profile, accels []string) *Profile { return ForFeatures(p, accels) }

// ForFeatures returns a copy of p for a VM with these accelerators and
// features: rules whose accel criterion names none of them, or whose
// needs criterion names one the VM lacks, are dropped.
func ForFeatures(p *Profile, features []string) *Profile {
	has := map[string]bool{}
	for _, f := range features {
		has[f] = true
	}
	q := *p
	q.Rules = nil
	for _, r := range p.Rules {
		keep := len(r.Accel) == 0
		for _, a := range r.Accel {
			keep = keep || has[a]
		}
		for _, n := range r.Needs {
			keep = keep && has[n]
		}
		if keep {
			q.Rules = append(q.Rules, r)
		}
	}
	return &q
}

// Layers are the KungFuVisor layers a profile may name.
var Layers = []string{"L1", "L2", "L3"}

// HRSC is one [[hrsc]] table: calls that match every non-empty criterion
// are attributed to the resource Name. Tables are tried in order.
type HRSC struct {
	// Name is the resource. A "*" in it stands for what the single "*"
	// of the matching threads glob matched ("vcpu*" with "CPU */KVM"
	// names "CPU 3/KVM" vcpu3).
	Name string
	// Threads are globs on the calling thread's name.
	Threads []string
	// Fds are globs on the targets of the call's fd arguments
	// ("anon_inode:kvm-vcpu:*", "/dev/net/tun"); one must match.
	Fds []string
	// Syscalls limits the table to these calls; empty: any.
	Syscalls []string
	// Numbered requires the "*" of Name to stand for a decimal number.
	Numbered bool
	// Layer is the layer of the resource's calls that no [[interface]]
	// places: "L1", "L2" or "L3"; "" means L2.
	Layer  string
	Reason string
	Pos    Pos
}

// Interface is one [[interface]] table: calls that match every non-empty
// criterion belong to Layer. Tables are tried in order; a call none
// matches takes its resource's layer.
type Interface struct {
	Layer    string
	Syscalls []string
	Fds      []string // globs on fd argument targets; one must match
	Reason   string
	Pos      Pos
}

// Detector names: the kind of a [[detector]] table, what [[ho]]
// detectors and [[correlate]] match.detector name, and what findings
// carry (orch's Finding.Detector, the events' detector field). A new
// detector is a constant here, in DetectorKinds when a [[detector]]
// table configures it, and its code in orch.
const (
	// DetBehaviour: a call its resource never makes in normal operation.
	DetBehaviour = "behaviour"
	// DetRate: more than Threshold calls within Window, per resource and
	// syscall.
	DetRate = "rate"
	// DetOrigin: a call whose instruction pointer lies outside the text
	// of QEMU and its libraries (injected code).
	DetOrigin = "origin"
	// DetSignature: the [[syscall]] and [[rule]] tables.
	DetSignature = "signature"
	// DetMemwatch: QEMU's memory changed (memwatch's integrity scans).
	DetMemwatch = "memwatch"
)

// DetectorKinds are the kinds a [[detector]] table may have. They are
// also the detectors an [[ho]] weighs, all of them when it names none:
// signature's verdict is the rules' own, and memwatch findings are about
// memory, not a call.
var DetectorKinds = []string{DetBehaviour, DetRate, DetOrigin}

// DetectorNames are the names of every detector, sorted.
var DetectorNames = slices.Sorted(slices.Values(append(slices.Clone(DetectorKinds), DetSignature, DetMemwatch)))

// Detector is one [[detector]] table.
type Detector struct {
	Name string
	Kind string // one of DetectorKinds
	// HRSC are name patterns on the resource (required for behaviour,
	// optional for rate: any resource).
	HRSC []string
	// Syscalls: for behaviour, the calls the resources never make
	// (required); for rate, the calls counted (empty: any inspected call).
	Syscalls []string
	// ExceptPaths (behaviour): globs of paths whose calls are not a
	// finding, for what glibc itself does from any thread. The verdict
	// rules still decide the call.
	ExceptPaths []string
	// Threshold and Window (rate): a finding when more than Threshold
	// calls of one resource and syscall fall within Window.
	Threshold int
	Window    time.Duration
	Severity  Severity // defaults: behaviour high, rate medium, origin critical
	Disabled  bool     // enabled = false
	Reason    string
	Pos       Pos
}

// HOPolicy is one [[ho]] table: how the horizontal orchestrator of each
// of Layers turns the detectors' findings on a call into its verdict,
// beyond the signature (the [[syscall]] and [[rule]] verdict).
type HOPolicy struct {
	Layers []string
	// Detectors whose findings the policy weighs, from DetectorKinds;
	// empty: all of DetectorKinds.
	Detectors []string
	// Deny denies a call the rules allow when one of its findings meets
	// it, with DenyErrno (default EACCES). Zero: never.
	Deny      SeverityMatch
	DenyErrno int
	// Hold asks the supervisor to keep an allowed call with a finding
	// that meets it blocked until the VO decides, at most HoldFor;
	// then HoldVerdict applies (default deny, HoldErrno default EACCES).
	Hold        SeverityMatch
	HoldFor     time.Duration
	HoldVerdict Verdict
	HoldErrno   int
	Reason      string
	Pos         Pos
}

// FindingMatch selects findings: every non-empty criterion must hold.
type FindingMatch struct {
	Layers    []string
	HRSC      []string // name patterns
	Detectors []string // from DetectorNames
	Severity  SeverityMatch
	Syscalls  []string
}

// CorrelateRule is one [[correlate]] table: when Count findings that
// Match fall within Window (per resource unless PerVM), the VO orders
// Reactions, in order.
type CorrelateRule struct {
	Name      string
	Match     FindingMatch
	Count     int           // at least 1
	Window    time.Duration // needed when Count > 1
	PerVM     bool          // per = "vm": count across resources
	Reactions []ReactionSpec
	// Once fires the rule at most once in the VO's life; Cooldown keeps
	// it quiet for that long after it fired. At most one of them.
	Once     bool
	Cooldown time.Duration
	Reason   string
	Pos      Pos
}
