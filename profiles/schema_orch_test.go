package profiles

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseDecisionPlane(t *testing.T) {
	p, err := Parse("t.toml", []byte(`name = "t"
[[syscall]]
names = ["ptrace"]
action = "deny"
severity = "high"
reason = "r"
[[rule]]
name = "no-exec"
syscalls = ["execve"]
verdict = "deny"
severity = "critical"
reason = "r"
[[hrsc]]
name = "vcpu*"
threads = ["CPU */KVM", "CPU */TCG"]
numbered = true
reason = "vCPUs"
[[hrsc]]
name = "tap"
fds = ["/dev/net/tun"]
layer = "L1"
reason = "tap"
[[interface]]
layer = "L1"
syscalls = ["mmap"]
reason = "memory"
[[detector]]
name = "vcpu-no-files"
kind = "behaviour"
hrsc = ["vcpu*"]
syscalls = ["openat"]
reason = "r"
[[detector]]
name = "open-flood"
kind = "rate"
syscalls = ["openat"]
threshold = 100
window = "1s"
reason = "r"
[[detector]]
name = "origin"
kind = "origin"
enabled = false
reason = "r"
[[ho]]
layers = ["L1", "L2"]
detectors = "origin"
deny = ">=high"
hold = "medium"
hold_for = "250ms"
hold_verdict = "allow"
reason = "r"
[[correlate]]
name = "ladder"
match = { layer = "L1", hrsc = ["vcpu*", "block-worker"], detector = "signature", severity = ">=medium", syscall = "openat" }
count = 3
window = "10s"
per = "vm"
reactions = ["pause", "link_down:all-nics", "device_del:net0", "kill"]
cooldown = "1m"
reason = "r"
[[correlate]]
name = "all"
match = {}
reactions = ["scrub"]
once = true
reason = "r"
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Syscalls[0].Severity != SevHigh || p.Rules[0].Severity != SevCritical {
		t.Errorf("severities %v %v", p.Syscalls[0].Severity, p.Rules[0].Severity)
	}
	wantH := []HRSC{
		{Name: "vcpu*", Threads: []string{"CPU */KVM", "CPU */TCG"}, Numbered: true, Reason: "vCPUs", Pos: Pos{"t.toml", 13, 1}},
		{Name: "tap", Fds: []string{"/dev/net/tun"}, Layer: "L1", Reason: "tap", Pos: Pos{"t.toml", 18, 1}},
	}
	if !reflect.DeepEqual(p.HRSCs, wantH) {
		t.Errorf("HRSCs = %+v\nwant %+v", p.HRSCs, wantH)
	}
	if len(p.Interfaces) != 1 || p.Interfaces[0].Layer != "L1" {
		t.Errorf("Interfaces = %+v", p.Interfaces)
	}
	d := p.Detectors
	if len(d) != 3 || d[0].Kind != DetBehaviour || d[0].Severity != SevHigh ||
		d[1].Kind != DetRate || d[1].Threshold != 100 || d[1].Window != time.Second || d[1].Severity != SevMedium ||
		d[2].Kind != DetOrigin || !d[2].Disabled || d[2].Severity != SevCritical {
		t.Errorf("Detectors = %+v", d)
	}
	wantHO := HOPolicy{Layers: []string{"L1", "L2"}, Detectors: []string{"origin"},
		Deny: SeverityMatch{CmpGe, SevHigh}, DenyErrno: 13,
		Hold: SeverityMatch{CmpEq, SevMedium}, HoldFor: 250 * time.Millisecond, HoldVerdict: VerdictAllow,
		Reason: "r", Pos: Pos{"t.toml", 45, 1}}
	if !reflect.DeepEqual(p.HO, []HOPolicy{wantHO}) {
		t.Errorf("HO = %+v\nwant %+v", p.HO, wantHO)
	}
	c := p.Correlate[0]
	wantM := FindingMatch{Layers: []string{"L1"}, HRSC: []string{"vcpu*", "block-worker"}, Detectors: []string{"signature"},
		Severity: SeverityMatch{CmpGe, SevMedium}, Syscalls: []string{"openat"}}
	if !reflect.DeepEqual(c.Match, wantM) || c.Count != 3 || c.Window != 10*time.Second || !c.PerVM || c.Cooldown != time.Minute || c.Once {
		t.Errorf("correlate = %+v", c)
	}
	wantR := []ReactionSpec{{ReactPause, ""}, {ReactLinkDown, AllNICs}, {ReactDeviceDel, "net0"}, {ReactKill, ""}}
	if !reflect.DeepEqual(c.Reactions, wantR) {
		t.Errorf("reactions = %v", c.Reactions)
	}
	if a := p.Correlate[1]; a.Count != 1 || !a.Once || a.Match.String() != "any finding" {
		t.Errorf("second correlate = %+v", a)
	}
}

func TestDecisionPlaneErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "severity only on denials",
			src: head + `[[syscall]]
names = ["read"]
action = "allow"
severity = "high"
reason = "r"
[[rule]]
name = "a"
verdict = "allow"
severity = "low"
reason = "r"
[[rule]]
name = "b"
verdict = "deny"
severity = "severe"
reason = "r"
`,
			want: []string{
				`t.toml:5:1: severity is only allowed with action = "deny": it grades the finding a denial makes`,
				`t.toml:10:1: severity is only allowed with verdict = "deny": it grades the finding a denial makes`,
				`t.toml:15:12: severity: unknown severity "severe" (want low, medium, high or critical)`,
			},
		},
		{
			name: "hrsc",
			src: head + `[[hrsc]]
name = "vcpu*"
threads = ["CPU [0-9]*/KVM"]
reason = "r"
[[hrsc]]
name = "x"
numbered = true
layer = "L4"
reason = "r"
[[hrsc]]
name = "a*b*"
threads = ["a*"]
[[hrsc]]
name = "y*"
fds = ["/dev/kvm"]
reason = "r"
`,
			want: []string{
				`t.toml:4:12: threads glob "CPU [0-9]*/KVM" must have exactly one "*" and no other wildcard to fill the "*" of name "vcpu*"`,
				`t.toml:6:1: [[hrsc]] needs threads or fds: without either it would take every call`,
				`t.toml:8:1: numbered needs a "*" in name`,
				`t.toml:9:9: unknown layer "L4" (want L1, L2 or L3)`,
				`t.toml:11:1: [[hrsc]] has no reason: say why`,
				`t.toml:12:8: name "a*b*" has more than one "*"`,
				`t.toml:15:8: name "y*" has a "*" but no threads glob to fill it`,
			},
		},
		{
			name: "interface",
			src: head + `[[interface]]
reason = "r"
[[interface]]
layer = "L1"
syscalls = ["nosuch"]
fds = ["/dev/[kvm"]
reason = "r"
`,
			want: []string{
				`t.toml:2:1: [[interface]] has no layer`,
				`t.toml:2:1: [[interface]] needs syscalls or fds`,
				`t.toml:6:13: unknown syscall "nosuch"`,
				`t.toml:7:8: pattern "/dev/[kvm": at offset 5: unterminated "["`,
			},
		},
		{
			name: "detectors",
			src: head + `[[detector]]
name = "b"
kind = "behaviour"
threshold = 3
reason = "r"
[[detector]]
name = "r"
kind = "rate"
threshold = 0
window = "-1s"
reason = "r"
[[detector]]
name = "b"
kind = "origin"
hrsc = ["x\\"]
reason = "r"
[[detector]]
name = "o2"
kind = "origin"
enabled = "yes"
reason = "r"
[[detector]]
name = "q"
kind = "magic"
reason = "r"
`,
			want: []string{
				`t.toml:2:1: behaviour detector "b" has no hrsc: whose behaviour?`,
				`t.toml:2:1: behaviour detector "b" has no syscalls: the calls its resources never make`,
				`t.toml:5:1: threshold is only for rate detectors`,
				`t.toml:10:13: threshold 0 out of range 1..100000`,
				`t.toml:11:10: window: duration "-1s" must be positive`,
				`t.toml:14:8: detector name "b" already used at t.toml:2:1`,
				`t.toml:16:1: hrsc is only for behaviour and rate detectors`,
				`t.toml:16:9: name pattern ends in "\": escape what?`,
				`t.toml:20:8: a second origin detector (the first is at t.toml:13:1): there is one text of QEMU to compare with`,
				`t.toml:21:11: enabled: want true or false, got string`,
				`t.toml:25:8: unknown detector kind "magic" (want behaviour, rate or origin)`,
			},
		},
		{
			name: "detector except_paths",
			src: head + `[[detector]]
name = "b"
kind = "behaviour"
hrsc = ["vcpu*"]
syscalls = ["openat"]
except_paths = ["/sys/[cpu"]
reason = "r"
[[detector]]
name = "r"
kind = "rate"
threshold = 3
window = "1s"
except_paths = ["/sys/**"]
reason = "r"
`,
			want: []string{
				`t.toml:7:17: pattern "/sys/[cpu": at offset 5: unterminated "["`,
				`t.toml:14:1: except_paths is only for behaviour detectors`,
			},
		},
		{
			name: "ho",
			src: head + `[[ho]]
layers = ["L1"]
detectors = ["signature", "memwatch", "nose"]
hold = ">=medium"
reason = "r"
[[ho]]
layers = "L1"
hold_for = "1s"
errno = "EPERM"
reason = "r"
[[ho]]
layers = ["L2"]
deny = ">critical"
reason = "r"
`,
			want: []string{
				`t.toml:4:14: the signature detector's verdict is the rules' own: list behaviour, origin or rate`,
				`t.toml:4:27: memwatch findings are about memory, not a call: they go to [[correlate]] rules`,
				`t.toml:4:39: unknown detector "nose" (want behaviour, origin or rate)`,
				`t.toml:5:1: hold needs hold_for: how long a thread may wait for the VO`,
				`t.toml:7:1: [[ho]] needs deny or hold: without them it only repeats the rules`,
				`t.toml:8:10: layer L1 already has an [[ho]] policy at t.toml:2:1`,
				`t.toml:9:1: hold_for is only allowed with hold`,
				`t.toml:10:1: errno is only allowed with deny`,
				`t.toml:14:8: deny: severity condition ">critical" can never hold`,
			},
		},
		{
			name: "correlate",
			src: head + `[[correlate]]
name = "a"
count = 3
reactions = ["pause", "deny", "link_down", "link_down:1net", "device_del:all-nics", "kill:now", "explode"]
reason = "r"
[[correlate]]
name = "a"
match = { layer = "L0", hrsc = 3, detector = "magic", severity = "huge", syscall = "nosuch", colour = "red" }
reactions = []
per = "thread"
once = true
cooldown = "1s"
reason = "r"
`,
			want: []string{
				`t.toml:2:1: [[correlate]] has no match: say which findings it counts (match = {} counts all)`,
				`t.toml:4:1: count = 3 needs a window: within how long?`,
				`t.toml:5:23: deny is a verdict on one call, given by the rules and [[ho]]; a [[correlate]] rule orders wider reactions`,
				`t.toml:5:31: reaction "link_down" needs a target: link_down:ID (a QEMU device or netdev id) or link_down:all-nics`,
				`t.toml:5:44: reaction "link_down:1net": "1net" is not a QEMU id (a letter, then letters, digits, '-', '.' or '_')`,
				`t.toml:5:62: reaction "device_del:all-nics": device_del takes one device id, not all-nics`,
				`t.toml:5:85: reaction "kill" takes no target`,
				`t.toml:5:97: unknown reaction "explode" (want one of deny, hold, pause, continue, link_down, link_up, device_del, restart, restart_checkpoint, kill, scrub)`,
				`t.toml:8:8: correlate rule name "a" already used at t.toml:2:1`,
				`t.toml:9:19: unknown layer "L0" (want L1, L2 or L3)`,
				`t.toml:9:32: hrsc: want a string or an array of strings, got integer`,
				`t.toml:9:46: unknown detector "magic" (want one of behaviour, memwatch, origin, rate, signature)`,
				`t.toml:9:66: severity: severity condition "huge": want a severity (low, medium, high, critical), optionally after >=, >, <=, < or ==`,
				`t.toml:9:84: unknown syscall "nosuch"`,
				`t.toml:9:94: unknown key "colour" in match (want one of detector, hrsc, layer, severity, syscall)`,
				`t.toml:10:13: reactions must not be empty`,
				`t.toml:11:7: per: want "hrsc" (count each resource apart) or "vm" (count them together), got "thread"`,
				`t.toml:13:1: once and cooldown exclude each other: once never fires again, cooldown fires again after a pause`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.src))
			if err == nil {
				t.Fatal("Parse: no error")
			}
			got := err.Error()
			if want := strings.Join(tt.want, "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestSeverityWarning(t *testing.T) {
	p, err := Parse("t.toml", []byte(head+`[[syscall]]
names = ["io_uring_setup"]
action = "deny"
silent = true
severity = "high"
reason = "r"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"t.toml:6:1: severity has no effect with silent = true: the kernel fails the call without telling kfv"}
	if !reflect.DeepEqual(p.Warnings, want) {
		t.Errorf("Warnings = %q", p.Warnings)
	}
}
