package orch

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"kfv/profiles"
	"kfv/profiles/glob"
)

// Attribution maps a call to a KungFuVisor layer and a hypervisor
// resource (hRSC): which agent answers for it. Both come from the
// profile: the [[hrsc]] tables name the resource from the calling
// thread's name and the targets of its fd arguments, the [[interface]]
// tables give the call's layer. QEMU names its threads when started with
// -name ...,debug-threads=on; without it every thread is called like the
// main one and all calls land on the main thread's resource.
//
// A call no [[hrsc]] table takes belongs to "thread:NAME" ("thread:?"
// when the name could not be read), at L2 unless an [[interface]] says
// otherwise.
//
// L3 (monitor commands and what they cause) needs the QMP command in
// flight when the call was made, which the supervisor's QMP connection
// knows; until it is passed in, calls made by the monitor thread are
// L1 or L2 by what they do, with hRSC "monitor".

// Attributor attributes calls with a profile's tables. It is safe for
// concurrent use.
type Attributor struct {
	hrscs  []hrscEntry
	ifaces []ifaceEntry

	// namesMu guards names: resource names built from a thread name
	// ("vcpu" + "3"), kept so that attributing a call allocates only the
	// first time. Bounded: thread names are QEMU's (or an attacker's)
	// to choose.
	namesMu sync.Mutex
	names   map[nameKey]string
}

// maxNames bounds Attributor.names.
const maxNames = 4096

type nameKey struct {
	entry   int // index in hrscs; -1 for the "thread:" fallback
	capture string
}

type hrscEntry struct {
	name string
	// pre and post are the name around its "*"; capture is set when
	// there is one, and caps holds each threads glob's literal prefix
	// and suffix.
	pre, post string
	capture   bool
	caps      []affix
	threads   []*glob.Glob
	fds       []*glob.Glob
	syscalls  []string
	numbered  bool
	layer     Layer
}

type affix struct{ pre, post string }

type ifaceEntry struct {
	layer    Layer
	syscalls map[string]bool
	fds      []*glob.Glob
}

// builtinTables are the built-in qemu profile's [[hrsc]] and
// [[interface]] tables, for profiles that have none.
var builtinTables = sync.OnceValues(func() (*profiles.Profile, error) {
	return profiles.Builtin("qemu")
})

// NewAttributor compiles the attribution tables of p. A profile without
// [[hrsc]] tables takes the built-in qemu profile's, and one without
// [[interface]] tables likewise.
func NewAttributor(p *profiles.Profile) (*Attributor, error) {
	hrscs, ifaces := p.HRSCs, p.Interfaces
	if len(hrscs) == 0 || len(ifaces) == 0 {
		b, err := builtinTables()
		if err != nil {
			return nil, fmt.Errorf("load built-in attribution tables: %w", err)
		}
		if len(hrscs) == 0 {
			hrscs = b.HRSCs
		}
		if len(ifaces) == 0 {
			ifaces = b.Interfaces
		}
	}
	a := &Attributor{names: map[nameKey]string{}}
	for i := range hrscs {
		e, err := compileHRSC(&hrscs[i])
		if err != nil {
			return nil, fmt.Errorf("compile [[hrsc]] %q (%s): %w", hrscs[i].Name, hrscs[i].Pos, err)
		}
		a.hrscs = append(a.hrscs, e)
	}
	for i := range ifaces {
		f := &ifaces[i]
		e := ifaceEntry{layer: layerOf(f.Layer)}
		if len(f.Syscalls) > 0 {
			e.syscalls = map[string]bool{}
			for _, s := range f.Syscalls {
				e.syscalls[s] = true
			}
		}
		gs, err := compileGlobs(f.Fds)
		if err != nil {
			return nil, fmt.Errorf("compile [[interface]] (%s): %w", f.Pos, err)
		}
		e.fds = gs
		a.ifaces = append(a.ifaces, e)
	}
	return a, nil
}

