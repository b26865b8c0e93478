package orch

import (
	"fmt"
	"slices"
	"time"

	"kfv/profiles"
)

// Engine is the KungFuVisor decision plane for inspected calls: it
// attributes each call to its resource and layer (the agent that
// answers for it), runs the detectors (signature, origin, behaviour,
// rate), and lets the horizontal orchestrator of the call's layer turn
// their findings into the verdict. Findings go back in the Decision, for
// the supervisor to pass to the VO beside the notification loop.
//
// Engine is safe for concurrent use; Decide answers from memory only.
type Engine struct {
	rules *Rules
	// The detectors by type, called directly rather than through the
	// Detector interface: a Call passed to an interface method escapes
	// to the heap, and Decide runs on every notified call.
	origin    *originDetector
	behaviour []*behaviourDetector
	rate      []*rateDetector
	hos       map[Layer]*ho
	now       func() time.Time
}

// NewEngine compiles p's decision plane. now is the clock for requests
// without a time (nil: time.Now).
func NewEngine(p *profiles.Profile, now func() time.Time) (*Engine, error) {
	rs, err := NewRules(p)
	if err != nil {
		return nil, fmt.Errorf("compile engine: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	e := &Engine{rules: rs, hos: newHOs(p), now: now}
	e.origin, e.behaviour, e.rate = newDetectors(p)
	return e, nil
}

// SetText gives the origin detector the executable mappings of QEMU and
// its libraries (and the vDSO). Until it is called, origin is not judged.
// Decide itself adds the file-backed code it allows at a known address
// (mmap with MAP_FIXED, mprotect), which is how the dynamic loader maps
// a library; call SetText again with the whole set when QEMU has mapped
// code otherwise. Safe to call while Decide runs.
func (e *Engine) SetText(ranges []AddrRange) {
	if e.origin != nil {
		e.origin.setText(ranges)
	}
}

// ResetText forgets the code ranges: origin is not judged until SetText
// is called again. Call it before QEMU is started anew (a restart maps its
// code at other addresses).
func (e *Engine) ResetText() {
	if e.origin != nil {
		e.origin.text.Store(nil)
	}
}

// ResetDaemonize forgets the daemonizing forks admitted so far: call it
// before QEMU is started anew (a restart daemonizes again).
func (e *Engine) ResetDaemonize() {
	if e.rules.daemon != nil {
		e.rules.daemon.reset()
	}
}

// RaiseLimit raises the limit of a rule with one (Rules.RaiseLimit).
func (e *Engine) RaiseLimit(name string, n int) bool { return e.rules.RaiseLimit(name, n) }

// JudgesOrigin reports whether the profile has an enabled origin
// detector, so whether SetText is worth calling.
func (e *Engine) JudgesOrigin() bool { return e.origin != nil }

// Attribute returns the layer and resource the profile gives r.
func (e *Engine) Attribute(r *Request) (Layer, string) { return e.rules.attr.Attribute(r) }

// Decide implements Decider.Decide.
func (e *Engine) Decide(r *Request) Decision {
	c := Call{Req: r, Time: r.Time}
	if c.Time.IsZero() {
		c.Time = e.now()
	}
	c.Layer, c.HRSC = e.rules.attr.Attribute(r)
	d, sev := e.rules.signature(r)
	d.Layer, d.HRSC = c.Layer, c.HRSC
	c.Signature = d

	var fs []Finding
	if d.Action == profiles.VerdictDeny {
		f := signatureFinding(r, &d, sev)
		f.Time = c.Time
		fs = append(fs, f)
	}
	// Origin first: a finding of injected code leads the list.
	if e.origin != nil {
		fs = e.origin.Detect(&c, fs)
	}
	for _, b := range e.behaviour {
		fs = b.Detect(&c, fs)
	}
	for _, r := range e.rate {
		fs = r.Detect(&c, fs)
	}
	d = e.hos[c.Layer].verdict(d, fs)
	d.Findings = fs
	if e.origin != nil && d.Action == profiles.VerdictAllow && !d.Hold {
		// A library loaded now (a QEMU module opened with dlopen) runs
		// its first syscalls before the supervisor could reread the
		// mappings: count its text from the call that maps it.
		if start, end, ok := newFileText(r); ok {
			e.origin.addText(start, end, r.Backing)
		}
	}
	return d
}

// Inherit takes over what old, the engine of the same VM under the
// profile it replaces, counted at run time, so that a profile applied to
// a running VM hands QEMU nothing back: the calls rules with a Limit
// admitted and the raises of those limits (by rule name: a rule both
// profiles have keeps its count, a rule new to e starts from none), the
// daemonizing forks admitted, and the code ranges origin judges by. The
// detectors' and orchestrators' windows start afresh. Call it before e
// decides its first call.
func (e *Engine) Inherit(old *Engine) {
	e.rules.inheritLimits(old.rules)
	if e.rules.daemon != nil && old.rules.daemon != nil {
		old.rules.daemon.mu.Lock()
		forked := slices.Clone(old.rules.daemon.forked)
		old.rules.daemon.mu.Unlock()
		e.rules.daemon.mu.Lock()
		e.rules.daemon.forked = forked
		e.rules.daemon.mu.Unlock()
	}
	if e.origin != nil && old.origin != nil {
		if t := old.origin.text.Load(); t != nil {
			e.origin.text.Store(t)
		}
	}
}
