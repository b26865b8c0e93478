// The profile schema, as TOML:
//
//	name = "qemu"                # required, non-empty
//	description = "..."          # optional
//
//	[defaults]                   # optional; these are the defaults
//	action = "inspect"           # kernel action for syscalls no [[syscall]] matches:
//	                             # "allow" | "deny" | "inspect"
//	errno = "EPERM"              # only with action = "deny"
//	verdict = "deny"             # supervisor verdict for inspected calls no [[rule]]
//	                             # matches: "allow" | "deny"
//	verdict_errno = "EPERM"      # only with verdict = "deny"
//
//	[[syscall]]                  # what the kernel filter does; any number
//	names = ["read", "write"]    # required: x86_64 syscall names
//	action = "allow"             # required: "allow" | "deny" | "inspect"
//	errno = "ENOSYS"             # only with "deny"; default EPERM
//	reason = "hot path"          # required, non-empty
//	args = [                     # optional conditions, ANDed
//	  { index = 1, op = "in", values = ["KVM_RUN", "KVM_IRQ_LINE_STATUS"] },
//	  { index = 2, op = "masked_eq", mask = "PROT_EXEC", value = 0 },
//	]
//
//	[[rule]]                     # verdicts for inspected calls; first match wins
//	name = "no-exec"             # required, unique
//	syscalls = ["execve"]        # optional: any inspected syscall when absent
//	paths = ["/usr/share/qemu/**"]          # optional absolute path globs
//	families = ["AF_UNIX"]       # optional address families (names or numbers)
//	addresses = ["10.0.0.0/8:53", "@qemu-*"] # optional, see ParseAddress
//	no_address = true            # optional: only calls without a socket address
//	threads = ["CPU */KVM"]      # optional thread-name globs
//	accel = ["tcg"]              # optional: only for VMs on these accelerators (kvm, tcg)
//	needs = ["user-net"]         # optional: only for VMs whose command line turns these on
//	args = [{ index = 2, op = "masked_eq", mask = "O_ACCMODE", value = "O_RDONLY" }]
//	                             # optional argument conditions, as in [[syscall]];
//	                             # needs syscalls (argument positions differ per call)
//	                             # value = "$pid" stands for QEMU's own process id
//	backing = ["anon", "memfd:*"] # optional globs on what backs the memory the call
//	                             # names (mmap, mprotect, KVM memory slots)
//	own_target = true            # optional: only calls whose pid argument names
//	                             # QEMU itself (0 or one of its threads)
//	limit = 1                    # optional, allow only: at most this many calls
//	                             # per QEMU process, then the rule stops matching
//	verdict = "deny"             # required: "allow" | "deny"
//	errno = "EACCES"             # only with "deny"; default EPERM
//	reason = "QEMU runs no programs"        # required, non-empty
//
// Argument conditions: index is 0..5. op is one of eq, in, masked_eq, and,
// with wide = true, ne, lt, le, gt, ge. "in" takes values = [...] (at least
// one); the others take value = x; masked_eq also takes mask = x and holds
// when arg & mask == value. A value is an integer, or a string holding a
// number ("0xc008ae67", "-100"), a constant name ("KVM_RUN", "PROT_EXEC")
// or names and numbers joined with "|" ("CLONE_VM|CLONE_THREAD").
//
// Without wide, the low 32 bits of the argument are compared: int
// arguments (fds, flags, prot, ioctl requests) are read by the kernel
// from their low 32 bits, so comparing 64 bits could be sidestepped by
// setting the high ones. Values must then fit 32 bits (negative ones such
// as AT_FDCWD are taken as their 32-bit two's complement).
//
// Errno values are names ("EPERM") or numbers (1..4095).

package profiles

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"kfv/profiles/glob"
	"kfv/sysent"
)

// Keys each table allows. Unknown keys are errors: a misspelt key would
// otherwise be a silently ignored rule.
var (
	topKeys      = []string{"correlate", "defaults", "description", "detector", "ho", "hrsc", "interface", "name", "rule", "syscall"}
	overlayKeys  = []string{"description", "extends", "name", "rule"}
	defaultsKeys = []string{"action", "errno", "landlock", "verdict", "verdict_errno"}
	syscallKeys  = []string{"action", "args", "errno", "name", "names", "reason", "severity", "silent"}
	argKeys      = []string{"index", "mask", "op", "value", "values", "wide"}
	ruleKeys     = []string{"accel", "addresses", "args", "backing", "errno", "families", "limit", "name", "needs", "no_address", "own_target", "paths", "reason", "severity", "syscalls", "threads", "verdict"}
)

