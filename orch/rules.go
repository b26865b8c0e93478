package orch

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"kfv/profiles"
	"kfv/profiles/glob"
	"kfv/sysent"
)

// afUnix is AF_UNIX; orch imports no unix package.
const afUnix = 1

// fdPathArg says, for calls that name no path but act on a file through
// an fd, which argument's fd target (Request.Fds) path rules match when
// Request.Path is empty: mmap's fd (argument 4), ioctl's fd (argument 0).
// For mprotect and pkey_mprotect, which take an address, the supervisor
// sets Request.Path to the file backing the address (from
// /proc/PID/maps) when there is one; anonymous memory has no path.
var fdPathArg = map[string]int{
	"mmap":  4,
	"ioctl": 0,
}

// Rules is a Decider that applies a profile's [[syscall]] and [[rule]]
// tables in order, first match wins, and the profile's default verdict
// when none matches: the signature detector alone, with the profile's
// attribution. A denial carries one finding of detector "signature".
// Engine adds the other detectors and the horizontal orchestrators.
// Rules is immutable after NewRules but for the count of daemonizing
// forks (a rule with Daemonize) and of what rules with a Limit admitted,
// and safe for concurrent use.
type Rules struct {
	attr          *Attributor
	kernel        *kernelRules
	rules         []rule
	defaultAction profiles.Verdict
	defaultErrno  int
	// daemon counts the forks rules with Daemonize admit; nil when the
	// profile has none.
	daemon *daemonizer
	// limits counts what rules with a Limit admitted, per rule and QEMU
	// process.
	limits limiter
}

type rule struct {
	name, reason string
	action       profiles.Verdict
	errno        int
	severity     profiles.Severity

	syscalls  []string // empty: any
	paths     []*glob.Glob
	families  []int
	addresses []profiles.Address
	noAddress bool
	threads   []*glob.Glob
	args      []profiles.ArgCond
	backing   []*glob.Glob
	daemonize bool // admits a call only as a daemonizing fork (daemonizer)
	ownTarget bool // matches only calls whose pid argument names QEMU
	limit     int  // admits at most this many calls per process (limiter); 0: no bound
	ifnames   []string
}

