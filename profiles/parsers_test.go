package profiles

import (
	"strings"
	"testing"
	"time"
)

var severityCorpus = []struct {
	in   string
	want SeverityMatch
	ok   bool
}{
	{"high", SeverityMatch{CmpEq, SevHigh}, true},
	{"==low", SeverityMatch{CmpEq, SevLow}, true},
	{">=medium", SeverityMatch{CmpGe, SevMedium}, true},
	{"> medium", SeverityMatch{CmpGt, SevMedium}, true},
	{" <=critical ", SeverityMatch{CmpLe, SevCritical}, true},
	{"<high", SeverityMatch{CmpLt, SevHigh}, true},
	{"<low", SeverityMatch{}, false},
	{">critical", SeverityMatch{}, false},
	{"=>high", SeverityMatch{}, false},
	{">=", SeverityMatch{}, false},
	{"HIGH", SeverityMatch{}, false},
	{"", SeverityMatch{}, false},
	{">>high", SeverityMatch{}, false},
}

// checkSeverityMatch is FuzzSeverityMatch's body: a condition that parses
// prints back to one that parses the same, and matches some severity.
func checkSeverityMatch(t *testing.T, s string) {
	m, err := ParseSeverityMatch(s)
	if err != nil {
		if m != (SeverityMatch{}) {
			t.Errorf("%q: error %v with a non-zero match %v", s, err, m)
		}
		return
	}
	again, err := ParseSeverityMatch(m.String())
	if err != nil || again != m {
		t.Errorf("%q: %v prints as %q, which parses to %v, %v", s, m, m.String(), again, err)
	}
	some := false
	for sev := SevLow; sev <= SevCritical; sev++ {
		some = some || m.Match(sev)
	}
	if !some {
		t.Errorf("%q matches no severity", s)
	}
}

func TestSeverityMatch(t *testing.T) {
	for _, c := range severityCorpus {
		t.Run(c.in, func(t *testing.T) {
			m, err := ParseSeverityMatch(c.in)
			if (err == nil) != c.ok || m != c.want {
				t.Errorf("ParseSeverityMatch(%q) = %v, %v; want %v, ok %v", c.in, m, err, c.want, c.ok)
			}
			checkSeverityMatch(t, c.in)
		})
	}
	ge := SeverityMatch{CmpGe, SevHigh}
	if ge.Match(SevMedium) || !ge.Match(SevHigh) || !ge.Match(SevCritical) {
		t.Error(">=high matches wrongly")
	}
	if !(SeverityMatch{}).Match(SevLow) {
		t.Error("the zero match must match everything")
	}
}

func FuzzSeverityMatch(f *testing.F) {
	for _, c := range severityCorpus {
		f.Add(c.in)
	}
	f.Fuzz(checkSeverityMatch)
}

var durationCorpus = []struct {
	in   string
	want time.Duration
}{
	{"10s", 10 * time.Second},
	{"500ms", 500 * time.Millisecond},
	{"1m30s", 90 * time.Second},
	{"24h", 24 * time.Hour},
	{"24h1s", 0},
	{"0s", 0},
	{"-1s", 0},
	{"10", 0},
	{"", 0},
	{"1e9h", 0},
	{"9223372036854775807ns", 0},
}

// checkDuration is FuzzDuration's body: what parses is within (0, MaxWindow].
func checkDuration(t *testing.T, s string) {
	d, err := ParseDuration(s)
	if err != nil {
		if d != 0 || !strings.Contains(err.Error(), "duration") {
			t.Errorf("%q: %v with %v", s, err, d)
		}
		return
	}
	if d <= 0 || d > MaxWindow {
		t.Errorf("%q parsed to %v", s, d)
	}
}

func TestParseDuration(t *testing.T) {
	for _, c := range durationCorpus {
		t.Run(c.in, func(t *testing.T) {
			d, err := ParseDuration(c.in)
			if d != c.want || (err == nil) != (c.want != 0) {
				t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, d, err, c.want)
			}
			checkDuration(t, c.in)
		})
	}
}

func FuzzDuration(f *testing.F) {
	for _, c := range durationCorpus {
		f.Add(c.in)
	}
	f.Fuzz(checkDuration)
}

var reactionCorpus = []struct {
	in   string
	want ReactionSpec
}{
	{"pause", ReactionSpec{ReactPause, ""}},
	{"continue", ReactionSpec{ReactContinue, ""}},
	{"link_down:all-nics", ReactionSpec{ReactLinkDown, AllNICs}},
	{"link_up:net0", ReactionSpec{ReactLinkUp, "net0"}},
	{"device_del:virtio-disk.0_a", ReactionSpec{ReactDeviceDel, "virtio-disk.0_a"}},
	{"restart_checkpoint", ReactionSpec{ReactRestartCheckpoint, ""}},
	{"scrub", ReactionSpec{ReactScrub, ""}},
	{"kill", ReactionSpec{ReactKill, ""}},
	{"kill:", ReactionSpec{}},
	{"link_down", ReactionSpec{}},
	{"link_down:", ReactionSpec{}},
	{"link_down:a b", ReactionSpec{}},
	{"device_del:all-nics", ReactionSpec{}},
	{"Pause", ReactionSpec{}},
	{"", ReactionSpec{}},
}