const defaultErrno = 1 // EPERM

// decoder turns the generic TOML tree into a Profile, collecting every
// problem with its position.
type decoder struct {
	file string
	loc  *locator
	errs ErrorList
	warn ErrorList

	// Locator paths of p.Syscalls and p.Rules, index for index (tables
	// that failed to decode are left out of both).
	syscallPaths []string
	rulePaths    []string
}

func (d *decoder) errorf(pos Pos, format string, args ...any) {
	d.errs = append(d.errs, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) warnf(pos Pos, format string, args ...any) {
	d.warn = append(d.warn, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// Parse reads a profile from TOML source. name is the file name used in
// positions. The error, if any, is an ErrorList holding every problem.
func Parse(name string, data []byte) (*Profile, error) {
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return nil, ErrorList{tomlError(name, err)}
	}
	d := &decoder{file: name, loc: locate(name, string(data))}
	p := d.profile(tree)
	if len(d.errs) > 0 {
		d.errs.sort()
		return nil, d.errs
	}
	d.warn.sort()
	for _, w := range d.warn {
		p.Warnings = append(p.Warnings, w.Error())
	}
	p.Source = name
	return p, nil
}

// tomlError turns a syntax error from the toml package into an *Error.
func tomlError(file string, err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line, col := pe.Position.Line, pe.Position.Col
		if line == 0 {
			line = 1
		}
		if col == 0 {
			col = 1
		}
		return &Error{Pos: Pos{File: file, Line: line, Col: col}, Msg: "bad TOML: " + pe.Message}
	}
	return &Error{Pos: Pos{File: file, Line: 1, Col: 1}, Msg: "bad TOML: " + err.Error()}
}

// tomlType names the type of a decoded TOML value for messages.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []map[string]any:
		return "array of tables"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// checkKeys reports keys of m that are not in allowed.
func (d *decoder) checkKeys(m map[string]any, path, where string, allowed []string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			d.errorf(d.loc.key(join(path, k)), "unknown key %q%s (want one of %s)", k, where, strings.Join(allowed, ", "))
		}
	}
}

func (d *decoder) str(m map[string]any, path, key string) (string, bool) {
	v, ok := m[key]
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		d.errorf(d.loc.val(join(path, key)), "%s: want a string, got %s", key, tomlType(v))
		return "", false
	}
	return s, true
}

// choice reads key, the name of one of e's values ("deny" for an
// action); ok is false when the key is absent or names no value.
func choice[E ~int](d *decoder, m map[string]any, path, key string, e *enum[E]) (E, bool) {
	s, ok := d.str(m, path, key)
	if !ok {
		return 0, false
	}
	v, err := e.parse(s)
	if err != nil {
		d.errorf(d.loc.val(join(path, key)), "%s: %v", key, err)
		return 0, false
	}
	return v, true
}

// answer reads what a table answers: key (action or verdict) and
// errnoKey, the errno that goes only with deny. v is the answer when the
// key is absent, which is an error when table names the table
// ("[[rule]]"); a deny without an errno fails with EPERM.
func answer[E ~int](d *decoder, m map[string]any, path, table, key, errnoKey string, e *enum[E], v, deny E) (E, int) {
	if c, ok := choice(d, m, path, key, e); ok {
		v = c
	}
	if table != "" {
		d.required(m, path, key, table)
	}
	errno, ok := d.errno(m, path, errnoKey)
	if ok && v != deny && v != 0 {
		d.errorf(d.loc.key(join(path, errnoKey)), `%s is only allowed with %s = "deny"`, errnoKey, key)
	}
	if v == deny && errno == 0 {
		errno = defaultErrno
	}
	return v, errno
}

// required reports a key that table (at path) lacks.
func (d *decoder) required(m map[string]any, path, key, table string) {
	if m[key] == nil {
		d.errorf(d.loc.key(path), "%s has no %s", table, key)
	}
}

func (d *decoder) boolean(m map[string]any, path, key string) bool {
	v, ok := m[key]
	if !ok {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		d.errorf(d.loc.val(join(path, key)), "%s: want true or false, got %s", key, tomlType(v))
	}
	return b
}

