package orch

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"kfv/profiles"
)

// VO is the vertical orchestrator: it correlates findings across layers
// and over time with the profile's [[correlate]] rules and orders the
// reactions wider than one call (pause, link down, device unplug,
// restart, kill, scrub).
//
// Each rule counts the findings it matches, per resource unless it says
// per = "vm", and fires when count of them fall within its window: it
// orders its reactions, naming the findings counted as their chain, and
// starts counting afresh. once keeps a rule from firing twice in the
// VO's life; cooldown keeps it quiet for a while after it fired.
//
// The VO runs beside the notification loop, never in it: the supervisor
// passes it each Decision's findings (and memwatch's) from one goroutine.
// Its methods are safe for concurrent use all the same.
type VO struct {
	now func() time.Time

	// mu guards the rules' state.
	mu    sync.Mutex
	rules []*voRule
}

type voRule struct {
	name      string
	match     profiles.FindingMatch
	count     int
	window    time.Duration
	perVM     bool
	once      bool
	cooldown  time.Duration
	reactions []profiles.ReactionSpec

	groups   map[string]*voGroup
	fired    bool      // reactions ordered at least once
	lastFire time.Time // when reactions were last ordered
}

// voGroup is the state of one rule for one resource (or the whole VM).
type voGroup struct {
	// ring holds the last findings counted, oldest at head.
	ring     []Finding
	head, n  int
	last     time.Time // newest finding counted
	tripped  bool      // the count was reached at least once
	lastTrip time.Time // when it was last reached
}

// maxGroups bounds the resources a rule counts apart; beyond it, new
// ones share one group.
const maxGroups = 1024

// NewVO compiles p's [[correlate]] rules. now is the clock for findings
// without a time (nil: time.Now).
func NewVO(p *profiles.Profile, now func() time.Time) (*VO, error) {
	if p == nil {
		return nil, fmt.Errorf("compile correlation rules: nil profile")
	}
	if now == nil {
		now = time.Now
	}
	v := &VO{now: now}
	for i := range p.Correlate {
		c := &p.Correlate[i]
		if c.Count < 1 || len(c.Reactions) == 0 {
			return nil, fmt.Errorf("compile correlation rule %q (%s): count %d, %d reactions", c.Name, c.Pos, c.Count, len(c.Reactions))
		}
		v.rules = append(v.rules, &voRule{
			name: c.Name, match: c.Match, count: c.Count, window: c.Window, perVM: c.PerVM,
			once: c.Once, cooldown: c.Cooldown, reactions: slices.Clone(c.Reactions),
			groups: map[string]*voGroup{},
		})
	}
	return v, nil
}

// Observe takes one finding and returns the reactions to carry out, in
// order: rules in profile order, each rule's reactions as listed, a
// reaction that an earlier rule already ordered for this finding left
// out.
func (v *VO) Observe(f Finding) []Reaction {
	v.mu.Lock()
	defer v.mu.Unlock()
	out, _ := v.observeLocked(f, nil)
	return out
}

// Resolve decides a held call from the finding that made the HO hold it:
// VerdictDeny when a rule that matches the finding fires on it, or fired
// for the same resource within its window (the VO has already seen this
// attack); VerdictAllow otherwise. The finding is counted like any other, and
// the reactions are those of Observe.
func (v *VO) Resolve(held Finding) (profiles.Verdict, []Reaction) {
	return v.ResolveAll([]Finding{held})
}

// ResolveAll is Resolve for a held call with several findings (all of a
// Decision's): VerdictDeny when any of them is correlated.
func (v *VO) ResolveAll(fs []Finding) (profiles.Verdict, []Reaction) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []Reaction
	deny := false
	for _, f := range fs {
		var d bool
		out, d = v.observeLocked(f, out)
		deny = deny || d
	}
	if deny {
		return profiles.VerdictDeny, out
	}
	return profiles.VerdictAllow, out
}