// NewRules compiles the verdict rules of p. It fails only on a profile
// that did not come from profiles.Parse (which checks the same things).
func NewRules(p *profiles.Profile) (*Rules, error) {
	if p == nil {
		return nil, errors.New("compile rules: nil profile")
	}
	attr, err := NewAttributor(p)
	if err != nil {
		return nil, fmt.Errorf("compile rules: %w", err)
	}
	rs := &Rules{attr: attr, kernel: newKernelRules(p), defaultAction: profiles.VerdictDeny, defaultErrno: p.DefaultVerdictErrno}
	if p.DefaultVerdict == profiles.VerdictAllow {
		rs.defaultAction, rs.defaultErrno = profiles.VerdictAllow, 0
	}
	var errs []error
	for i := range p.Rules {
		r, err := compileRule(&p.Rules[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("compile rule %q (%s): %w", p.Rules[i].Name, p.Rules[i].Pos, err))
			continue
		}
		rs.rules = append(rs.rules, r)
		if r.daemonize && rs.daemon == nil {
			rs.daemon = &daemonizer{}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rs, nil
}

func compileRule(pr *profiles.VerdictRule) (rule, error) {
	r := rule{
		name:      pr.Name,
		reason:    pr.Reason,
		severity:  severityOr(pr.Severity),
		syscalls:  slices.Clone(pr.Syscalls),
		families:  slices.Clone(pr.Families),
		noAddress: pr.NoAddress,
		args:      slices.Clone(pr.Args),
		daemonize: pr.Daemonize,
		ownTarget: pr.OwnTarget,
		limit:     pr.Limit,
		ifnames:   slices.Clone(pr.Ifnames),
	}
	if pr.Daemonize && pr.Verdict != profiles.VerdictAllow {
		return rule{}, errors.New("a daemonize rule must allow")
	}
	if pr.Limit > 0 && pr.Verdict != profiles.VerdictAllow {
		return rule{}, errors.New("a rule with a limit must allow")
	}
	for _, s := range pr.Backing {
		g, err := glob.Compile(s)
		if err != nil {
			return rule{}, err
		}
		r.backing = append(r.backing, g)
	}
	switch pr.Verdict {
	case profiles.VerdictAllow:
		r.action = profiles.VerdictAllow
	case profiles.VerdictDeny:
		r.action, r.errno = profiles.VerdictDeny, pr.Errno
	default:
		return rule{}, fmt.Errorf("bad verdict %v", pr.Verdict)
	}
	for _, s := range pr.Paths {
		g, err := glob.Compile(s)
		if err != nil {
			return rule{}, err
		}
		r.paths = append(r.paths, g)
	}
	for _, s := range pr.Threads {
		g, err := glob.Compile(s)
		if err != nil {
			return rule{}, err
		}
		r.threads = append(r.threads, g)
	}
	for _, s := range pr.Addresses {
		a, err := profiles.ParseAddress(s)
		if err != nil {
			return rule{}, err
		}
		r.addresses = append(r.addresses, a)
	}
	return r, nil
}

// Decide implements Decider.Decide.
func (rs *Rules) Decide(r *Request) Decision {
	layer, hrsc := rs.attr.Attribute(r)
	d, sev := rs.signature(r)
	d.Layer, d.HRSC = layer, hrsc
	if d.Action == profiles.VerdictDeny {
		d.Findings = []Finding{signatureFinding(r, &d, sev)}
	}
	return d
}

// Attribute returns the layer and resource the profile gives r.
func (rs *Rules) Attribute(r *Request) (Layer, string) { return rs.attr.Attribute(r) }

// signature applies the tables to r: the verdict, without layer and
// resource, and for a denial the severity of its finding.
func (rs *Rules) signature(r *Request) (Decision, profiles.Severity) {
	// First what the profile says of the call in the kernel: a logged
	// denial or a forced notification is decided here, as the kernel
	// would have; only inspected calls go on to the verdict rules.
	switch act, kr := rs.kernel.lookup(r); act {
	case profiles.ActDeny:
		d := Decision{Action: profiles.VerdictDeny, Errno: rs.kernel.defaultErrno, Rule: "defaults.action", Reason: "the profile denies syscalls it does not list"}
		sev := defaultSeverity(r)
		if kr != nil {
			d.Errno, d.Rule, d.Reason, sev = kr.errno, kr.name, kr.reason, kr.severity
		}
		return d, sev
	case profiles.ActAllow:
		d := Decision{Action: profiles.VerdictAllow, Rule: "defaults.action", Reason: "the profile allows syscalls it does not list"}
		if kr != nil {
			d.Rule, d.Reason = kr.name, kr.reason
		}
		return d, 0
	}
	for i := range rs.rules {
		ru := &rs.rules[i]
		if ru.match(r) {
			if ru.daemonize && !rs.daemon.admit(r) {
				continue // not (or no longer) a daemonizing fork: later rules decide
			}
			if ru.limit > 0 && !rs.limits.admit(i, r.PID, ru.limit+rs.limits.raised(ru.name)) {
				continue // this process had its share: later rules decide
			}
			return Decision{Action: ru.action, Errno: ru.errno, Rule: ru.name, Reason: ru.reason}, ru.severity
		}
	}
	return Decision{Action: rs.defaultAction, Errno: rs.defaultErrno, Rule: "default", Reason: "no rule matched"}, defaultSeverity(r)
}

// defaultSeverity grades a denial no rule of the profile names: medium,
// so that the escalation ladder counts it, when the call reaches what
// attackers are after (files by path, programs, other processes,
// executable memory, addresses and sockets: sysent's Reaches); low for
// any other call, a QEMU path the profile does not know yet that must not
// pause a VM, and for a read-only open of a host tunable (hostFact). A
// profile grades the calls it names itself.
func defaultSeverity(r *Request) profiles.Severity {
	e, ok := sysent.Lookup(r.Syscall)
	if !ok || !e.Reaches() || hostFact(e, r) {
		return profiles.SevLow
	}
	return profiles.SevMedium
}

// hostFact says r opens a host tunable or fact read-only: a path under
// /proc/sys or /sys, opened O_RDONLY without O_CREAT or O_TRUNC. Another
// QEMU version, build or library may read one the profile has not
// measured (QEMU 10.0 added /proc/sys/vm/max_map_count); it is neither a
// secret nor another VM's, so its denial is QEMU's surprise, not an
// attacker's goal. (It is graded here and not by a low-severity rule in
// the profile so that the rules kfv derives for the VM, placed after the
// profile's, still admit such a file where the VM needs it: -runas reads
// /proc/sys/kernel/ngroups_max.)
func hostFact(e *sysent.Entry, r *Request) bool {
	if e.Effect != sysent.OpenFiles || e.FlagsArg < 0 {
		return false
	}
	if !strings.HasPrefix(r.Path, "/proc/sys/") && !strings.HasPrefix(r.Path, "/sys/") {
		return false
	}
	const oAccmode, oCreat, oTrunc = 0x3, 0x40, 0x200
	return r.Args[e.FlagsArg]&(oAccmode|oCreat|oTrunc) == 0
}

// signatureFinding is the finding a denial by the tables makes.
func signatureFinding(r *Request, d *Decision, sev profiles.Severity) Finding {
	return Finding{
		Time: r.Time, Layer: d.Layer, HRSC: d.HRSC, Detector: profiles.DetSignature,
		Severity: sev, Syscall: r.Syscall, TID: r.TID, Rule: d.Rule, Detail: d.Reason,
	}
}

// severityOr is s, or profiles.SevMedium when the profile gave none.
func severityOr(s profiles.Severity) profiles.Severity {
	if s == 0 {
		return profiles.SevMedium
	}
	return s
}

// match reports whether every criterion the rule has holds for r. A
// criterion about something the request lacks (no path, no address, no
// thread name) does not hold.
func (ru *rule) match(r *Request) bool {
	if len(ru.syscalls) > 0 && !slices.Contains(ru.syscalls, r.Syscall) {
		return false
	}
	if len(ru.threads) > 0 && !matchAny(ru.threads, r.Thread) {
		return false
	}
	if len(ru.paths) > 0 && !matchAny(ru.paths, requestPath(r)) {
		return false
	}
	if ru.noAddress && r.Sock != nil {
		return false
	}
	if len(ru.families) > 0 && (r.Sock == nil || !slices.Contains(ru.families, r.Sock.Family)) {
		return false
	}
	if len(ru.addresses) > 0 && !ru.matchAddress(r.Sock) {
		return false
	}
	if len(ru.args) > 0 && !condsHold(ru.args, &r.Args, r.PID) {
		return false
	}
	if len(ru.backing) > 0 && !matchAny(ru.backing, r.Backing) {
		return false
	}
	if ru.ownTarget && !r.OwnTarget {
		return false
	}
	// An interface name is matched exactly, and only on a TUNSETIFF
	// whose struct was read: "tap%d" is the kernel's template, not a
	// glob.
	if len(ru.ifnames) > 0 && (r.Ifreq == nil || !slices.Contains(ru.ifnames, r.Ifname)) {
		return false
	}
	return true
}

// limiter counts the calls rules with a Limit admitted, per rule and per
// QEMU process (a restarted QEMU is a new process and starts afresh).
type limiter struct {
	mu     sync.Mutex
	counts map[[2]int]int // {rule index, pid} -> calls admitted
	extra  map[string]int // rule name -> calls added to its limit at run time
}

// raised is what RaiseLimit added to the limit of rule name.
func (l *limiter) raised(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.extra[name]
}

// RaiseLimit lets the rule named name, which has a Limit, admit n calls
// more per process from now on: what the VM's manager asked for at run
// time (a vCPU hot-plugged over the monitor). It reports whether the
// profile has such a rule.
func (rs *Rules) RaiseLimit(name string, n int) bool {
	if !slices.ContainsFunc(rs.rules, func(r rule) bool { return r.name == name && r.limit > 0 }) {
		return false
	}
	rs.limits.mu.Lock()
	defer rs.limits.mu.Unlock()
	if rs.limits.extra == nil {
		rs.limits.extra = map[string]int{}
	}
	rs.limits.extra[name] += n
	return true
}

// inheritLimits takes over old's counts and raises for the rules of rs
// that have old's names (Engine.Inherit).
func (rs *Rules) inheritLimits(old *Rules) {
	at := map[string]int{}
	for i, r := range rs.rules {
		if _, dup := at[r.name]; !dup {
			at[r.name] = i
		}
	}
	old.limits.mu.Lock()
	defer old.limits.mu.Unlock()
	rs.limits.mu.Lock()
	defer rs.limits.mu.Unlock()
	for k, n := range old.limits.counts {
		j, ok := at[old.rules[k[0]].name]
		if !ok {
			continue
		}
		if rs.limits.counts == nil {
			rs.limits.counts = map[[2]int]int{}
		}
		rs.limits.counts[[2]int{j, k[1]}] += n
	}
	for name, n := range old.limits.extra {
		if _, ok := at[name]; !ok {
			continue
		}
		if rs.limits.extra == nil {
			rs.limits.extra = map[string]int{}
		}
		rs.limits.extra[name] += n
	}
}

// admit counts one call of process pid for rule i and reports whether it
// is within limit.
func (l *limiter) admit(i, pid, limit int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := [2]int{i, pid}
	if l.counts[k] >= limit {
		return false
	}
	if l.counts == nil {
		l.counts = map[[2]int]int{}
	}
	l.counts[k]++
	return true
}

// requestPath is the path path rules match: Request.Path, or for calls in
// fdPathArg the target of the fd argument when it is a path.
func requestPath(r *Request) string {
	if r.Path != "" {
		return r.Path
	}
	if i, ok := fdPathArg[r.Syscall]; ok {
		if t := r.Fds[i]; len(t) > 0 && t[0] == '/' {
			return t
		}
	}
	return ""
}

func matchAny(gs []*glob.Glob, s string) bool {
	if s == "" {
		return false
	}
	for _, g := range gs {
		if g.Match(s) {
			return true
		}
	}
	return false
}

func (ru *rule) matchAddress(s *SockAddr) bool {
	if s == nil {
		return false
	}
	for i := range ru.addresses {
		a := &ru.addresses[i]
		switch {
		case s.Family == afUnix:
			if s.Path != "" && a.MatchUnix(s.Path) {
				return true
			}
		case s.Addr.IsValid():
			if a.MatchInet(s.Addr) {
				return true
			}
		}
	}
	return false
}
