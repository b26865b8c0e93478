package orch

import (
	"testing"
	"time"

	"kfv/profiles"
)

// clock is a fake clock for the engine and the VO.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func mustParse(t testing.TB, src string) *profiles.Profile {
	t.Helper()
	p, err := profiles.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// engineBase inspects everything, denies execve and allows the rest.
const engineBase = `name = "e"
[defaults]
action = "inspect"
verdict = "allow"
[[rule]]
name = "no-exec"
syscalls = ["execve"]
verdict = "deny"
errno = "EACCES"
severity = "high"
reason = "no programs"
[[rule]]
name = "no-secret"
paths = ["/etc/shadow"]
verdict = "deny"
reason = "secret"
`

func TestAttributeFromProfile(t *testing.T) {
	p := mustParse(t, `name = "a"
[[hrsc]]
name = "tap"
fds = ["/dev/net/tun"]
syscalls = ["ioctl"]
layer = "L1"
reason = "the tap backend, by its fd"
[[hrsc]]
name = "cpu*"
threads = ["vcpu-*"]
reason = "numbered or not"
[[hrsc]]
name = "mon"
threads = ["monitor"]
layer = "L3"
reason = "monitor calls are L3"
[[interface]]
layer = "L1"
syscalls = ["mmap"]
reason = "memory"
`)
	a, err := NewAttributor(p)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		req   Request
		layer Layer
		hrsc  string
	}{
		{"fd names the resource", Request{Thread: "vcpu-1", Syscall: "ioctl", Fds: map[int]string{0: "/dev/net/tun"}}, L1, "tap"},
		{"fd table limited to ioctl", Request{Thread: "vcpu-1", Syscall: "write", Fds: map[int]string{0: "/dev/net/tun"}}, L2, "cpu1"},
		{"capture not numbered", Request{Thread: "vcpu-x", Syscall: "openat"}, L2, "cpux"},
		{"resource layer", Request{Thread: "monitor", Syscall: "openat"}, L3, "mon"},
		{"interface beats resource layer", Request{Thread: "monitor", Syscall: "mmap"}, L1, "mon"},
		{"fallback", Request{Thread: "gmain", Syscall: "openat"}, L2, "thread:gmain"},
		{"no name", Request{Syscall: "openat"}, L2, "thread:?"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, h := a.Attribute(&c.req)
			if l != c.layer || h != c.hrsc {
				t.Errorf("Attribute = %s %q, want %s %q", l, h, c.layer, c.hrsc)
			}
		})
	}
	// A profile without tables takes the built-in ones.
	b, err := NewAttributor(mustParse(t, `name = "none"`))
	if err != nil {
		t.Fatal(err)
	}
	if l, h := b.Attribute(&Request{Thread: "CPU 3/KVM", Syscall: "mprotect"}); l != L1 || h != "vcpu3" {
		t.Errorf("built-in fallback: %s %q", l, h)
	}
}

func TestAttributeInternBounded(t *testing.T) {
	a, err := NewAttributor(mustParse(t, `name = "none"`))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxNames+100; i++ {
		r := Request{Thread: "t" + string(rune('a'+i%26)) + time.Duration(i).String()}
		if _, h := a.Attribute(&r); h != "thread:"+r.Thread {
			t.Fatalf("Attribute(%q) = %q", r.Thread, h)
		}
	}
	if len(a.names) > maxNames {
		t.Errorf("%d names kept, bound %d", len(a.names), maxNames)
	}
}

