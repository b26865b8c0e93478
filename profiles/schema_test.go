package profiles

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const head = "name = \"t\"\n"

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // every error, in order
	}{
		{
			name: "toml syntax",
			src:  "name = \"t\"\nx = [1,\n",
			want: []string{"t.toml:2:8: bad TOML: unexpected EOF; expected value"},
		},
		{
			name: "missing name",
			src:  "description = \"d\"\n",
			want: []string{"t.toml:1:1: missing name"},
		},
		{
			name: "unknown keys everywhere",
			src: head + "colour = 1\n[defaults]\nactoin = \"allow\"\n[[syscall]]\nnames = [\"read\"]\naction = \"allow\"\nreason = \"r\"\nargs = [{ index = 0, op = \"eq\", value = 1, vaule = 2 }]\n" +
				"[[rule]]\nname = \"r\"\nverdict = \"allow\"\nreason = \"r\"\npath = [\"/x\"]\n",
			want: []string{
				`t.toml:2:1: unknown key "colour" (want one of correlate, defaults, description, detector, ho, hrsc, interface, name, rule, syscall)`,
				`t.toml:4:1: unknown key "actoin" in [defaults] (want one of action, errno, landlock, verdict, verdict_errno)`,
				`t.toml:9:44: unknown key "vaule" in args (want one of index, mask, op, value, values, wide)`,
				`t.toml:14:1: unknown key "path" in [[rule]] (want one of accel, addresses, args, backing, errno, families, limit, name, needs, no_address, own_target, paths, reason, severity, syscalls, threads, verdict)`,
			},
		},
		{
			name: "wrong types",
			src:  head + "description = 3\n[[syscall]]\nnames = \"read\"\naction = true\nreason = \"r\"\n",
			want: []string{
				"t.toml:2:15: description: want a string, got integer",
				"t.toml:4:9: names: want an array of strings, got string",
				"t.toml:5:10: action: want a string, got boolean",
			},
		},
		{
			name: "unknown names",
			src: head + "[defaults]\naction = \"deny\"\nerrno = \"EPREM\"\n[[syscall]]\nnames = [\"read\", \"raed\"]\naction = \"allow\"\nreason = \"r\"\n" +
				"[[syscall]]\nnames = [\"ioctl\"]\naction = \"allow\"\nreason = \"r\"\nargs = [{ index = 1, op = \"in\", values = [\"KVM_RUN\", \"KVM_RUNN|0x1\"] }]\n",
			want: []string{
				`t.toml:4:9: errno: unknown errno "EPREM"`,
				`t.toml:6:18: unknown syscall "raed"`,
				`t.toml:13:54: unknown constant "KVM_RUNN"`,
			},
		},
		{
			name: "bad ops and indexes",
			src: head + "[[syscall]]\nnames = [\"mmap\"]\naction = \"allow\"\nreason = \"r\"\nargs = [\n" +
				"  { index = 6, op = \"eq\", value = 0 },\n" +
				"  { index = 2, op = \"lt\", value = 3 },\n" +
				"  { index = 2, op = \"like\", value = 3 },\n" +
				"  { index = 2, op = \"in\", values = [] },\n" +
				"  { index = 2, op = \"eq\", values = [1] },\n" +
				"  { index = 2, op = \"masked_eq\", value = 4 },\n" +
				"  { index = 2, op = \"masked_eq\", mask = 3, value = 4 },\n" +
				"  { index = 2, op = \"eq\", value = \"0x100000000\" },\n" +
				"]\n",
			want: []string{
				"t.toml:7:13: index 6 out of range 0..5",
				`t.toml:8:21: op "lt" needs wide = true: libseccomp compares all 64 bits, and the kernel reads int arguments from their low 32 bits only, so the high bits are the caller's to choose; use it only on 64-bit (size or pointer) arguments`,
				`t.toml:9:21: unknown op "like" (want eq, in, masked_eq, or with wide = true ne, lt, le, gt, ge)`,
				`t.toml:10:36: op "in" needs at least one value`,
				`t.toml:11:3: op "eq" needs value = x`,
				`t.toml:11:27: op "eq" takes one value = x, not values`,
				`t.toml:12:3: op "masked_eq" needs mask = x`,
				`t.toml:13:52: value 0x4 has bits outside mask 0x3: the condition can never hold`,
				`t.toml:14:35: value 0x100000000 does not fit in 32 bits; set wide = true to compare all 64 bits of a 64-bit argument`,
			},
		},
		{
			name: "errno without deny and missing reasons",
			src:  head + "[[syscall]]\nnames = [\"read\"]\naction = \"allow\"\nerrno = \"EPERM\"\n[[rule]]\nname = \"x\"\nverdict = \"allow\"\nerrno = 1\nreason = \" \"\n",
			want: []string{
				"t.toml:2:1: [[syscall]] has no reason: say why",
				`t.toml:5:1: errno is only allowed with action = "deny"`,
				`t.toml:9:1: errno is only allowed with verdict = "deny"`,
				"t.toml:10:10: reason must not be empty",
			},
		},
		{
			name: "duplicate and mixed syscall rules",
			src: head + "[[syscall]]\nnames = [\"read\", \"clone\"]\naction = \"allow\"\nreason = \"r\"\n" +
				"[[syscall]]\nnames = [\"read\"]\naction = \"deny\"\nreason = \"r\"\n" +
				"[[syscall]]\nnames = [\"clone\"]\naction = \"allow\"\nreason = \"r\"\nargs = [{ index = 0, op = \"masked_eq\", mask = \"CLONE_THREAD\", value = \"CLONE_THREAD\" }]\n",
			want: []string{
				`t.toml:3:18: syscall "clone" is allowed unconditionally but "clone3" (create processes) is inspected: when the supervisor is gone, inspected calls fail with ENOSYS and callers fall back to "clone"; inspect or deny it too, or allow it only under conditions`,
				`t.toml:7:10: syscall "read" already has an unconditional rule at t.toml:3:10`,
				`t.toml:11:10: syscall "clone" has an unconditional rule at t.toml:3:18 and a conditional one here: libseccomp lets the unconditional rule win, so the conditions would never apply; keep the conditional rules and let defaults.action decide the rest`,
			},
		},
		{
			name: "equivalent allowed",
			src:  head + "[[syscall]]\nnames = [\"openat2\"]\naction = \"allow\"\nreason = \"r\"\n",
			want: []string{
				`t.toml:3:10: syscall "openat2" is allowed unconditionally but "openat" (open files) is inspected: when the supervisor is gone, inspected calls fail with ENOSYS and callers fall back to "openat2"; inspect or deny it too, or allow it only under conditions`,
			},
		},
		{
			name: "equivalent allowed by default",
			src:  head + "[defaults]\naction = \"allow\"\n[[syscall]]\nnames = [\"execve\"]\naction = \"inspect\"\nreason = \"r\"\n",
			want: []string{
				`t.toml:3:10: syscall "execveat" is allowed by defaults.action but "execve" (run programs) is inspected: when the supervisor is gone, inspected calls fail with ENOSYS and callers fall back to "execveat"; inspect or deny it too, or allow it only under conditions`,
			},
		},
		{
			name: "rules",
			src: head + "[[rule]]\nname = \"a\"\nverdict = \"deny\"\nreason = \"r\"\n" +
				"[[rule]]\nname = \"a\"\npaths = [\"usr/lib\", \"/a/**x\"]\nfamilies = [\"AF_UNIXX\", 2]\naddresses = [\"10.0.0.1/8\", \"1.2.3.4:70000\", \"[::1]\"]\nthreads = [\"CPU [0-\"]\nverdict = \"maybe\"\nreason = \"r\"\n",
			want: []string{
				`t.toml:7:8: rule name "a" already used at t.toml:2:1`,
				`t.toml:8:10: path glob "usr/lib" must be absolute`,
				`t.toml:8:21: pattern "/a/**x": at offset 3: "**" must be a whole path element, as in "/a/**/b"`,
				`t.toml:9:13: unknown address family "AF_UNIXX"`,
				`t.toml:10:14: address "10.0.0.1/8": prefix 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)`,
				`t.toml:10:28: address "1.2.3.4:70000": bad port "70000" (want 0..65535 or FIRST-LAST)`,
				`t.toml:10:45: address "[::1]": want [IPv6]:PORT`,
				`t.toml:11:12: pattern "CPU [0-": at offset 4: unterminated "["`,
				`t.toml:12:11: verdict: unknown verdict "maybe" (want allow or deny)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.src))
			if err == nil {
				t.Fatal("Parse: no error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse error %T is not an ErrorList", err)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			var one *Error
			if !errors.As(err, &one) || one.Pos.Line == 0 {
				t.Errorf("errors.As(*Error) = %v", one)
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	src := `name = "ok"
description = "d"
[defaults]
action = "deny"
errno = "ENOSYS"
verdict = "allow"

[[syscall]]
names = ["read", "write"]
action = "allow"
reason = "hot"

[[syscall]]
names = ["openat", "open", "openat2", "creat", "open_by_handle_at"]
action = "inspect"
reason = "files"

[[syscall]]
names = ["mmap"]
action = "allow"
reason = "no exec"
args = [
  { index = 2, op = "masked_eq", mask = "PROT_EXEC", value = 0 },
  { index = 4, op = "eq", value = -1 },
  { index = 1, op = "lt", value = "0x100000000", wide = true },
]

[[rule]]
name = "lib"
syscalls = ["openat", "read"]
paths = ["/usr/lib/**"]
families = ["AF_UNIX", 10]
verdict = "deny"
reason = "x"
`
	p, err := Parse("ok.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.Name != "ok" || p.Description != "d" || p.Source != "ok.toml" {
		t.Errorf("header = %q %q %q", p.Name, p.Description, p.Source)
	}
	if p.DefaultAction != ActDeny || p.DefaultErrno != 38 || p.DefaultVerdict != VerdictAllow || p.DefaultVerdictErrno != 0 {
		t.Errorf("defaults = %v %d %v %d", p.DefaultAction, p.DefaultErrno, p.DefaultVerdict, p.DefaultVerdictErrno)
	}
	if len(p.Syscalls) != 3 {
		t.Fatalf("%d syscall rules", len(p.Syscalls))
	}
	args := p.Syscalls[2].Args
	want := []ArgCond{
		{Index: 2, Op: OpMaskedEq, Mask: 4, Values: []uint64{0}, Pos: Pos{"ok.toml", 23, 3}},
		{Index: 4, Op: OpEq, Values: []uint64{0xffffffff}, Pos: Pos{"ok.toml", 24, 3}},
		{Index: 1, Op: OpLt, Values: []uint64{1 << 32}, Wide: true, Pos: Pos{"ok.toml", 25, 3}},
	}
	for i := range want {
		g, w := args[i], want[i]
		if g.Index != w.Index || g.Op != w.Op || g.Mask != w.Mask || g.Wide != w.Wide || g.Pos != w.Pos || len(g.Values) != 1 || g.Values[0] != w.Values[0] {
			t.Errorf("arg %d = %+v, want %+v", i, g, w)
		}
	}
	r := p.Rules[0]
	if r.Verdict != VerdictDeny || r.Errno != 1 || len(r.Families) != 2 || r.Families[0] != 1 || r.Families[1] != 10 || r.Pos != (Pos{"ok.toml", 28, 1}) {
		t.Errorf("rule = %+v", r)
	}
	wantWarn := []string{
		`ok.toml:6:11: defaults.verdict = "allow" lets every inspected call no [[rule]] matches proceed`,
		`ok.toml:30:23: rule "lib" names syscall "read", which the kernel filter never sends to the supervisor: the rule cannot match it`,
	}
	if strings.Join(p.Warnings, "\n") != strings.Join(wantWarn, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(p.Warnings, "\n"), strings.Join(wantWarn, "\n"))
	}
}

func TestWarnDefaultAllow(t *testing.T) {
	p, err := Parse("w.toml", []byte("name = \"w\"\n[defaults]\naction = \"allow\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `w.toml:3:10: defaults.action = "allow" lets every syscall no [[syscall]] names through the kernel filter`
	if len(p.Warnings) != 1 || p.Warnings[0] != want {
		t.Errorf("warnings = %q, want %q", p.Warnings, want)
	}
}

func TestBuiltinsSmoke(t *testing.T) {
	names := BuiltinNames()
	if len(names) == 0 {
		t.Fatal("no builtin profiles")
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			p, err := Builtin(n)
			if err != nil {
				t.Fatalf("Builtin(%q): %v", n, err)
			}
			if p.Name != n || p.Source != "builtin:"+n {
				t.Errorf("name %q source %q", p.Name, p.Source)
			}
			if len(p.Warnings) > 0 {
				t.Errorf("warnings:\n%s", strings.Join(p.Warnings, "\n"))
			}
			for _, r := range p.Syscalls {
				if r.Reason == "" {
					t.Errorf("%s: syscall rule without reason", r.Pos)
				}
			}
		})
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mine.toml")
	if err := os.WriteFile(file, []byte("name = \"mine\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, arg, wantName, wantErr string
	}{
		{"builtin", "qemu", "qemu", ""},
		{"file", file, "mine", ""},
		{"unknown builtin", "qemu-tcg", "", `no builtin profile "qemu-tcg" (builtins: qemu)`},
		{"missing file", filepath.Join(dir, "none.toml"), "", "read profile: open " + filepath.Join(dir, "none.toml") + ": no such file or directory"},
		{"toml suffix is a file", "none.toml", "", "read profile: open none.toml: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Resolve(tt.arg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("Resolve(%q) error = %v, want %q", tt.arg, err, tt.wantErr)
				}
				return
			}
			if err != nil || p.Name != tt.wantName {
				t.Errorf("Resolve(%q) = %v, %v", tt.arg, p, err)
			}
		})
	}
}

// TestWarnAllowByReference: an allow rule for a by-path syscall kfv does
// not perform itself is warned about; one for a syscall it performs, or a
// deny, is not.
func TestWarnAllowByReference(t *testing.T) {
	src := `name = "r"
[defaults]
action = "inspect"

[[rule]]
name = "dirs"
syscalls = ["rmdir", "unlink"]
paths = ["/srv/vm/**"]
verdict = "allow"
reason = "x"

[[rule]]
name = "no-rename"
syscalls = ["rename"]
verdict = "deny"
reason = "x"
`
	p, err := Parse("r.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := `r.toml:7:13: rule "dirs" allows "rmdir", which kfv does not perform itself: the call continues after the check, and another thread of QEMU can rewrite its path in between; such a rule holds only against a QEMU that does not race its own arguments`
	if len(p.Warnings) != 1 || p.Warnings[0] != want {
		t.Errorf("warnings = %q, want %q", p.Warnings, want)
	}
}
