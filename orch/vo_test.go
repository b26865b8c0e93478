package orch

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"kfv/profiles"
)

func newTestVO(t *testing.T, rules string) (*VO, *clock) {
	t.Helper()
	ck := &clock{t0}
	v, err := NewVO(mustParse(t, "name = \"v\"\n"+rules), ck.now)
	if err != nil {
		t.Fatal(err)
	}
	return v, ck
}

// sig is a signature finding of hrsc at t0+at.
func sig(hrsc string, layer Layer, sev profiles.Severity, at time.Duration) Finding {
	return Finding{Time: t0.Add(at), Layer: layer, HRSC: hrsc, Detector: profiles.DetSignature, Severity: sev, Syscall: "openat", Rule: "r"}
}

// kinds renders reactions as "rule:kind[:target]" for comparison.
func kinds(rs []Reaction) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Rule+":"+r.String())
	}
	return strings.Join(out, " ")
}

func TestVOWindowsAndCounts(t *testing.T) {
	v, _ := newTestVO(t, `
[[correlate]]
name = "three"
match = { detector = "signature", severity = ">=medium" }
count = 3
window = "10s"
reactions = ["pause", "link_down:all-nics"]
reason = "r"
`)
	steps := []struct {
		name string
		f    Finding
		want string
	}{
		{"1st", sig("vcpu0", L2, profiles.SevMedium, 0), ""},
		{"low does not count", sig("vcpu0", L2, profiles.SevLow, time.Second), ""},
		{"other resource counts apart", sig("vcpu1", L2, profiles.SevHigh, time.Second), ""},
		{"2nd", sig("vcpu0", L2, profiles.SevHigh, 2*time.Second), ""},
		{"3rd within 10s fires", sig("vcpu0", L2, profiles.SevMedium, 9*time.Second), "three:pause three:link_down:all-nics"},
		{"counting starts afresh", sig("vcpu0", L2, profiles.SevMedium, 10*time.Second), ""},
		{"2 of vcpu1 (first at 1s)", sig("vcpu1", L2, profiles.SevMedium, 11*time.Second), ""},
		{"3 of vcpu1 but the first left the window", sig("vcpu1", L2, profiles.SevMedium, 12*time.Second), ""},
		{"4 of vcpu1: three within 10s", sig("vcpu1", L2, profiles.SevMedium, 13*time.Second), "three:pause three:link_down:all-nics"},
	}
	for _, s := range steps {
		if got := kinds(v.Observe(s.f)); got != s.want {
			t.Errorf("%s: reactions %q, want %q", s.name, got, s.want)
		}
	}
}

func TestVOChainAndOrder(t *testing.T) {
	v, _ := newTestVO(t, `
[[correlate]]
name = "l1-high"
match = { layer = "L1", severity = ">=high" }
reactions = ["link_down:all-nics"]
reason = "cross-layer"
[[correlate]]
name = "pair"
match = { hrsc = "vcpu*" }
count = 2
window = "5s"
reactions = ["pause", "link_down:all-nics", "device_del:net0"]
reason = "r"
`)
	a := sig("vcpu0", L2, profiles.SevMedium, 0)
	b := sig("vcpu0", L1, profiles.SevHigh, time.Second)
	if got := v.Observe(a); len(got) != 0 {
		t.Fatalf("first finding: %s", kinds(got))
	}
	got := v.Observe(b)
	// l1-high comes first (profile order); pair's link_down is left out
	// as l1-high already ordered it for this finding.
	if want := "l1-high:link_down:all-nics pair:pause pair:device_del:net0"; kinds(got) != want {
		t.Fatalf("reactions %q, want %q", kinds(got), want)
	}
	if c := got[0].Chain; len(c) != 1 || c[0] != b {
		t.Errorf("l1-high chain %+v", c)
	}
	if c := got[1].Chain; len(c) != 2 || c[0] != a || c[1] != b {
		t.Errorf("pair chain %+v, want oldest first", c)
	}
}

func TestVOCrossLayer(t *testing.T) {
	v, _ := newTestVO(t, `
[[correlate]]
name = "l1-then-l2"
match = { layer = ["L1", "L2"], detector = ["signature", "behaviour"] }
count = 2
window = "1m"
per = "vm"
reactions = ["link_down:net0"]
reason = "evidence on two layers from two resources"
`)
	if got := v.Observe(Finding{Time: t0, Layer: L1, HRSC: "vcpu0", Detector: profiles.DetSignature, Severity: profiles.SevHigh}); len(got) != 0 {
		t.Fatal(kinds(got))
	}
	if got := v.Observe(Finding{Time: t0.Add(time.Second), Layer: L3, HRSC: "monitor", Detector: profiles.DetSignature, Severity: profiles.SevHigh}); len(got) != 0 {
		t.Fatalf("L3 finding counted: %s", kinds(got))
	}
	got := v.Observe(Finding{Time: t0.Add(2 * time.Second), Layer: L2, HRSC: "block-worker", Detector: profiles.DetBehaviour, Severity: profiles.SevHigh})
	if kinds(got) != "l1-then-l2:link_down:net0" || len(got[0].Chain) != 2 || got[0].Chain[0].HRSC != "vcpu0" {
		t.Errorf("per vm across layers: %s %+v", kinds(got), got)
	}
}