func TestSignatureFindings(t *testing.T) {
	p := mustParse(t, engineBase+`
[[syscall]]
name = "no-ptrace"
names = ["ptrace"]
action = "deny"
severity = "critical"
reason = "r"
`)
	ck := &clock{t0}
	e, err := NewEngine(p, ck.now)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		req  Request
		want []Finding
	}{
		{"allowed: no finding", Request{Syscall: "openat", Path: "/etc/hosts", Thread: "worker", TID: 7}, nil},
		{"rule severity", Request{Syscall: "execve", Thread: "worker", TID: 7},
			[]Finding{{Time: t0, Layer: L2, HRSC: "block-worker", Detector: profiles.DetSignature, Severity: profiles.SevHigh, Syscall: "execve", TID: 7, Rule: "no-exec", Detail: "no programs"}}},
		{"default severity medium", Request{Syscall: "openat", Path: "/etc/shadow", Thread: "CPU 0/KVM", TID: 8},
			[]Finding{{Time: t0, Layer: L2, HRSC: "vcpu0", Detector: profiles.DetSignature, Severity: profiles.SevMedium, Syscall: "openat", TID: 8, Rule: "no-secret", Detail: "secret"}}},
		{"kernel deny severity", Request{Syscall: "ptrace", Thread: "worker", TID: 9, Time: t0.Add(time.Second)},
			[]Finding{{Time: t0.Add(time.Second), Layer: L2, HRSC: "block-worker", Detector: profiles.DetSignature, Severity: profiles.SevCritical, Syscall: "ptrace", TID: 9, Rule: "no-ptrace", Detail: "r"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := e.Decide(&c.req)
			if !equalFindings(d.Findings, c.want) {
				t.Errorf("findings %+v\nwant %+v", d.Findings, c.want)
			}
			// Rules (the signature alone) finds the same.
			rs, err := NewRules(p)
			if err != nil {
				t.Fatal(err)
			}
			rd := rs.Decide(&c.req)
			if len(rd.Findings) != len(c.want) || rd.Action != d.Action {
				t.Errorf("Rules: %v with %d findings", rd.Action, len(rd.Findings))
			}
		})
	}
}

func equalFindings(a, b []Finding) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOriginDetector(t *testing.T) {
	p := mustParse(t, engineBase+`
[[detector]]
name = "origin-text"
kind = "origin"
reason = "injected"
[[ho]]
layers = ["L2"]
detectors = ["origin"]
deny = ">=critical"
errno = "EPERM"
reason = "r"
`)
	e, err := NewEngine(p, (&clock{t0}).now)
	if err != nil {
		t.Fatal(err)
	}
	open := func(ip uint64) Decision {
		return e.Decide(&Request{Syscall: "openat", Path: "/etc/hosts", Thread: "worker", IP: ip})
	}
	if d := open(0x1234); d.Action != profiles.VerdictAllow || len(d.Findings) != 0 {
		t.Fatalf("before SetText: %v %+v", d.Action, d.Findings)
	}
	e.SetText([]AddrRange{{Start: 0x5000, End: 0x6000, Path: "libc"}, {Start: 0x1000, End: 0x2000}, {Start: 0x1800, End: 0x3000}, {Start: 0x9000, End: 0x9000}})
	cases := []struct {
		name string
		ip   uint64
		in   bool
	}{
		{"in libc", 0x5800, true},
		{"first byte after instruction at start", 0x5001, true},
		{"instruction ends at range end", 0x6000, true},
		{"ip at range start: instruction before it", 0x5000, false},
		{"merged overlap", 0x2800, true},
		{"gap", 0x4000, false},
		{"empty range", 0x9000, false},
		{"below all", 0x10, false},
		{"above all", 0x7fff0000, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := open(c.ip)
			if c.in {
				if d.Action != profiles.VerdictAllow || len(d.Findings) != 0 {
					t.Errorf("ip %#x: %v %+v", c.ip, d.Action, d.Findings)
				}
				return
			}
			if d.Action != profiles.VerdictDeny || d.Errno != 1 || d.Rule != "origin-text" || len(d.Findings) != 1 ||
				d.Findings[0].Detector != profiles.DetOrigin || d.Findings[0].Severity != profiles.SevCritical {
				t.Errorf("ip %#x: %v errno %d rule %q %+v", c.ip, d.Action, d.Errno, d.Rule, d.Findings)
			}
		})
	}
}