// Reset forgets every count and firing, as for a new QEMU (restart).
func (v *VO) Reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.rules {
		r.groups = map[string]*voGroup{}
		r.fired, r.lastFire = false, time.Time{}
	}
}

// observeLocked counts f in every rule that matches it and appends the
// reactions of those that fire to out. correlated reports whether a rule
// that matches f reached its count now, or within its window before,
// for f's resource.
//
// Preconditions: v.mu is held.
func (v *VO) observeLocked(f Finding, out []Reaction) (_ []Reaction, correlated bool) {
	if f.Time.IsZero() {
		f.Time = v.now()
	}
	for _, r := range v.rules {
		if !matchFinding(&r.match, &f) {
			continue
		}
		g := r.group(f)
		if g.tripped && (r.window == 0 || f.Time.Sub(g.lastTrip) <= r.window) {
			correlated = true
		}
		chain, tripped := r.add(g, f)
		if !tripped {
			continue
		}
		correlated = true
		if r.once && r.fired || r.cooldown > 0 && r.fired && f.Time.Sub(r.lastFire) < r.cooldown {
			continue
		}
		r.fired, r.lastFire = true, f.Time
		for _, spec := range r.reactions {
			if slices.ContainsFunc(out, func(x Reaction) bool { return x.Kind == spec.Kind && x.Target == spec.Target }) {
				continue
			}
			out = append(out, Reaction{Kind: spec.Kind, Target: spec.Target, Rule: r.name, Chain: chain})
		}
	}
	return out, correlated
}

// group returns the state f counts in.
func (r *voRule) group(f Finding) *voGroup {
	key := f.HRSC
	if r.perVM {
		key = ""
	}
	g := r.groups[key]
	if g != nil {
		return g
	}
	if len(r.groups) >= maxGroups {
		for k, old := range r.groups {
			if r.window > 0 && f.Time.Sub(old.last) > r.window && (!old.tripped || f.Time.Sub(old.lastTrip) > r.window) {
				delete(r.groups, k)
			}
		}
	}
	if len(r.groups) >= maxGroups {
		key = "*"
		if g = r.groups[key]; g != nil {
			return g
		}
	}
	g = &voGroup{ring: make([]Finding, r.count)}
	r.groups[key] = g
	return g
}

// add counts f in g. When the count is reached within the window it
// returns the findings counted, oldest first, and empties the group.
func (r *voRule) add(g *voGroup, f Finding) ([]Finding, bool) {
	// Forget findings that left the window.
	for g.n > 0 && r.window > 0 && f.Time.Sub(g.ring[g.head].Time) > r.window {
		g.ring[g.head] = Finding{}
		g.head = (g.head + 1) % len(g.ring)
		g.n--
	}
	g.ring[(g.head+g.n)%len(g.ring)] = f
	g.n++
	if f.Time.After(g.last) {
		g.last = f.Time
	}
	if g.n < r.count {
		return nil, false
	}
	chain := make([]Finding, 0, g.n)
	for i := 0; i < g.n; i++ {
		j := (g.head + i) % len(g.ring)
		chain = append(chain, g.ring[j])
		g.ring[j] = Finding{}
	}
	g.head, g.n = 0, 0
	g.tripped, g.lastTrip = true, f.Time
	return chain, true
}

// matchFinding reports whether f meets every criterion of m.
func matchFinding(m *profiles.FindingMatch, f *Finding) bool {
	if len(m.Layers) > 0 && !slices.Contains(m.Layers, string(f.Layer)) {
		return false
	}
	if len(m.Detectors) > 0 && !slices.Contains(m.Detectors, f.Detector) {
		return false
	}
	if !m.Severity.Match(f.Severity) {
		return false
	}
	if len(m.Syscalls) > 0 && !slices.Contains(m.Syscalls, f.Syscall) {
		return false
	}
	if len(m.HRSC) > 0 && !matchNames(m.HRSC, f.HRSC) {
		return false
	}
	return true
}
