package profiles

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// An overlay stacks verdict rules on a profile: what the built-in profile
// does not know about one site's configurations (kfv-run profile learn
// writes them from an audit run), without copying the profile itself.
//
//	extends = "qemu"             # the profile it stacks on: a built-in
//	                             # name, or a file (relative to the overlay)
//	name = "site-overlay"        # required
//	description = "..."          # optional
//	[[rule]]                     # any number, as in a profile
//
// The overlay's rules come after the profile's own: a call that one of the
// profile's rules decides (an explicit denial of a dangerous call
// included) keeps that decision, and the overlay decides only what would
// otherwise fall to the profile's default verdict. An overlay holds no
// kernel filter, decision plane or defaults of its own: what the kernel
// allows stays the profile's.

// ResolveWithOverlay resolves profile (Resolve) and, when overlay is not
// "", stacks the overlay file on it. The overlay names the profile it was
// written for (extends); stacking it on another is an error.
func ResolveWithOverlay(profile, overlay string) (*Profile, error) {
	if overlay == "" {
		return Resolve(profile)
	}
	ov, err := Load(overlay)
	if err != nil {
		return nil, err
	}
	if ov.Extends == "" {
		return nil, ErrorList{{Pos: Pos{File: overlay, Line: 1, Col: 1}, Msg: "not an overlay: it has no extends key naming the profile it stacks on"}}
	}
	base, err := Resolve(profile)
	if err != nil {
		return nil, err
	}
	if !sameSource(base.Source, ov.Extends) {
		return nil, ErrorList{{Pos: ov.ExtendsPos, Msg: "the overlay extends " + ov.Extends + ", not the profile in use, " + base.Source}}
	}
	return ov, nil
}

// sameSource says two profile sources name the same profile: the same
// built-in, or the same file however its path is spelt.
func sameSource(a, b string) bool {
	if a == b {
		return true
	}
	if strings.HasPrefix(a, "builtin:") || strings.HasPrefix(b, "builtin:") {
		return false
	}
	fa, erra := filepath.Abs(a)
	fb, errb := filepath.Abs(b)
	return erra == nil && errb == nil && fa == fb
}

// overlay decodes an overlay file (tree has extends = ext).
func (d *decoder) overlay(tree map[string]any, ext string) *Profile {
	d.checkKeys(tree, "", fmt.Sprintf(" in an overlay (extends = %q), which holds only name, description and [[rule]] tables: what the kernel filter and the decision plane do is the profile's own", ext), overlayKeys)
	name := d.name(tree)
	extPos := d.loc.val("extends")
	target := ext
	if strings.Contains(ext, "/") || filepath.Ext(ext) == ".toml" {
		if !filepath.IsAbs(ext) {
			target = filepath.Join(filepath.Dir(d.file), ext)
		}
	}
	base, err := Resolve(target)
	if err != nil {
		d.errorf(extPos, "extends %q: %v", ext, err)
		return &Profile{}
	}
	if base.Extends != "" {
		d.errorf(extPos, "extends %q: that is an overlay itself (of %s): overlays stack on a profile, not on each other", ext, base.Extends)
		return &Profile{}
	}
	names := map[string]Pos{}
	for _, r := range base.Rules {
		names[r.Name] = r.Pos
	}
	var rules []VerdictRule
	for i, m := range d.tables(tree, "", "rule") {
		path := index("rule", i)
		r := d.rule(m, path)
		if prev, dup := names[r.Name]; dup && r.Name != "" {
			d.errorf(d.loc.val(join(path, "name")), "rule name %q already used at %s", r.Name, prev)
		} else {
			names[r.Name] = r.Pos
		}
		rules = append(rules, r)
		d.rulePaths = append(d.rulePaths, path)
	}
	// The rules are checked against the profile's kernel filter (a
	// throwaway decoder: the profile itself was checked when it loaded).
	bd := &decoder{file: base.Source, loc: locate(base.Source, "")}
	for i := range base.Syscalls {
		bd.syscallPaths = append(bd.syscallPaths, index("syscall", i))
	}
	d.validateRules(&Profile{Rules: rules}, bd.validateSyscalls(base))

	p := *base
	p.Name = name
	p.Description, _ = d.str(tree, "", "description")
	p.Extends, p.ExtendsPos = base.Source, extPos
	p.Rules = append(slices.Clone(base.Rules), rules...)
	p.Warnings = slices.Clone(base.Warnings)
	return &p
}
