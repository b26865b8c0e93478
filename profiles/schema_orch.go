// The decision plane's tables, as TOML (see docs/profiles.md):
//
//	[[hrsc]]                     # attribution: first match names the resource
//	name = "vcpu*"               # required; "*" is what the threads glob's "*" matched
//	threads = ["CPU */KVM"]      # thread-name globs
//	fds = ["anon_inode:kvm-vcpu:*"]      # globs on fd argument targets
//	syscalls = ["ioctl"]         # optional: only these calls
//	numbered = true              # the "*" must be a decimal number
//	layer = "L2"                 # layer of its calls no [[interface]] places
//	reason = "..."               # required
//
//	[[interface]]                # layers: first match gives the call's layer
//	layer = "L1"                 # required: L1 | L2 | L3
//	syscalls = ["mmap"]          # and/or
//	fds = ["/dev/kvm"]
//	reason = "..."
//
//	[[detector]]
//	name = "vcpu-no-files"       # required, unique
//	kind = "behaviour"           # required: behaviour | rate | origin
//	hrsc = ["vcpu*"]             # behaviour (required), rate (optional)
//	syscalls = ["openat"]        # behaviour (required), rate (optional)
//	threshold = 500              # rate: more than this many calls...
//	window = "1s"                # rate: ...within this long
//	severity = "high"            # default: behaviour high, rate medium, origin critical
//	enabled = false              # optional, default true
//	reason = "..."
//
//	[[ho]]
//	layers = ["L1", "L2"]        # required
//	detectors = ["origin", "behaviour"]  # default: behaviour, origin, rate
//	deny = ">=high"              # deny allowed calls with such a finding
//	errno = "EACCES"             # with deny; default EACCES
//	hold = ">=medium"            # hold allowed calls with such a finding...
//	hold_for = "2s"              # ...at most this long (required with hold)
//	hold_verdict = "deny"        # then: allow | deny (default deny)
//	hold_errno = "EACCES"
//	reason = "..."
//
//	[[correlate]]
//	name = "repeated-denials"    # required, unique
//	match = { layer = "L1", hrsc = "vcpu*", detector = "signature", severity = ">=medium", syscall = "openat" }
//	count = 3                    # default 1
//	window = "10s"               # required when count > 1
//	per = "hrsc"                 # hrsc (default) | vm
//	reactions = ["pause", "link_down:all-nics"]  # required, in order
//	once = true                  # or cooldown = "60s"
//	reason = "..."

package profiles

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"kfv/profiles/glob"
)

var (
	hrscKeys      = []string{"fds", "layer", "name", "numbered", "reason", "syscalls", "threads"}
	interfaceKeys = []string{"fds", "layer", "reason", "syscalls"}
	detectorKeys  = []string{"enabled", "except_paths", "hrsc", "kind", "name", "reason", "severity", "syscalls", "threshold", "window"}
	hoKeys        = []string{"deny", "detectors", "errno", "hold", "hold_errno", "hold_for", "hold_verdict", "layers", "reason"}
	correlateKeys = []string{"count", "cooldown", "match", "name", "once", "per", "reactions", "reason", "window"}
	matchKeys     = []string{"detector", "hrsc", "layer", "severity", "syscall"}
)

// maxCount bounds rate thresholds (the rate detector counts in
// buckets, so the bound is about sense, not memory).
const maxCount = 100000

// maxCorrelateCount bounds [[correlate]] counts: the VO keeps the last
// count findings of each resource, to name them in the reaction.
const maxCorrelateCount = 1000

// eacces is the default errno of the HO's own denials.
const eacces = 13

