package orch

import (
	"strings"
	"testing"

	"kfv/profiles"
)

var globCorpus = []struct{ pattern, path string }{
	{"/usr/share/qemu/**", "/usr/share/qemu/keymaps/de"},
	{"/a/*/c", "/a/b/c"},
	{"/a/**/b*/c", "/a/x/by/bz/c"},
	{"/dev/pts/[0-9]*", "/dev/pts/12"},
	{`/a/\*`, "/a/*"},
}

// checkRuleGlob is the body of FuzzRuleGlob: a rule built from any pattern
// either fails to compile or decides without panicking, and a pattern
// without wildcards matches exactly itself.
func checkRuleGlob(t *testing.T, pattern, path string) {
	p := &profiles.Profile{
		DefaultVerdict:      profiles.VerdictDeny,
		DefaultVerdictErrno: 13,
		Rules: []profiles.VerdictRule{{
			Name: "r", Verdict: profiles.VerdictAllow, Reason: "fuzz",
			Paths: []string{pattern}, Threads: []string{pattern},
		}},
	}
	rs, err := NewRules(p)
	if err != nil {
		return
	}
	d := rs.Decide(&Request{Syscall: "openat", Path: path, Thread: path})
	if path != "" && !strings.ContainsAny(pattern, `*?[\`) && (d.Action == profiles.VerdictAllow) != (pattern == path) {
		t.Errorf("literal pattern %q on %q: %v", pattern, path, d.Action)
	}
}

func TestGlobCorpus(t *testing.T) {
	for _, c := range globCorpus {
		t.Run(c.pattern, func(t *testing.T) { checkRuleGlob(t, c.pattern, c.path) })
	}
}

func FuzzRuleGlob(f *testing.F) {
	for _, c := range globCorpus {
		f.Add(c.pattern, c.path)
	}
	f.Fuzz(checkRuleGlob)
}