// strList reads an array of strings, calling each with the element and
// its path for per-element checks.
func (d *decoder) strList(m map[string]any, path, key string, each func(s, path string)) []string {
	v, ok := m[key]
	if !ok {
		return nil
	}
	kp := join(path, key)
	arr, ok := v.([]any)
	if !ok {
		d.errorf(d.loc.val(kp), "%s: want an array of strings, got %s", key, tomlType(v))
		return nil
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.errorf(d.loc.val(index(kp, i)), "%s: want a string, got %s", key, tomlType(e))
			continue
		}
		out = append(out, s)
		if each != nil {
			each(s, index(kp, i))
		}
	}
	return out
}

// tables reads an array of tables ([[syscall]] or an inline array).
func (d *decoder) tables(m map[string]any, path, key string) []map[string]any {
	v, ok := m[key]
	if !ok {
		return nil
	}
	switch t := v.(type) {
	case []map[string]any:
		return t
	case []any:
		out := make([]map[string]any, 0, len(t))
		for i, e := range t {
			tm, ok := e.(map[string]any)
			if !ok {
				d.errorf(d.loc.val(index(join(path, key), i)), "%s: want a table, got %s", key, tomlType(e))
				continue
			}
			out = append(out, tm)
		}
		return out
	}
	d.errorf(d.loc.val(join(path, key)), "%s: want an array of tables, got %s", key, tomlType(v))
	return nil
}

func (d *decoder) errno(m map[string]any, path, key string) (int, bool) {
	v, ok := m[key]
	if !ok {
		return 0, false
	}
	pos := d.loc.val(join(path, key))
	switch e := v.(type) {
	case string:
		n, ok := ErrnoNumber(e)
		if !ok {
			d.errorf(pos, "%s: unknown errno %q", key, e)
			return 0, false
		}
		return n, true
	case int64:
		if e < 1 || e > 4095 {
			d.errorf(pos, "%s: errno %d out of range 1..4095", key, e)
			return 0, false
		}
		return int(e), true
	}
	d.errorf(pos, "%s: want an errno name or number, got %s", key, tomlType(v))
	return 0, false
}

func (d *decoder) profile(tree map[string]any) *Profile {
	p := &Profile{
		DefaultAction:       ActInspect,
		DefaultVerdict:      VerdictDeny,
		DefaultVerdictErrno: defaultErrno,
	}
	if ext, ok := d.str(tree, "", "extends"); ok {
		return d.overlay(tree, ext)
	}
	d.checkKeys(tree, "", "", topKeys)
	p.Name = d.name(tree)
	p.Description, _ = d.str(tree, "", "description")

	if v, ok := tree["defaults"]; ok {
		if m, ok := v.(map[string]any); ok {
			d.defaults(p, m)
		} else {
			d.errorf(d.loc.val("defaults"), "defaults: want a table, got %s", tomlType(v))
		}
	}
	for i, m := range d.tables(tree, "", "syscall") {
		// Tables with errors are kept, so that the checks across tables
		// report their problems too; the profile is discarded anyway.
		p.Syscalls = append(p.Syscalls, d.syscall(m, index("syscall", i)))
		d.syscallPaths = append(d.syscallPaths, index("syscall", i))
	}
	names := map[string]Pos{}
	for i, m := range d.tables(tree, "", "rule") {
		path := index("rule", i)
		r := d.rule(m, path)
		if prev, dup := names[r.Name]; dup && r.Name != "" {
			d.errorf(d.loc.val(join(path, "name")), "rule name %q already used at %s", r.Name, prev)
		} else {
			names[r.Name] = r.Pos
		}
		p.Rules = append(p.Rules, r)
		d.rulePaths = append(d.rulePaths, path)
	}
	d.decisionPlane(p, tree)
	d.validate(p)
	return p
}

// name reads a profile's (or an overlay's) required name.
func (d *decoder) name(tree map[string]any) string {
	name, ok := d.str(tree, "", "name")
	switch {
	case !ok && tree["name"] == nil:
		d.errorf(Pos{File: d.file, Line: 1, Col: 1}, "missing name")
	case ok && strings.TrimSpace(name) == "":
		d.errorf(d.loc.val("name"), "name must not be empty")
	}
	return name
}

