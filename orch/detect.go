package orch

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"kfv/profiles"
	"kfv/profiles/glob"
)

// Call is one request as the agent of its resource sees it: attributed,
// with the signature verdict taken.
type Call struct {
	Req   *Request
	Time  time.Time // Req.Time, or the engine's clock when unset
	Layer Layer
	HRSC  string
	// Signature is the verdict of the [[syscall]] and [[rule]] tables.
	Signature Decision
}

// Detector looks at one call and appends its findings to fs. Detect runs
// on the notification path: it must answer from memory, fast, and
// allocate only when it finds something.
type Detector interface {
	Detect(c *Call, fs []Finding) []Finding
}

// finding fills the fields every finding about a call shares.
func (c *Call) finding(detector, rule string, sev profiles.Severity, detail string) Finding {
	return Finding{
		Time: c.Time, Layer: c.Layer, HRSC: c.HRSC, Detector: detector, Severity: sev,
		Syscall: c.Req.Syscall, TID: c.Req.TID, Rule: rule, Detail: detail,
	}
}

// AddrRange is a range of QEMU's address space, [Start, End).
type AddrRange struct {
	Start, End uint64
	Path       string // what is mapped there, for messages
}

// originDetector finds calls whose instruction pointer lies outside the
// executable mappings of QEMU and its libraries: a syscall instruction
// in injected code.
type originDetector struct {
	name   string
	sev    profiles.Severity
	reason string
	// text is nil until the supervisor has set it: until then origin is
	// not judged.
	text atomic.Pointer[[]AddrRange]
}

func (o *originDetector) setText(ranges []AddrRange) {
	rs := slices.Clone(ranges)
	rs = slices.DeleteFunc(rs, func(r AddrRange) bool { return r.End <= r.Start })
	slices.SortFunc(rs, func(a, b AddrRange) int { return cmp.Compare(a.Start, b.Start) })
	// Merge overlapping and adjacent ranges, so that a binary search
	// finds the one range an address can be in.
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	o.text.Store(&out)
}

// addText adds [start, end) to the text, if the text has been set.
func (o *originDetector) addText(start, end uint64, path string) {
	for {
		old := o.text.Load()
		if old == nil {
			return
		}
		rs := append(slices.Clone(*old), AddrRange{Start: start, End: end, Path: path})
		n := &originDetector{}
		n.setText(rs)
		if o.text.CompareAndSwap(old, n.text.Load()) {
			return
		}
	}
}

// Constants of mmap and mprotect (orch imports no unix).
const (
	protExecBit       = 0x4
	mapFixed          = 0x10
	mapFixedNoReplace = 0x100000
	pageSize          = 4096
)

// newFileText returns the range an allowed call makes executable, when
// it is file-backed code at an address known before the call returns:
// mmap with MAP_FIXED (how the dynamic loader places a library's text)
// or mprotect. Anonymous memory never counts as text: under TCG the
// translation buffer is writable and executable, so code there may be
// the attacker's.
func newFileText(r *Request) (start, end uint64, ok bool) {
	if r.Args[2]&protExecBit == 0 || !strings.HasPrefix(r.Backing, "/") || r.Args[0] == 0 || r.Args[1] == 0 {
		return 0, 0, false
	}
	switch r.Syscall {
	case "mmap":
		if r.Args[3]&(mapFixed|mapFixedNoReplace) == 0 {
			return 0, 0, false
		}
	case "mprotect", "pkey_mprotect":
	default:
		return 0, 0, false
	}
	start = r.Args[0]
	end = start + (r.Args[1]+pageSize-1)&^(pageSize-1)
	if end <= start {
		return 0, 0, false
	}
	return start, end, true
}

// inText reports whether the syscall instruction that left ip behind
// lies in a text range (rs sorted and merged). The kernel reports the
// address after the instruction, so the byte before ip is looked up.
func inText(rs []AddrRange, ip uint64) bool {
	if ip == 0 {
		return false
	}
	at := ip - 1
	// The first range that ends after at.
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End > at })
	return i < len(rs) && rs[i].Start <= at
}

// Detect implements Detector.Detect.
func (o *originDetector) Detect(c *Call, fs []Finding) []Finding {
	p := o.text.Load()
	if p == nil || c.Req.IP == 0 || inText(*p, c.Req.IP) {
		return fs
	}
	return append(fs, c.finding(profiles.DetOrigin, o.name, o.sev,
		fmt.Sprintf("syscall from %#x, outside the text of QEMU and its libraries: %s", c.Req.IP, o.reason)))
}

// behaviourDetector finds calls a resource never makes.
type behaviourDetector struct {
	name, reason string
	sev          profiles.Severity
	hrsc         []string // name patterns
	syscalls     map[string]bool
	except       []*glob.Glob // paths whose calls are not a finding
}

// Detect implements Detector.Detect.
func (b *behaviourDetector) Detect(c *Call, fs []Finding) []Finding {
	if !b.syscalls[c.Req.Syscall] || !matchNames(b.hrsc, c.HRSC) {
		return fs
	}
	for _, g := range b.except {
		if g.Match(c.Req.Path) {
			return fs
		}
	}
	return append(fs, c.finding(profiles.DetBehaviour, b.name, b.sev, b.reason))
}

