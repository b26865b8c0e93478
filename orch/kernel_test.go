package orch

import (
	"testing"

	"kfv/profiles"
)

func TestKernelStep(t *testing.T) {
	p, err := profiles.Parse("k.toml", []byte(`
name = "k"
[defaults]
action = "inspect"
verdict = "allow"
[[syscall]]
name = "no-mount"
names = ["mount", "umount2"]
action = "deny"
errno = "EPERM"
reason = "never"
[[syscall]]
names = ["mprotect"]
action = "allow"
args = [{ index = 2, op = "masked_eq", mask = "PROT_EXEC", value = 0 }]
reason = "no exec"
[[syscall]]
names = ["mprotect"]
action = "deny"
errno = "EACCES"
args = [{ index = 2, op = "masked_eq", mask = "PROT_EXEC", value = "PROT_EXEC" }]
reason = "exec"
[[rule]]
name = "no-openat"
syscalls = ["openat"]
verdict = "deny"
errno = "ENOENT"
reason = "test"
`))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		req    Request
		action profiles.Verdict
		errno  int
		rule   string
	}{
		{"logged kernel deny", Request{Syscall: "umount2"}, profiles.VerdictDeny, 1, "no-mount"},
		{"conditional deny on exec bit", Request{Syscall: "mprotect", Args: [6]uint64{0, 4096, 5}}, profiles.VerdictDeny, 13, "syscall:mprotect"},
		{"exec bit in high half does not count", Request{Syscall: "mprotect", Args: [6]uint64{0, 4096, 1 << 34}}, profiles.VerdictAllow, 0, "syscall:mprotect"},
		{"inspected goes to verdict rules", Request{Syscall: "openat"}, profiles.VerdictDeny, 2, "no-openat"},
		{"inspected default verdict", Request{Syscall: "socket"}, profiles.VerdictAllow, 0, "default"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := rs.Decide(&c.req)
			if d.Action != c.action || d.Errno != c.errno || d.Rule != c.rule {
				t.Errorf("Decide = %v errno %d rule %q, want %v errno %d rule %q", d.Action, d.Errno, d.Rule, c.action, c.errno, c.rule)
			}
		})
	}
}

func TestSelfPID(t *testing.T) {
	p, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	const sigusr1, sigkill = 10, 9
	cases := []struct {
		name string
		req  Request
		want profiles.Verdict
	}{
		{"kick own thread", Request{Syscall: "tgkill", PID: 100, Args: [6]uint64{100, 101, sigusr1}}, profiles.VerdictAllow},
		{"kill self", Request{Syscall: "kill", PID: 100, Args: [6]uint64{100, sigkill}}, profiles.VerdictAllow},
		{"kick a neighbour", Request{Syscall: "tgkill", PID: 100, Args: [6]uint64{200, 200, sigusr1}}, profiles.VerdictDeny},
		{"kill a neighbour", Request{Syscall: "kill", PID: 100, Args: [6]uint64{200, sigkill}}, profiles.VerdictDeny},
		{"kill every process", Request{Syscall: "kill", PID: 100, Args: [6]uint64{0xffffffff, sigkill}}, profiles.VerdictDeny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := rs.Decide(&c.req); d.Action != c.want {
				t.Errorf("Decide = %v by %q, want %v", d.Action, d.Rule, c.want)
			}
		})
	}
}