func TestBehaviourDetector(t *testing.T) {
	p := mustParse(t, engineBase+`
[[detector]]
name = "vcpu-no-files"
kind = "behaviour"
hrsc = ["vcpu*"]
syscalls = ["openat"]
reason = "vcpus open nothing"
[[detector]]
name = "workers-no-sockets"
kind = "behaviour"
hrsc = ["block-worker", "thread:*"]
syscalls = ["socket"]
severity = "medium"
reason = "workers make no sockets"
`)
	e, err := NewEngine(p, (&clock{t0}).now)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		req   Request
		rules []string
		sev   profiles.Severity
	}{
		{"vcpu opens", Request{Syscall: "openat", Path: "/etc/hosts", Thread: "CPU 1/TCG"}, []string{"vcpu-no-files"}, profiles.SevHigh},
		{"main loop opens", Request{Syscall: "openat", Path: "/etc/hosts", Thread: "qemu-system-x86"}, nil, 0},
		{"vcpu socket", Request{Syscall: "socket", Thread: "CPU 1/TCG"}, nil, 0},
		{"worker socket", Request{Syscall: "socket", Thread: "worker"}, []string{"workers-no-sockets"}, profiles.SevMedium},
		{"unknown thread with a slash", Request{Syscall: "socket", Thread: "a/b"}, []string{"workers-no-sockets"}, profiles.SevMedium},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := e.Decide(&c.req)
			var got []string
			for _, f := range d.Findings {
				got = append(got, f.Rule)
				if f.Detector != profiles.DetBehaviour || f.Severity != c.sev {
					t.Errorf("finding %+v", f)
				}
			}
			if len(got) != len(c.rules) || (len(got) > 0 && got[0] != c.rules[0]) {
				t.Errorf("findings by %q, want %q", got, c.rules)
			}
			// No [[ho]]: the signature verdict stands.
			if d.Action != profiles.VerdictAllow {
				t.Errorf("without an HO policy the rules decide: got %v", d.Action)
			}
		})
	}
}

func TestRateDetector(t *testing.T) {
	p := mustParse(t, engineBase+`
[[detector]]
name = "open-flood"
kind = "rate"
syscalls = ["openat"]
threshold = 3
window = "1s"
reason = "flood"
`)
	ck := &clock{t0}
	e, err := NewEngine(p, ck.now)
	if err != nil {
		t.Fatal(err)
	}
	call := func(thread, sc string) int {
		d := e.Decide(&Request{Syscall: sc, Path: "/x", Thread: thread})
		n := 0
		for _, f := range d.Findings {
			if f.Detector == profiles.DetRate {
				if f.Severity != profiles.SevMedium || f.Rule != "open-flood" {
					t.Errorf("finding %+v", f)
				}
				n++
			}
		}
		return n
	}
	steps := []struct {
		name    string
		advance time.Duration
		thread  string
		syscall string
		want    int
	}{
		{"1", 0, "worker", "openat", 0},
		{"2", 100 * time.Millisecond, "worker", "openat", 0},
		{"3", 100 * time.Millisecond, "worker", "openat", 0},
		{"other resource counts apart", 0, "CPU 0/KVM", "openat", 0},
		{"other syscall not counted", 0, "worker", "socket", 0},
		{"4th within the window: burst", 100 * time.Millisecond, "worker", "openat", 1},
		{"burst goes on: one finding per window", 100 * time.Millisecond, "worker", "openat", 0},
		{"window passed since the finding, still bursting", 1100 * time.Millisecond, "worker", "openat", 0},
		{"2", 10 * time.Millisecond, "worker", "openat", 0},
		{"3", 10 * time.Millisecond, "worker", "openat", 0},
		{"4 again: finding", 10 * time.Millisecond, "worker", "openat", 1},
		{"quiet, then slow calls", 5 * time.Second, "worker", "openat", 0},
		{"slow", 400 * time.Millisecond, "worker", "openat", 0},
		{"slow", 400 * time.Millisecond, "worker", "openat", 0},
		{"slow", 400 * time.Millisecond, "worker", "openat", 0},
	}
	for _, s := range steps {
		ck.advance(s.advance)
		if got := call(s.thread, s.syscall); got != s.want {
			t.Errorf("%s: %d rate findings, want %d", s.name, got, s.want)
		}
	}
}

func TestRateKeysBounded(t *testing.T) {
	p := mustParse(t, engineBase+`
[[detector]]
name = "all"
kind = "rate"
threshold = 1000
window = "1s"
reason = "r"
`)
	ck := &clock{t0}
	e, err := NewEngine(p, ck.now)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxRateKeys+50; i++ {
		e.Decide(&Request{Syscall: "openat", Path: "/x", Thread: time.Duration(i).String()})
	}
	rd := e.rate[0]
	if len(rd.states) > maxRateKeys+1 {
		t.Errorf("%d rate keys, bound %d", len(rd.states), maxRateKeys)
	}
	ck.advance(2 * time.Second)
	e.Decide(&Request{Syscall: "openat", Path: "/x", Thread: "new"})
	if len(rd.states) > 2 {
		t.Errorf("stale keys not swept: %d left", len(rd.states))
	}
}