func (d *decoder) defaults(p *Profile, m map[string]any) {
	const path = "defaults"
	d.checkKeys(m, path, " in [defaults]", defaultsKeys)
	p.DefaultAction, p.DefaultErrno = answer(d, m, path, "", "action", "errno", &actions, p.DefaultAction, ActDeny)
	p.DefaultVerdict, p.DefaultVerdictErrno = answer(d, m, path, "", "verdict", "verdict_errno", &verdicts, p.DefaultVerdict, VerdictDeny)
	if s, ok := d.str(m, path, "landlock"); ok {
		switch s {
		case "required", "best-effort", "off":
			p.Landlock = s
		default:
			d.errorf(d.loc.val(join(path, "landlock")), "landlock %q: want required, best-effort or off", s)
		}
	}
}

func (d *decoder) reason(m map[string]any, path, what string) string {
	s, ok := d.str(m, path, "reason")
	switch {
	case !ok && m["reason"] == nil:
		d.errorf(d.loc.key(path), "%s has no reason: say why", what)
	case ok && strings.TrimSpace(s) == "":
		d.errorf(d.loc.val(join(path, "reason")), "reason must not be empty")
	}
	return s
}

func (d *decoder) syscall(m map[string]any, path string) SyscallRule {
	r := SyscallRule{Pos: d.loc.key(path)}
	n := len(d.errs)
	d.checkKeys(m, path, " in [[syscall]]", syscallKeys)
	r.Names = d.strList(m, path, "names", func(s, p string) {
		if _, ok := SyscallNumber(s); !ok {
			d.errorf(d.loc.val(p), "unknown syscall %q", s)
		}
	})
	r.Names = slices.DeleteFunc(r.Names, func(s string) bool {
		_, ok := SyscallNumber(s)
		return !ok
	})
	if _, ok := m["names"]; !ok {
		d.errorf(r.Pos, "[[syscall]] has no names")
	} else if len(r.Names) == 0 && n == len(d.errs) {
		d.errorf(d.loc.val(join(path, "names")), "names must not be empty")
	}
	r.Action, r.Errno = answer(d, m, path, "[[syscall]]", "action", "errno", &actions, 0, ActDeny)
	r.Silent = d.boolean(m, path, "silent")
	if r.Silent && r.Action != ActDeny && r.Action != 0 {
		d.errorf(d.loc.key(join(path, "silent")), `silent is only allowed with action = "deny"`)
	}
	if name, ok := d.str(m, path, "name"); ok {
		if name == "" {
			d.errorf(d.loc.val(join(path, "name")), "name must not be empty")
		}
		r.Name = name
	} else if len(r.Names) > 0 {
		r.Name = "syscall:" + r.Names[0]
	}
	r.Severity = d.severity(m, path)
	if r.Severity != 0 && r.Action != ActDeny && r.Action != 0 {
		d.errorf(d.loc.key(join(path, "severity")), `severity is only allowed with action = "deny": it grades the finding a denial makes`)
	}
	if r.Severity != 0 && r.Silent {
		d.warnf(d.loc.key(join(path, "severity")), "severity has no effect with silent = true: the kernel fails the call without telling kfv")
	}
	r.Reason = d.reason(m, path, "[[syscall]]")
	for i, am := range d.tables(m, path, "args") {
		// A condition with errors still makes the rule conditional.
		r.Args = append(r.Args, d.arg(am, index(join(path, "args"), i)))
	}
	return r
}

const wideWhy = "libseccomp compares all 64 bits, and the kernel reads int arguments from their low 32 bits only, so the high bits are the caller's to choose; use it only on 64-bit (size or pointer) arguments"