func TestVOOnceAndCooldown(t *testing.T) {
	v, _ := newTestVO(t, `
[[correlate]]
name = "once"
match = { detector = "origin" }
reactions = ["kill"]
once = true
reason = "r"
[[correlate]]
name = "cool"
match = { detector = "signature" }
reactions = ["pause"]
cooldown = "30s"
reason = "r"
[[correlate]]
name = "every"
match = { detector = "rate" }
reactions = ["scrub"]
reason = "r"
`)
	f := func(det string, at time.Duration) Finding {
		return Finding{Time: t0.Add(at), Layer: L2, HRSC: "vcpu0", Detector: det, Severity: profiles.SevHigh}
	}
	steps := []struct {
		f    Finding
		want string
	}{
		{f(profiles.DetOrigin, 0), "once:kill"},
		{f(profiles.DetOrigin, time.Hour), ""},
		{f(profiles.DetSignature, 0), "cool:pause"},
		{f(profiles.DetSignature, 10*time.Second), ""},
		{f(profiles.DetSignature, 29*time.Second), ""},
		{f(profiles.DetSignature, 30*time.Second), "cool:pause"},
		{f(profiles.DetSignature, 31*time.Second), ""},
		{f(profiles.DetRate, 0), "every:scrub"},
		{f(profiles.DetRate, time.Millisecond), "every:scrub"},
	}
	for i, s := range steps {
		if got := kinds(v.Observe(s.f)); got != s.want {
			t.Errorf("step %d (%s at %s): %q, want %q", i, s.f.Detector, s.f.Time.Sub(t0), got, s.want)
		}
	}
	v.Reset()
	if got := kinds(v.Observe(f(profiles.DetOrigin, 2*time.Hour))); got != "once:kill" {
		t.Errorf("after Reset: %q", got)
	}
}

func TestVOResolve(t *testing.T) {
	v, ck := newTestVO(t, `
[[correlate]]
name = "two-odd"
match = { detector = "behaviour", hrsc = "block-worker" }
count = 2
window = "10s"
reactions = ["pause"]
once = true
reason = "r"
`)
	odd := func(hrsc string, at time.Duration) Finding {
		return Finding{Time: t0.Add(at), Layer: L2, HRSC: hrsc, Detector: profiles.DetBehaviour, Severity: profiles.SevMedium}
	}
	steps := []struct {
		name   string
		f      Finding
		action profiles.Verdict
		react  string
	}{
		{"first odd call: nothing correlates", odd("block-worker", 0), profiles.VerdictAllow, ""},
		{"other resource: rule does not match", odd("vcpu0", time.Second), profiles.VerdictAllow, ""},
		{"second: the rule fires", odd("block-worker", 2*time.Second), profiles.VerdictDeny, "two-odd:pause"},
		{"third, within the window of the firing: denied, no new reaction", odd("block-worker", 5*time.Second), profiles.VerdictDeny, ""},
		{"long after: allowed again", odd("block-worker", 5*time.Minute), profiles.VerdictAllow, ""},
	}
	for _, s := range steps {
		a, rs := v.Resolve(s.f)
		if a != s.action || kinds(rs) != s.react {
			t.Errorf("%s: %v %q, want %v %q", s.name, a, kinds(rs), s.action, s.react)
		}
	}
	// A finding without a time takes the VO's clock.
	ck.t = t0.Add(10 * time.Minute)
	a, _ := v.ResolveAll([]Finding{{Layer: L2, HRSC: "block-worker", Detector: profiles.DetBehaviour}, {Layer: L2, HRSC: "block-worker", Detector: profiles.DetBehaviour}})
	if a != profiles.VerdictDeny {
		t.Errorf("two findings of one held call reach the count: %v", a)
	}
}

func TestVOGroupsBounded(t *testing.T) {
	v, _ := newTestVO(t, `
[[correlate]]
name = "pair"
match = {}
count = 2
window = "1s"
reactions = ["pause"]
reason = "r"
`)
	for i := 0; i < maxGroups+10; i++ {
		v.Observe(Finding{Time: t0, HRSC: fmt.Sprintf("thread:%d", i)})
	}
	r := v.rules[0]
	if len(r.groups) > maxGroups+1 {
		t.Errorf("%d groups, bound %d", len(r.groups), maxGroups)
	}
	v.Observe(Finding{Time: t0.Add(time.Minute), HRSC: "late"})
	if len(r.groups) > 2 {
		t.Errorf("stale groups not swept: %d", len(r.groups))
	}
}
