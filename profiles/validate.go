package profiles

import (
	"slices"

	"kfv/sysent"
)

// Groups of equivalent calls (sysent.Equivalents): if the supervisor
// dies, every inspected call fails with ENOSYS, and libc and attackers
// fall back to an equivalent (glibc retries clone3 as clone and openat2
// as openat). Inspecting one member while allowing another
// unconditionally therefore leaves a door open exactly when the guard is
// gone. A conditional allow (clone with CLONE_THREAD) is fine: the kernel
// still checks the condition.

// syscallState is what the kernel filter does with one syscall.
type syscallState struct {
	uncond      *SyscallRule // the unconditional rule, if any
	uncondPath  string
	cond        []*SyscallRule
	condPaths   []string
	inspected   bool // some calls reach the supervisor
	allowAlways bool // every call is allowed in the kernel
}

func (d *decoder) validate(p *Profile) {
	d.validateRules(p, d.validateSyscalls(p))
}

// validateSyscalls checks the kernel filter's tables and returns what
// the filter does with each syscall.
func (d *decoder) validateSyscalls(p *Profile) func(string) *syscallState {
	states := map[string]*syscallState{}
	get := func(name string) *syscallState {
		s := states[name]
		if s == nil {
			s = &syscallState{}
			states[name] = s
		}
		return s
	}
	for i := range p.Syscalls {
		r := &p.Syscalls[i]
		path := d.syscallPaths[i]
		for j, name := range r.Names {
			np := index(join(path, "names"), j)
			s := get(name)
			if len(r.Args) == 0 {
				if s.uncond != nil {
					d.errorf(d.loc.val(np), "syscall %q already has an unconditional rule at %s", name, d.loc.val(s.uncondPath))
					continue
				}
				s.uncond, s.uncondPath = r, np
			} else {
				s.cond = append(s.cond, r)
				s.condPaths = append(s.condPaths, np)
			}
		}
	}
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		s := states[name]
		if s.uncond != nil && len(s.cond) > 0 {
			d.errorf(d.loc.val(s.condPaths[0]), "syscall %q has an unconditional rule at %s and a conditional one here: libseccomp lets the unconditional rule win, so the conditions would never apply; keep the conditional rules and let defaults.action decide the rest", name, d.loc.val(s.uncondPath))
		}
		switch {
		case s.uncond != nil:
			s.inspected = s.uncond.Action == ActInspect
			s.allowAlways = s.uncond.Action == ActAllow
		default:
			s.inspected = p.DefaultAction == ActInspect
			for _, r := range s.cond {
				s.inspected = s.inspected || r.Action == ActInspect
			}
		}
	}
	state := func(name string) *syscallState {
		if s, ok := states[name]; ok {
			return s
		}
		return &syscallState{inspected: p.DefaultAction == ActInspect, allowAlways: p.DefaultAction == ActAllow}
	}

	for _, g := range sysent.Equivalents() {
		var inspected string
		for _, n := range g.Names {
			if state(n).inspected {
				inspected = n
				break
			}
		}
		if inspected == "" {
			continue
		}
		for _, n := range g.Names {
			s := state(n)
			if !s.allowAlways {
				continue
			}
			pos := d.loc.val("defaults.action")
			how := "by defaults.action"
			if s.uncond != nil {
				pos = d.loc.val(s.uncondPath)
				how = "unconditionally"
			}
			d.errorf(pos, "syscall %q is allowed %s but %q (%s) is inspected: when the supervisor is gone, inspected calls fail with ENOSYS and callers fall back to %q; inspect or deny it too, or allow it only under conditions", n, how, inspected, g.Effect, n)
		}
	}

	if p.DefaultAction == ActAllow {
		d.warnf(d.loc.val("defaults.action"), `defaults.action = "allow" lets every syscall no [[syscall]] names through the kernel filter`)
	}
	if p.DefaultVerdict == VerdictAllow {
		d.warnf(d.loc.val("defaults.verdict"), `defaults.verdict = "allow" lets every inspected call no [[rule]] matches proceed`)
	}
	return state
}

// validateRules checks the verdict rules against what the kernel filter
// does (state).
func (d *decoder) validateRules(p *Profile, state func(string) *syscallState) {
	for i := range p.Rules {
		r := &p.Rules[i]
		path := d.rulePaths[i]
		for j, name := range r.Syscalls {
			if !state(name).inspected {
				d.warnf(d.loc.val(index(join(path, "syscalls"), j)), "rule %q names syscall %q, which the kernel filter never sends to the supervisor: the rule cannot match it", r.Name, name)
			} else if e, ok := sysent.Lookup(name); ok && r.Verdict == VerdictAllow && e.ContinuesByReference() {
				d.warnf(d.loc.val(index(join(path, "syscalls"), j)), "rule %q allows %q, which kfv does not perform itself: the call continues after the check, and another thread of QEMU can rewrite its path in between; such a rule holds only against a QEMU that does not race its own arguments", r.Name, name)
			}
		}
	}
}