func TestHOPerLayer(t *testing.T) {
	p := mustParse(t, engineBase+`
[[detector]]
name = "vcpu-no-files"
kind = "behaviour"
hrsc = ["vcpu*"]
syscalls = ["openat", "mmap"]
severity = "high"
reason = "vcpus open nothing"
[[detector]]
name = "worker-odd"
kind = "behaviour"
hrsc = ["block-worker"]
syscalls = ["openat", "mmap", "execve"]
severity = "medium"
reason = "odd for a worker"
[[ho]]
layers = ["L2"]
deny = ">=high"
hold = "medium"
hold_for = "2s"
reason = "r"
[[ho]]
layers = "L1"
hold = ">=medium"
hold_for = "500ms"
hold_verdict = "allow"
reason = "r"
`)
	e, err := NewEngine(p, (&clock{t0}).now)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		req     Request
		action  profiles.Verdict
		errno   int
		rule    string
		hold    bool
		holdFor time.Duration
	}{
		{"L2 high denies where the rules allow", Request{Syscall: "openat", Path: "/etc/hosts", Thread: "CPU 0/KVM"}, profiles.VerdictDeny, 13, "vcpu-no-files", false, 0},
		{"L2 medium holds, deny when the bound passes", Request{Syscall: "openat", Path: "/etc/hosts", Thread: "worker"}, profiles.VerdictDeny, 13, "worker-odd", true, 2 * time.Second},
		{"L2 signature deny stands, no hold", Request{Syscall: "execve", Thread: "worker"}, profiles.VerdictDeny, 13, "no-exec", false, 0},
		{"L1 has no deny: high holds", Request{Syscall: "mmap", Thread: "CPU 0/KVM"}, profiles.VerdictAllow, 0, "vcpu-no-files", true, 500 * time.Millisecond},
		{"L1 medium holds, allow when the bound passes", Request{Syscall: "mmap", Thread: "worker"}, profiles.VerdictAllow, 0, "worker-odd", true, 500 * time.Millisecond},
		{"no finding", Request{Syscall: "openat", Path: "/etc/hosts", Thread: "qemu-system-x86"}, profiles.VerdictAllow, 0, "default", false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := e.Decide(&c.req)
			if d.Action != c.action || d.Errno != c.errno || d.Rule != c.rule || d.Hold != c.hold || d.HoldFor != c.holdFor {
				t.Errorf("Decide = %v errno %d rule %q hold %v %v; want %v errno %d rule %q hold %v %v",
					d.Action, d.Errno, d.Rule, d.Hold, d.HoldFor, c.action, c.errno, c.rule, c.hold, c.holdFor)
			}
		})
	}
}

func TestHOIgnoresUnlistedDetectors(t *testing.T) {
	p := mustParse(t, engineBase+`
[[detector]]
name = "flood"
kind = "rate"
threshold = 1
window = "1s"
severity = "critical"
reason = "r"
[[ho]]
layers = ["L2"]
detectors = ["behaviour"]
deny = ">=low"
reason = "r"
`)
	e, err := NewEngine(p, (&clock{t0}).now)
	if err != nil {
		t.Fatal(err)
	}
	var last Decision
	for i := 0; i < 3; i++ {
		last = e.Decide(&Request{Syscall: "openat", Path: "/x", Thread: "worker"})
	}
	if last.Action != profiles.VerdictAllow {
		t.Errorf("rate finding denied by an HO that weighs behaviour only: %+v", last)
	}
}