func (d *decoder) arg(m map[string]any, path string) ArgCond {
	c := ArgCond{Pos: d.loc.val(path)}
	d.checkKeys(m, path, " in args", argKeys)
	if v, ok := m["index"]; !ok {
		d.errorf(c.Pos, "argument condition has no index")
	} else if i, ok := v.(int64); !ok {
		d.errorf(d.loc.val(join(path, "index")), "index: want an integer, got %s", tomlType(v))
	} else if i < 0 || i > 5 {
		d.errorf(d.loc.val(join(path, "index")), "index %d out of range 0..5", i)
	} else {
		c.Index = int(i)
	}
	c.Wide = d.boolean(m, path, "wide")
	if s, ok := d.str(m, path, "op"); ok {
		if op, ok := ops.lookup(s); ok {
			c.Op = op
		} else {
			d.errorf(d.loc.val(join(path, "op")), "unknown op %q (want eq, in, masked_eq, or with wide = true ne, lt, le, gt, ge)", s)
		}
	} else if m["op"] == nil {
		d.errorf(c.Pos, "argument condition has no op")
	}
	switch c.Op {
	case OpNe, OpLt, OpLe, OpGt, OpGe:
		if !c.Wide {
			d.errorf(d.loc.val(join(path, "op")), "op %q needs wide = true: %s", c.Op, wideWhy)
		}
	}
	if c.Op == OpIn {
		if _, ok := m["value"]; ok {
			d.errorf(d.loc.key(join(path, "value")), `op "in" takes values = [...], not value`)
		}
		v, ok := m["values"]
		arr, isArr := v.([]any)
		switch {
		case !ok:
			d.errorf(c.Pos, `op "in" needs values = [...]`)
		case !isArr:
			d.errorf(d.loc.val(join(path, "values")), "values: want an array, got %s", tomlType(v))
		case len(arr) == 0:
			d.errorf(d.loc.val(join(path, "values")), `op "in" needs at least one value`)
		}
		for i, e := range arr {
			if x, ok := d.number(e, index(join(path, "values"), i), c.Wide); ok {
				c.Values = append(c.Values, x)
			}
		}
	} else if c.Op != 0 {
		if _, ok := m["values"]; ok {
			d.errorf(d.loc.key(join(path, "values")), "op %q takes one value = x, not values", c.Op)
		}
		if v, ok := m["value"]; !ok {
			d.errorf(c.Pos, "op %q needs value = x", c.Op)
		} else if v == SelfPID {
			if c.Op != OpEq && c.Op != OpNe {
				d.errorf(d.loc.val(join(path, "value")), "%q works only with op eq (or ne)", SelfPID)
			}
			c.Self, c.Values = true, []uint64{0}
		} else if x, ok := d.number(v, join(path, "value"), c.Wide); ok {
			c.Values = []uint64{x}
		}
	}
	if v, ok := m["mask"]; ok {
		if c.Op != OpMaskedEq && c.Op != 0 {
			d.errorf(d.loc.key(join(path, "mask")), `mask is only allowed with op = "masked_eq"`)
		} else if x, ok := d.number(v, join(path, "mask"), c.Wide); ok {
			c.Mask = x
			if len(c.Values) == 1 && c.Values[0]&^x != 0 {
				d.errorf(d.loc.val(join(path, "value")), "value %#x has bits outside mask %#x: the condition can never hold", c.Values[0], x)
			}
		}
	} else if c.Op == OpMaskedEq {
		d.errorf(c.Pos, `op "masked_eq" needs mask = x`)
	}
	return c
}

// number reads an argument value: an integer or a string (see parseNumber).
func (d *decoder) number(v any, path string, wide bool) (uint64, bool) {
	pos := d.loc.val(path)
	var x uint64
	switch t := v.(type) {
	case int64:
		x = uint64(t)
	case string:
		n, err := parseNumber(t)
		if err != nil {
			d.errorf(pos, "%v", err)
			return 0, false
		}
		x = n
	default:
		d.errorf(pos, "want an integer or a string, got %s", tomlType(v))
		return 0, false
	}
	if wide {
		return x, true
	}
	low, ok := fits32(x)
	if !ok {
		d.errorf(pos, "value %#x does not fit in 32 bits; set wide = true to compare all 64 bits of a 64-bit argument", x)
		return 0, false
	}
	return low, true
}