func matchNames(patterns []string, s string) bool {
	for _, p := range patterns {
		if profiles.MatchName(p, s) {
			return true
		}
	}
	return false
}

// rateDetector finds bursts: more than threshold calls of one resource
// and syscall within window. Calls are counted in rateBuckets slots of
// window/rateBuckets each, so the window slides in steps of that size.
// One finding per window while the burst lasts.
type rateDetector struct {
	name, reason string
	sev          profiles.Severity
	hrsc         []string        // name patterns; empty: any
	syscalls     map[string]bool // nil: any
	threshold    int
	window       time.Duration
	detail       string

	// mu guards states.
	mu     sync.Mutex
	states map[rateKey]*rateState
}

const (
	rateBuckets = 16
	// maxRateKeys bounds the resources and syscalls counted apart;
	// beyond it, new ones share one count (the resource name comes from
	// thread names, which the guest's attacker may choose).
	maxRateKeys = 4096
)

type rateKey struct{ hrsc, syscall string }

type rateState struct {
	slots    [rateBuckets]int64
	counts   [rateBuckets]uint32
	last     time.Time // last call counted
	lastFire time.Time
}

// Detect implements Detector.Detect.
func (d *rateDetector) Detect(c *Call, fs []Finding) []Finding {
	if d.syscalls != nil && !d.syscalls[c.Req.Syscall] {
		return fs
	}
	if len(d.hrsc) > 0 && !matchNames(d.hrsc, c.HRSC) {
		return fs
	}
	d.mu.Lock()
	fire := d.countLocked(rateKey{c.HRSC, c.Req.Syscall}, c.Time)
	d.mu.Unlock()
	if !fire {
		return fs
	}
	return append(fs, c.finding(profiles.DetRate, d.name, d.sev, d.detail))
}

// countLocked counts one call at t and reports whether it makes a burst
// to report.
//
// Preconditions: d.mu is held.
func (d *rateDetector) countLocked(k rateKey, t time.Time) bool {
	st := d.states[k]
	if st == nil {
		if len(d.states) >= maxRateKeys {
			d.sweepLocked(t)
		}
		if len(d.states) >= maxRateKeys {
			k = rateKey{"*", "*"}
			st = d.states[k]
		}
		if st == nil {
			st = &rateState{}
			d.states[rateKey{k.hrsc, k.syscall}] = st
		}
	}
	width := int64(d.window) / rateBuckets
	if width < 1 {
		width = 1
	}
	slot := t.UnixNano() / width
	i := int(uint64(slot) % rateBuckets)
	if st.slots[i] != slot {
		st.slots[i], st.counts[i] = slot, 0
	}
	st.counts[i]++
	st.last = t
	var n uint64
	for j := range st.slots {
		if st.slots[j] > slot-rateBuckets && st.slots[j] <= slot {
			n += uint64(st.counts[j])
		}
	}
	if n <= uint64(d.threshold) {
		return false
	}
	if !st.lastFire.IsZero() && t.Sub(st.lastFire) < d.window {
		return false
	}
	st.lastFire = t
	return true
}

// sweepLocked forgets the counts of resources quiet for a window.
//
// Preconditions: d.mu is held.
func (d *rateDetector) sweepLocked(t time.Time) {
	for k, st := range d.states {
		if t.Sub(st.last) > d.window {
			delete(d.states, k)
		}
	}
}

// The detectors implement Detector.
var (
	_ Detector = (*originDetector)(nil)
	_ Detector = (*behaviourDetector)(nil)
	_ Detector = (*rateDetector)(nil)
)

// newDetectors compiles the profile's enabled [[detector]] tables, by
// kind; origin is nil when the profile has none.
func newDetectors(p *profiles.Profile) (origin *originDetector, bs []*behaviourDetector, rs []*rateDetector) {
	for i := range p.Detectors {
		pd := &p.Detectors[i]
		if pd.Disabled {
			continue
		}
		switch pd.Kind {
		case profiles.DetOrigin:
			origin = &originDetector{name: pd.Name, sev: severityOr(pd.Severity), reason: pd.Reason}
		case profiles.DetBehaviour:
			b := &behaviourDetector{name: pd.Name, reason: pd.Reason, sev: severityOr(pd.Severity),
				hrsc: slices.Clone(pd.HRSC), syscalls: set(pd.Syscalls)}
			for _, p := range pd.ExceptPaths {
				if g, err := glob.Compile(p); err == nil { // the profile checked it; a bad one excepts nothing
					b.except = append(b.except, g)
				}
			}
			bs = append(bs, b)
		case profiles.DetRate:
			rs = append(rs, &rateDetector{name: pd.Name, reason: pd.Reason, sev: severityOr(pd.Severity),
				hrsc: slices.Clone(pd.HRSC), syscalls: set(pd.Syscalls), threshold: pd.Threshold, window: pd.Window,
				detail: fmt.Sprintf("more than %d calls within %s: %s", pd.Threshold, pd.Window, pd.Reason),
				states: map[rateKey]*rateState{}})
		}
	}
	return origin, bs, rs
}

// set makes a set of ss; nil when ss is empty.
func set(ss []string) map[string]bool {
	if len(ss) == 0 {
		return nil
	}
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}