func compileHRSC(h *profiles.HRSC) (hrscEntry, error) {
	e := hrscEntry{name: h.Name, syscalls: h.Syscalls, numbered: h.Numbered, layer: layerOf(h.Layer)}
	var err error
	if e.threads, err = compileGlobs(h.Threads); err != nil {
		return e, err
	}
	if e.fds, err = compileGlobs(h.Fds); err != nil {
		return e, err
	}
	if pre, post, ok := strings.Cut(h.Name, "*"); ok {
		e.pre, e.post, e.capture = pre, post, true
		for _, t := range h.Threads {
			tp, ts, ok := strings.Cut(t, "*")
			if !ok || strings.ContainsAny(t, `?[\`) || strings.Contains(ts, "*") {
				return e, fmt.Errorf("threads glob %q cannot fill the \"*\" of %q", t, h.Name)
			}
			e.caps = append(e.caps, affix{tp, ts})
		}
	}
	return e, nil
}

func compileGlobs(ss []string) ([]*glob.Glob, error) {
	var out []*glob.Glob
	for _, s := range ss {
		g, err := glob.Compile(s)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// layerOf turns a profile's layer name into a Layer; "" is L2.
func layerOf(s string) Layer {
	if s == "" {
		return L2
	}
	return Layer(s)
}

// Attribute returns the layer and hypervisor resource of a request.
func (a *Attributor) Attribute(r *Request) (Layer, string) {
	hrsc, layer := a.resource(r)
	for i := range a.ifaces {
		f := &a.ifaces[i]
		if f.syscalls != nil && !f.syscalls[r.Syscall] {
			continue
		}
		if len(f.fds) > 0 && !fdMatch(f.fds, r.Fds) {
			continue
		}
		return f.layer, hrsc
	}
	return layer, hrsc
}

// resource returns the hRSC of a request and the layer its table gives.
func (a *Attributor) resource(r *Request) (string, Layer) {
	for i := range a.hrscs {
		e := &a.hrscs[i]
		if len(e.syscalls) > 0 && !contains(e.syscalls, r.Syscall) {
			continue
		}
		if len(e.fds) > 0 && !fdMatch(e.fds, r.Fds) {
			continue
		}
		if len(e.threads) == 0 {
			return e.name, e.layer
		}
		if !e.capture {
			if matchAny(e.threads, r.Thread) {
				return e.name, e.layer
			}
			continue
		}
		for _, c := range e.caps {
			t := r.Thread
			if len(t) < len(c.pre)+len(c.post) || !strings.HasPrefix(t, c.pre) || !strings.HasSuffix(t, c.post) {
				continue
			}
			mid := t[len(c.pre) : len(t)-len(c.post)]
			if e.numbered && !decimal(mid) {
				continue
			}
			return a.intern(i, mid, e.pre, e.post), e.layer
		}
	}
	if r.Thread == "" {
		return "thread:?", L2
	}
	return a.intern(-1, r.Thread, "thread:", ""), L2
}

// intern returns pre+mid+post, built once per (entry, mid) while the
// table has room.
func (a *Attributor) intern(entry int, mid, pre, post string) string {
	k := nameKey{entry, mid}
	a.namesMu.Lock()
	defer a.namesMu.Unlock()
	if s, ok := a.names[k]; ok {
		return s
	}
	s := pre + mid + post
	if len(a.names) < maxNames {
		// Key on a copy: mid is a slice of the request's thread name.
		a.names[nameKey{entry, strings.Clone(mid)}] = s
	}
	return s
}

func decimal(s string) bool {
	if s == "" {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fdMatch reports whether the target of some fd argument matches one
// of gs.
func fdMatch(gs []*glob.Glob, fds map[int]string) bool {
	for _, t := range fds {
		if matchAny(gs, t) {
			return true
		}
	}
	return false
}

// defaultAttributor attributes with the built-in profile's tables.
var defaultAttributor = sync.OnceValue(func() *Attributor {
	a, err := NewAttributor(&profiles.Profile{})
	if err != nil {
		// The built-in profile is embedded and its loading is tested;
		// should it fail anyway, every call is "thread:NAME" at L2.
		return &Attributor{names: map[nameKey]string{}}
	}
	return a
})

// Attribute returns the layer and hypervisor resource of a request by
// the built-in qemu profile's tables. Deciders attribute with their own
// profile's (Attributor.Attribute).
func Attribute(r *Request) (Layer, string) {
	return defaultAttributor().Attribute(r)
}