func TestOriginFollowsLoadedLibraries(t *testing.T) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(profiles.ForAccel(p, []string{"tcg"}), (&clock{t0}).now)
	if err != nil {
		t.Fatal(err)
	}
	libc := AddrRange{Start: 0x7f1000000000, End: 0x7f1000200000}
	e.SetText([]AddrRange{libc})
	const mod = "/usr/lib/x86_64-linux-gnu/qemu/hw-display-virtio-gpu.so"
	fromMod := Request{Syscall: "openat", Thread: "qemu-system-x86", Path: "/usr/share/qemu/vgabios.bin", IP: 0x7f3000001010}
	if d := e.Decide(&fromMod); d.Action != profiles.VerdictDeny {
		t.Fatalf("call from unmapped code allowed: %+v", d)
	}
	// The loader maps the module's text over its reservation, MAP_FIXED.
	mapText := Request{Syscall: "mmap", Thread: "qemu-system-x86", IP: 0x7f1000100010, Backing: mod,
		Args: [6]uint64{0x7f3000001000, 0x2345, protRX, 0x812, 7, 0x1000}, Fds: map[int]string{4: mod}}
	if d := e.Decide(&mapText); d.Action != profiles.VerdictAllow {
		t.Fatalf("module text mapping: %+v", d)
	}
	if d := e.Decide(&fromMod); d.Action != profiles.VerdictAllow || len(d.Findings) != 0 {
		t.Errorf("call from the module's text: %+v", d)
	}
	// Anonymous executable memory (the TCG buffer) never becomes text.
	buf := Request{Syscall: "mprotect", Thread: "qemu-system-x86", IP: 0x7f1000100010, Backing: "anon",
		Args: [6]uint64{0x7f4000000000, 1 << 30, 7}}
	if d := e.Decide(&buf); d.Action != profiles.VerdictAllow {
		t.Fatalf("TCG buffer: %+v", d)
	}
	fromBuf := fromMod
	fromBuf.IP = 0x7f4000000100
	if d := e.Decide(&fromBuf); d.Action != profiles.VerdictDeny {
		t.Errorf("call from the TCG buffer allowed: %+v", d)
	}
}

func TestResetText(t *testing.T) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	outside := Request{Syscall: "openat", Path: "/usr/share/qemu/bios.bin", Thread: "qemu-system-x86", IP: 0x9000}
	e.SetText([]AddrRange{{Start: 0x1000, End: 0x2000}})
	if d := e.Decide(&outside); d.Action != profiles.VerdictDeny {
		t.Fatalf("a call from outside the text was %v", d.Action)
	}
	e.ResetText()
	if d := e.Decide(&outside); d.Action != profiles.VerdictAllow {
		t.Errorf("after ResetText origin is still judged: %v by %q", d.Action, d.Rule)
	}
}

// TestEngineInherit: an engine built from a reloaded profile takes over
// what the running one counted: a limited rule both profiles name keeps
// its count and its raise (a reload gives no vCPU or VM back), a rule
// the new profile adds starts from none, and the origin detector keeps
// QEMU's code ranges.
func TestEngineInherit(t *testing.T) {
	mk := func(extra string) *Engine {
		t.Helper()
		p, err := profiles.Parse("i.toml", []byte(`
name = "i"
[defaults]
verdict = "deny"
verdict_errno = "EACCES"
`+extra+`
[[rule]]
name = "once"
syscalls = ["ioctl"]
args = [{ index = 1, op = "eq", value = "KVM_CREATE_VM" }]
limit = 1
verdict = "allow"
reason = "one VM"
`))
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEngine(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	var vm [6]uint64
	vm[1] = 0xae01 // KVM_CREATE_VM
	req := func() *Request { return &Request{Syscall: "ioctl", PID: 10, TID: 10, Args: vm} }

	old := mk("")
	if d := old.Decide(req()); d.Rule != "once" {
		t.Fatalf("first VM: rule %q, want once", d.Rule)
	}
	old.RaiseLimit("once", 1)
	if d := old.Decide(req()); d.Rule != "once" {
		t.Fatalf("raised: rule %q, want once", d.Rule)
	}
	// The new profile puts a rule before "once": indices move, names stay.
	added := `
[[rule]]
name = "twice"
syscalls = ["ioctl"]
args = [{ index = 1, op = "eq", value = "KVM_CHECK_EXTENSION" }]
limit = 1
verdict = "allow"
reason = "new"
`
	fresh := mk(added)
	fresh.Inherit(old)
	if d := fresh.Decide(req()); d.Rule == "once" {
		t.Errorf("after Inherit: a third VM admitted by %q: the reload gave the limit back", d.Rule)
	}
	var ext [6]uint64
	ext[1] = 0xae03 // KVM_CHECK_EXTENSION
	if d := fresh.Decide(&Request{Syscall: "ioctl", PID: 10, TID: 10, Args: ext}); d.Rule != "twice" {
		t.Errorf("a rule new to the profile: rule %q, want twice (it starts from none)", d.Rule)
	}
	// Without Inherit the same engine would admit it: the test's check.
	if d := mk(added).Decide(req()); d.Rule != "once" {
		t.Errorf("a fresh engine: rule %q, want once", d.Rule)
	}
}
