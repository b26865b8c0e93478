package orch

import (
	"slices"

	"kfv/profiles"
)

// kernelRules mirrors the profile's [[syscall]] tables in Go, so that the
// supervisor knows why the kernel sent it a call. The filter notifies
// more than "inspect" rules: denials that are not silent (so that they are
// logged), execve and execveat always (so the launch can pass), and the
// default action when it is not allow.
type kernelRules struct {
	bySyscall     map[string][]*kernelRule
	defaultAction profiles.Action
	defaultErrno  int
}

type kernelRule struct {
	name, reason string
	action       profiles.Action
	errno        int
	severity     profiles.Severity
	conds        []profiles.ArgCond
}

func newKernelRules(p *profiles.Profile) *kernelRules {
	k := &kernelRules{bySyscall: map[string][]*kernelRule{}, defaultAction: p.DefaultAction, defaultErrno: p.DefaultErrno}
	for i := range p.Syscalls {
		sr := &p.Syscalls[i]
		name := sr.Name
		if name == "" && len(sr.Names) > 0 {
			name = "syscall:" + sr.Names[0]
		}
		kr := &kernelRule{name: name, reason: sr.Reason, action: sr.Action, errno: sr.Errno, severity: severityOr(sr.Severity), conds: slices.Clone(sr.Args)}
		for _, n := range sr.Names {
			k.bySyscall[n] = append(k.bySyscall[n], kr)
		}
	}
	return k
}

// lookup returns the action the profile gives the call in the kernel, and
// the rule that gives it (nil for the default action).
func (k *kernelRules) lookup(r *Request) (profiles.Action, *kernelRule) {
	for _, kr := range k.bySyscall[r.Syscall] {
		if condsHold(kr.conds, &r.Args, r.PID) {
			return kr.action, kr
		}
	}
	return k.defaultAction, nil
}

// condsHold evaluates argument conditions as the compiled filter does:
// on the low 32 bits unless Wide.
// pid is QEMU's process id, for conditions on "$pid".
func condsHold(conds []profiles.ArgCond, args *[6]uint64, pid int) bool {
	for i := range conds {
		if !condHolds(&conds[i], args[conds[i].Index], pid) {
			return false
		}
	}
	return true
}

func condHolds(c *profiles.ArgCond, v uint64, pid int) bool {
	mask := ^uint64(0)
	if !c.Wide {
		mask = 0xffffffff
	}
	v &= mask
	if len(c.Values) == 0 {
		return false
	}
	x := c.Values[0] & mask
	if c.Self {
		x = uint64(pid) & mask
	}
	switch c.Op {
	case profiles.OpEq:
		return v == x
	case profiles.OpNe:
		return v != x
	case profiles.OpIn:
		for _, w := range c.Values {
			if v == w&mask {
				return true
			}
		}
		return false
	case profiles.OpMaskedEq:
		m := c.Mask & mask
		return v&m == x&m
	case profiles.OpLt:
		return v < x
	case profiles.OpLe:
		return v <= x
	case profiles.OpGt:
		return v > x
	case profiles.OpGe:
		return v >= x
	}
	return false
}