// decisionPlane decodes the [[hrsc]], [[interface]], [[detector]], [[ho]]
// and [[correlate]] tables.
func (d *decoder) decisionPlane(p *Profile, tree map[string]any) {
	for i, m := range d.tables(tree, "", "hrsc") {
		p.HRSCs = append(p.HRSCs, d.hrsc(m, index("hrsc", i)))
	}
	for i, m := range d.tables(tree, "", "interface") {
		p.Interfaces = append(p.Interfaces, d.iface(m, index("interface", i)))
	}
	names := map[string]Pos{}
	var origin *Detector
	for i, m := range d.tables(tree, "", "detector") {
		path := index("detector", i)
		det := d.detector(m, path)
		d.unique(names, det.Name, det.Pos, path, "detector")
		if det.Kind == DetOrigin {
			if origin != nil {
				d.errorf(d.loc.val(join(path, "kind")), "a second origin detector (the first is at %s): there is one text of QEMU to compare with", origin.Pos)
			} else {
				origin = &det
			}
		}
		p.Detectors = append(p.Detectors, det)
	}
	layers := map[string]Pos{}
	for i, m := range d.tables(tree, "", "ho") {
		path := index("ho", i)
		ho := d.ho(m, path)
		for j, l := range ho.Layers {
			if prev, dup := layers[l]; dup {
				d.errorf(d.elemVal(join(path, "layers"), j), "layer %s already has an [[ho]] policy at %s", l, prev)
			} else {
				layers[l] = ho.Pos
			}
		}
		p.HO = append(p.HO, ho)
	}
	names = map[string]Pos{}
	for i, m := range d.tables(tree, "", "correlate") {
		path := index("correlate", i)
		c := d.correlate(m, path)
		d.unique(names, c.Name, c.Pos, path, "correlate rule")
		p.Correlate = append(p.Correlate, c)
	}
}

// elemVal is where element j of the array at path starts, or where the
// value at path starts when it is not an array (a key taking one string
// or an array).
func (d *decoder) elemVal(path string, j int) Pos {
	if s, ok := d.loc.spans[index(path, j)]; ok && s.val.Line > 0 {
		return s.val
	}
	return d.loc.val(path)
}

func (d *decoder) unique(seen map[string]Pos, name string, pos Pos, path, what string) {
	if name == "" {
		return
	}
	if prev, dup := seen[name]; dup {
		d.errorf(d.loc.val(join(path, "name")), "%s name %q already used at %s", what, name, prev)
		return
	}
	seen[name] = pos
}

// requiredName reads a table's name key, which must be present and not blank.
func (d *decoder) requiredName(m map[string]any, path, what string, pos Pos) string {
	name, ok := d.str(m, path, "name")
	switch {
	case !ok && m["name"] == nil:
		d.errorf(pos, "%s has no name", what)
	case ok && strings.TrimSpace(name) == "":
		d.errorf(d.loc.val(join(path, "name")), "name must not be empty")
	}
	return name
}

func (d *decoder) syscallList(m map[string]any, path, key string) []string {
	out := d.strList(m, path, key, func(s, p string) {
		if _, ok := SyscallNumber(s); !ok {
			d.errorf(d.loc.val(p), "unknown syscall %q", s)
		}
	})
	return slices.DeleteFunc(out, func(s string) bool {
		_, ok := SyscallNumber(s)
		return !ok
	})
}

func (d *decoder) globList(m map[string]any, path, key string) []string {
	return d.strList(m, path, key, func(s, p string) {
		if _, err := glob.Compile(s); err != nil {
			d.errorf(d.loc.val(p), "%v", err)
		}
	})
}

func (d *decoder) namePatterns(v []string, path string) {
	for i, s := range v {
		if err := CheckNamePattern(s); err != nil {
			d.errorf(d.loc.val(index(path, i)), "%v", err)
		}
	}
}

// layer reads a layer name at path.
func (d *decoder) layerName(s, path string) bool {
	if !slices.Contains(Layers, s) {
		d.errorf(d.loc.val(path), "unknown layer %q (want L1, L2 or L3)", s)
		return false
	}
	return true
}

func (d *decoder) severity(m map[string]any, path string) Severity {
	s, ok := d.str(m, path, "severity")
	if !ok {
		return 0
	}
	sev, err := ParseSeverity(s)
	if err != nil {
		d.errorf(d.loc.val(join(path, "severity")), "severity: %v", err)
	}
	return sev
}

func (d *decoder) sevMatch(m map[string]any, path, key string) SeverityMatch {
	s, ok := d.str(m, path, key)
	if !ok {
		return SeverityMatch{}
	}
	sm, err := ParseSeverityMatch(s)
	if err != nil {
		d.errorf(d.loc.val(join(path, key)), "%s: %v", key, err)
	}
	return sm
}

func (d *decoder) duration(m map[string]any, path, key string) time.Duration {
	s, ok := d.str(m, path, key)
	if !ok {
		return 0
	}
	dur, err := ParseDuration(s)
	if err != nil {
		d.errorf(d.loc.val(join(path, key)), "%s: %v", key, err)
	}
	return dur
}