// checkReaction is FuzzReaction's body: a reaction that parses prints
// back to itself, and has a target exactly when its kind needs one.
func checkReaction(t *testing.T, s string) {
	r, err := ParseReaction(s)
	if err != nil {
		return
	}
	if r.String() != s {
		t.Errorf("%q prints as %q", s, r.String())
	}
	if r.Kind.Targeted() != (r.Target != "") {
		t.Errorf("%q: kind %v with target %q", s, r.Kind, r.Target)
	}
}

func TestParseReaction(t *testing.T) {
	for _, c := range reactionCorpus {
		t.Run(c.in, func(t *testing.T) {
			r, err := ParseReaction(c.in)
			if r != c.want || (err == nil) != (c.want.Kind != 0) {
				t.Errorf("ParseReaction(%q) = %v, %v; want %v", c.in, r, err, c.want)
			}
			checkReaction(t, c.in)
		})
	}
	for _, k := range ReactionKinds() {
		if got, err := ParseReactionKind(k.String()); got != k || err != nil {
			t.Errorf("%v does not parse back: %v, %v", k, got, err)
		}
	}
}

// TestReactionKinds checks the reactions table: every kind up to the
// last has a name of its own, so that a kind added without its row
// fails here rather than print as ReactionKind(N) and never parse.
func TestReactionKinds(t *testing.T) {
	ks := ReactionKinds()
	if len(ks) != int(numReactionKinds)-1 || ks[0] != ReactDeny || ks[len(ks)-1] != numReactionKinds-1 {
		t.Fatalf("ReactionKinds() = %v: want every kind from ReactDeny up", ks)
	}
	seen := map[string]ReactionKind{}
	for _, k := range ks {
		name := reactions[k].name
		if name == "" {
			t.Errorf("reaction kind %d has no name in the reactions table", int(k))
			continue
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("reaction kinds %d and %d are both named %q", int(prev), int(k), name)
		}
		seen[name] = k
		if k.String() != name {
			t.Errorf("kind %d prints as %q, want %q", int(k), k, name)
		}
	}
	if ReactionKind(0).Targeted() || numReactionKinds.Targeted() {
		t.Error("a value that is no reaction kind must not be targeted")
	}
}

func FuzzReaction(f *testing.F) {
	for _, c := range reactionCorpus {
		f.Add(c.in)
	}
	f.Fuzz(checkReaction)
}

var nameCorpus = []struct {
	pattern, name string
	want          bool
}{
	{"vcpu*", "vcpu0", true},
	{"vcpu*", "vcpu", true},
	{"vcpu*", "xvcpu0", false},
	{"thread:*", "thread:CPU x/KVM", true},
	{"*/KVM", "thread:CPU x/KVM", true},
	{"iothread:?", "iothread:a", true},
	{"iothread:?", "iothread:ab", false},
	{"a*b*c", "axxbyybzc", true},
	{"a*b*c", "axxbyyd", false},
	{`a\*`, "a*", true},
	{`a\*`, "ab", false},
	{"main-loop", "main-loop", true},
	{"*", "", true},
	{"**", "x", true},
	{"", "", true},
	{"", "x", false},
}

// checkName is FuzzMatchName's body: a pattern without wildcards matches
// exactly itself, "*" matches everything, and matching never panics.
func checkName(t *testing.T, pattern, name string) {
	got := MatchName(pattern, name)
	if !strings.ContainsAny(pattern, `*?\`) && got != (pattern == name) {
		t.Errorf("literal %q on %q: %v", pattern, name, got)
	}
	if !MatchName("*", name) || !MatchName(pattern, pattern) && !strings.ContainsAny(pattern, `?\`) {
		t.Errorf("%q or * does not match itself", pattern)
	}
}

func TestMatchName(t *testing.T) {
	for _, c := range nameCorpus {
		t.Run(c.pattern+"~"+c.name, func(t *testing.T) {
			if got := MatchName(c.pattern, c.name); got != c.want {
				t.Errorf("MatchName(%q, %q) = %v", c.pattern, c.name, got)
			}
			checkName(t, c.pattern, c.name)
		})
	}
	if CheckNamePattern(`a\`) == nil || CheckNamePattern("") == nil || CheckNamePattern(`a\*`) != nil {
		t.Error("CheckNamePattern")
	}
}

func FuzzMatchName(f *testing.F) {
	for _, c := range nameCorpus {
		f.Add(c.pattern, c.name)
	}
	f.Fuzz(checkName)
}