func (d *decoder) rule(m map[string]any, path string) VerdictRule {
	r := VerdictRule{Pos: d.loc.key(path)}
	d.checkKeys(m, path, " in [[rule]]", ruleKeys)
	name, ok := d.str(m, path, "name")
	switch {
	case !ok && m["name"] == nil:
		d.errorf(r.Pos, "[[rule]] has no name")
	case ok && strings.TrimSpace(name) == "":
		d.errorf(d.loc.val(join(path, "name")), "name must not be empty")
	}
	r.Name = name
	r.Syscalls = d.strList(m, path, "syscalls", func(s, p string) {
		if _, ok := SyscallNumber(s); !ok {
			d.errorf(d.loc.val(p), "unknown syscall %q", s)
		}
	})
	r.Paths = d.strList(m, path, "paths", func(s, p string) {
		if !strings.HasPrefix(s, "/") {
			d.errorf(d.loc.val(p), "path glob %q must be absolute", s)
			return
		}
		if _, err := glob.Compile(s); err != nil {
			d.errorf(d.loc.val(p), "%v", err)
		}
	})
	if v, ok := m["families"]; ok {
		arr, isArr := v.([]any)
		if !isArr {
			d.errorf(d.loc.val(join(path, "families")), "families: want an array, got %s", tomlType(v))
		}
		for i, e := range arr {
			if f, ok := d.family(e, index(join(path, "families"), i)); ok {
				r.Families = append(r.Families, f)
			}
		}
	}
	r.Addresses = d.strList(m, path, "addresses", func(s, p string) {
		if _, err := ParseAddress(s); err != nil {
			d.errorf(d.loc.val(p), "%v", err)
		}
	})
	r.NoAddress = d.boolean(m, path, "no_address")
	if r.NoAddress && (len(r.Addresses) > 0 || len(r.Families) > 0) {
		d.errorf(d.loc.key(join(path, "no_address")), "no_address = true cannot be combined with families or addresses: it matches only calls without an address")
	}
	r.Threads = d.strList(m, path, "threads", func(s, p string) {
		if _, err := glob.Compile(s); err != nil {
			d.errorf(d.loc.val(p), "%v", err)
		}
	})
	for i, am := range d.tables(m, path, "args") {
		r.Args = append(r.Args, d.arg(am, index(join(path, "args"), i)))
	}
	if len(r.Args) > 0 && len(r.Syscalls) == 0 {
		d.errorf(d.loc.key(join(path, "args")), "args needs syscalls: argument positions differ from one syscall to another")
	}
	r.Backing = d.strList(m, path, "backing", func(s, p string) {
		if _, err := glob.Compile(s); err != nil {
			d.errorf(d.loc.val(p), "%v", err)
		}
	})
	r.Needs = d.strList(m, path, "needs", func(s, p string) {
		if !slices.Contains(Features, s) {
			d.errorf(d.loc.val(p), "unknown feature %q (want one of %s)", s, strings.Join(Features, ", "))
		}
	})
	r.Accel = d.strList(m, path, "accel", func(s, p string) {
		if !slices.Contains(Accels, s) {
			d.errorf(d.loc.val(p), "unknown accelerator %q (want one of %s)", s, strings.Join(Accels, ", "))
		}
	})
	r.OwnTarget = d.boolean(m, path, "own_target")
	if r.OwnTarget {
		if len(r.Syscalls) == 0 {
			d.errorf(d.loc.key(join(path, "own_target")), "own_target needs syscalls: the pid argument's position differs from one syscall to another")
		}
		for _, sc := range r.Syscalls {
			if e, ok := sysent.Lookup(sc); !ok || e.PIDArg < 0 {
				d.errorf(d.loc.key(join(path, "own_target")), "own_target: syscall %q names no process by pid", sc)
			}
		}
	}
	r.Limit, _ = d.integer(m, path, "limit", 1, 1<<20)
	r.Verdict, r.Errno = answer(d, m, path, "[[rule]]", "verdict", "errno", &verdicts, 0, VerdictDeny)
	if r.Limit > 0 && r.Verdict != VerdictAllow && r.Verdict != 0 {
		d.errorf(d.loc.key(join(path, "limit")), `limit is only allowed with verdict = "allow": it bounds what the rule admits`)
	}
	r.Severity = d.severity(m, path)
	if r.Severity != 0 && r.Verdict != VerdictDeny && r.Verdict != 0 {
		d.errorf(d.loc.key(join(path, "severity")), `severity is only allowed with verdict = "deny": it grades the finding a denial makes`)
	}
	r.Reason = d.reason(m, path, "[[rule]]")
	return r
}

func (d *decoder) family(v any, path string) (int, bool) {
	switch t := v.(type) {
	case string:
		c, ok := lookup(constTable, t)
		if !ok || !strings.HasPrefix(t, "AF_") {
			d.errorf(d.loc.val(path), "unknown address family %q", t)
			return 0, false
		}
		return int(c), true
	case int64:
		if t < 0 || t > 63 {
			d.errorf(d.loc.val(path), "address family %d out of range 0..63", t)
			return 0, false
		}
		return int(t), true
	}
	d.errorf(d.loc.val(path), "families: want a name or a number, got %s", tomlType(v))
	return 0, false
}