// integer reads an integer key in [lo, hi]; ok is false when absent or bad.
func (d *decoder) integer(m map[string]any, path, key string, lo, hi int64) (int, bool) {
	v, ok := m[key]
	if !ok {
		return 0, false
	}
	n, ok := v.(int64)
	if !ok {
		d.errorf(d.loc.val(join(path, key)), "%s: want an integer, got %s", key, tomlType(v))
		return 0, false
	}
	if n < lo || n > hi {
		d.errorf(d.loc.val(join(path, key)), "%s %d out of range %d..%d", key, n, lo, hi)
		return 0, false
	}
	return int(n), true
}

// strOrList reads a key that takes one string or an array of strings.
func (d *decoder) strOrList(m map[string]any, path, key string, each func(s, path string)) []string {
	v, ok := m[key]
	if !ok {
		return nil
	}
	if s, ok := v.(string); ok {
		if each != nil {
			each(s, join(path, key))
		}
		return []string{s}
	}
	if _, ok := v.([]any); !ok {
		d.errorf(d.loc.val(join(path, key)), "%s: want a string or an array of strings, got %s", key, tomlType(v))
		return nil
	}
	return d.strList(m, path, key, each)
}

// captureGlob reports whether a threads glob can feed a "*" in an hRSC
// name: exactly one "*" and no other wildcard, so that what it matched
// is the text between a literal prefix and suffix.
func captureGlob(s string) bool {
	return strings.Count(s, "*") == 1 && !strings.ContainsAny(s, `?[\`)
}

func (d *decoder) hrsc(m map[string]any, path string) HRSC {
	h := HRSC{Pos: d.loc.key(path)}
	d.checkKeys(m, path, " in [[hrsc]]", hrscKeys)
	h.Name = d.requiredName(m, path, "[[hrsc]]", h.Pos)
	h.Threads = d.globList(m, path, "threads")
	h.Fds = d.globList(m, path, "fds")
	h.Syscalls = d.syscallList(m, path, "syscalls")
	h.Numbered = d.boolean(m, path, "numbered")
	if s, ok := d.str(m, path, "layer"); ok && d.layerName(s, join(path, "layer")) {
		h.Layer = s
	}
	h.Reason = d.reason(m, path, "[[hrsc]]")
	if m["threads"] == nil && m["fds"] == nil {
		d.errorf(h.Pos, "[[hrsc]] needs threads or fds: without either it would take every call")
	}
	switch n := strings.Count(h.Name, "*"); {
	case n > 1:
		d.errorf(d.loc.val(join(path, "name")), "name %q has more than one \"*\"", h.Name)
	case n == 1:
		if len(h.Threads) == 0 {
			d.errorf(d.loc.val(join(path, "name")), "name %q has a \"*\" but no threads glob to fill it", h.Name)
		}
		for i, t := range h.Threads {
			if !captureGlob(t) {
				d.errorf(d.loc.val(index(join(path, "threads"), i)), "threads glob %q must have exactly one \"*\" and no other wildcard to fill the \"*\" of name %q", t, h.Name)
			}
		}
	case h.Numbered:
		d.errorf(d.loc.key(join(path, "numbered")), "numbered needs a \"*\" in name")
	}
	return h
}

func (d *decoder) iface(m map[string]any, path string) Interface {
	f := Interface{Pos: d.loc.key(path)}
	d.checkKeys(m, path, " in [[interface]]", interfaceKeys)
	if s, ok := d.str(m, path, "layer"); ok {
		if d.layerName(s, join(path, "layer")) {
			f.Layer = s
		}
	} else if m["layer"] == nil {
		d.errorf(f.Pos, "[[interface]] has no layer")
	}
	f.Syscalls = d.syscallList(m, path, "syscalls")
	f.Fds = d.globList(m, path, "fds")
	if m["syscalls"] == nil && m["fds"] == nil {
		d.errorf(f.Pos, "[[interface]] needs syscalls or fds")
	}
	f.Reason = d.reason(m, path, "[[interface]]")
	return f
}

func (d *decoder) detector(m map[string]any, path string) Detector {
	det := Detector{Pos: d.loc.key(path)}
	d.checkKeys(m, path, " in [[detector]]", detectorKeys)
	det.Name = d.requiredName(m, path, "[[detector]]", det.Pos)
	if s, ok := d.str(m, path, "kind"); ok {
		if slices.Contains(DetectorKinds, s) {
			det.Kind = s
		} else {
			d.errorf(d.loc.val(join(path, "kind")), "unknown detector kind %q (want %s)", s, orList(DetectorKinds))
		}
	}
	d.required(m, path, "kind", "[[detector]]")
	det.HRSC = d.strList(m, path, "hrsc", nil)
	d.namePatterns(det.HRSC, join(path, "hrsc"))
	det.Syscalls = d.syscallList(m, path, "syscalls")
	det.ExceptPaths = d.globList(m, path, "except_paths")
	det.Threshold, _ = d.integer(m, path, "threshold", 1, maxCount)
	det.Window = d.duration(m, path, "window")
	det.Severity = d.severity(m, path)
	if v, ok := m["enabled"]; ok {
		if b, ok := v.(bool); ok {
			det.Disabled = !b
		} else {
			d.errorf(d.loc.val(join(path, "enabled")), "enabled: want true or false, got %s", tomlType(v))
		}
	}
	det.Reason = d.reason(m, path, "[[detector]]")
	only := func(key, kinds string) {
		if _, ok := m[key]; ok {
			d.errorf(d.loc.key(join(path, key)), "%s is only for %s detectors", key, kinds)
		}
	}
	switch det.Kind {
	case DetBehaviour:
		if m["hrsc"] == nil {
			d.errorf(det.Pos, "behaviour detector %q has no hrsc: whose behaviour?", det.Name)
		}
		if m["syscalls"] == nil {
			d.errorf(det.Pos, "behaviour detector %q has no syscalls: the calls its resources never make", det.Name)
		}
		only("threshold", "rate")
		only("window", "rate")
		if det.Severity == 0 {
			det.Severity = SevHigh
		}
	case DetRate:
		if m["threshold"] == nil {
			d.errorf(det.Pos, "rate detector %q has no threshold", det.Name)
		}
		if m["window"] == nil {
			d.errorf(det.Pos, "rate detector %q has no window", det.Name)
		}
		only("except_paths", "behaviour")
		if det.Severity == 0 {
			det.Severity = SevMedium
		}
	case DetOrigin:
		only("hrsc", "behaviour and rate")
		only("except_paths", "behaviour")
		only("syscalls", "behaviour and rate")
		only("threshold", "rate")
		only("window", "rate")
		if det.Severity == 0 {
			det.Severity = SevCritical
		}
	}
	return det
}

func (d *decoder) ho(m map[string]any, path string) HOPolicy {
	h := HOPolicy{Pos: d.loc.key(path), DenyErrno: eacces, HoldVerdict: VerdictDeny, HoldErrno: eacces}
	d.checkKeys(m, path, " in [[ho]]", hoKeys)
	h.Layers = d.strOrList(m, path, "layers", func(s, p string) { d.layerName(s, p) })
	if m["layers"] == nil {
		d.errorf(h.Pos, "[[ho]] has no layers")
	}
	weighed := orList(slices.Sorted(slices.Values(DetectorKinds)))
	h.Detectors = d.strOrList(m, path, "detectors", func(s, p string) {
		switch {
		case s == DetSignature:
			d.errorf(d.loc.val(p), "the signature detector's verdict is the rules' own: list %s", weighed)
		case s == DetMemwatch:
			d.errorf(d.loc.val(p), "memwatch findings are about memory, not a call: they go to [[correlate]] rules")
		case !slices.Contains(DetectorKinds, s):
			d.errorf(d.loc.val(p), "unknown detector %q (want %s)", s, weighed)
		}
	})
	h.Deny = d.sevMatch(m, path, "deny")
	if n, ok := d.errno(m, path, "errno"); ok {
		if m["deny"] == nil {
			d.errorf(d.loc.key(join(path, "errno")), "errno is only allowed with deny")
		}
		h.DenyErrno = n
	}
	h.Hold = d.sevMatch(m, path, "hold")
	h.HoldFor = d.duration(m, path, "hold_for")
	if v, ok := choice(d, m, path, "hold_verdict", &verdicts); ok {
		h.HoldVerdict = v
	}
	if n, ok := d.errno(m, path, "hold_errno"); ok {
		if h.HoldVerdict != VerdictDeny {
			d.errorf(d.loc.key(join(path, "hold_errno")), `hold_errno is only allowed with hold_verdict = "deny"`)
		}
		h.HoldErrno = n
	}
	if h.HoldVerdict != VerdictDeny {
		h.HoldErrno = 0
	}
	if m["hold"] != nil && m["hold_for"] == nil {
		d.errorf(d.loc.key(join(path, "hold")), "hold needs hold_for: how long a thread may wait for the VO")
	}
	for _, k := range []string{"hold_for", "hold_verdict", "hold_errno"} {
		if m[k] != nil && m["hold"] == nil {
			d.errorf(d.loc.key(join(path, k)), "%s is only allowed with hold", k)
		}
	}
	if m["deny"] == nil && m["hold"] == nil {
		d.errorf(h.Pos, "[[ho]] needs deny or hold: without them it only repeats the rules")
	}
	h.Reason = d.reason(m, path, "[[ho]]")
	return h
}

func (d *decoder) correlate(m map[string]any, path string) CorrelateRule {
	c := CorrelateRule{Pos: d.loc.key(path), Count: 1}
	d.checkKeys(m, path, " in [[correlate]]", correlateKeys)
	c.Name = d.requiredName(m, path, "[[correlate]]", c.Pos)
	if v, ok := m["match"]; ok {
		if mm, ok := v.(map[string]any); ok {
			c.Match = d.findingMatch(mm, join(path, "match"))
		} else {
			d.errorf(d.loc.val(join(path, "match")), "match: want a table, got %s", tomlType(v))
		}
	} else {
		d.errorf(c.Pos, "[[correlate]] has no match: say which findings it counts (match = {} counts all)")
	}
	if n, ok := d.integer(m, path, "count", 1, maxCorrelateCount); ok {
		c.Count = n
	}
	c.Window = d.duration(m, path, "window")
	if c.Count > 1 && m["window"] == nil {
		d.errorf(d.loc.key(join(path, "count")), "count = %d needs a window: within how long?", c.Count)
	}
	if s, ok := d.str(m, path, "per"); ok {
		switch s {
		case "hrsc":
		case "vm":
			c.PerVM = true
		default:
			d.errorf(d.loc.val(join(path, "per")), "per: want \"hrsc\" (count each resource apart) or \"vm\" (count them together), got %q", s)
		}
	}
	for i, s := range d.strList(m, path, "reactions", nil) {
		p := index(join(path, "reactions"), i)
		r, err := ParseReaction(s)
		if err != nil {
			d.errorf(d.loc.val(p), "%v", err)
			continue
		}
		if r.Kind == ReactDeny || r.Kind == ReactHold {
			d.errorf(d.loc.val(p), "%s is a verdict on one call, given by the rules and [[ho]]; a [[correlate]] rule orders wider reactions", r.Kind)
			continue
		}
		c.Reactions = append(c.Reactions, r)
	}
	if v, ok := m["reactions"]; !ok {
		d.errorf(c.Pos, "[[correlate]] has no reactions")
	} else if arr, ok := v.([]any); ok && len(arr) == 0 {
		d.errorf(d.loc.val(join(path, "reactions")), "reactions must not be empty")
	}
	c.Once = d.boolean(m, path, "once")
	c.Cooldown = d.duration(m, path, "cooldown")
	if c.Once && m["cooldown"] != nil {
		d.errorf(d.loc.key(join(path, "cooldown")), "once and cooldown exclude each other: once never fires again, cooldown fires again after a pause")
	}
	c.Reason = d.reason(m, path, "[[correlate]]")
	return c
}

func (d *decoder) findingMatch(m map[string]any, path string) FindingMatch {
	var f FindingMatch
	d.checkKeys(m, path, " in match", matchKeys)
	f.Layers = d.strOrList(m, path, "layer", func(s, p string) { d.layerName(s, p) })
	f.HRSC = d.strOrList(m, path, "hrsc", func(s, p string) {
		if err := CheckNamePattern(s); err != nil {
			d.errorf(d.loc.val(p), "%v", err)
		}
	})
	f.Detectors = d.strOrList(m, path, "detector", func(s, p string) {
		if !slices.Contains(DetectorNames, s) {
			d.errorf(d.loc.val(p), "unknown detector %q (want one of %s)", s, strings.Join(DetectorNames, ", "))
		}
	})
	f.Severity = d.sevMatch(m, path, "severity")
	f.Syscalls = d.strOrList(m, path, "syscall", func(s, p string) {
		if _, ok := SyscallNumber(s); !ok {
			d.errorf(d.loc.val(p), "unknown syscall %q", s)
		}
	})
	return f
}

// String renders a match for messages and events.
func (f *FindingMatch) String() string {
	var parts []string
	add := func(k string, v []string) {
		if len(v) > 0 {
			parts = append(parts, fmt.Sprintf("%s=%s", k, strings.Join(v, "|")))
		}
	}
	add("layer", f.Layers)
	add("hrsc", f.HRSC)
	add("detector", f.Detectors)
	if f.Severity.Op != 0 {
		parts = append(parts, "severity"+f.Severity.String())
	}
	add("syscall", f.Syscalls)
	if len(parts) == 0 {
		return "any finding"
	}
	return strings.Join(parts, " ")
}
