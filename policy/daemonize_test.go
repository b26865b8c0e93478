package policy

import (
	"testing"
	"testing/fstest"

	"kfv/orch"
	"kfv/profiles"
)

// TestDaemonizeForks runs QEMU's -daemonize sequence through the
// built-in profile prepared for its command line: the two forks, each
// from its process's main thread, are admitted; every other fork, before
// and after, is refused by the profile's no-fork.
func TestDaemonizeForks(t *testing.T) {
	base, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-accel", "kvm", "-nodefaults", "-daemonize", "-pidfile", "/run/vm1.pid"}
	p, _, err := PrepareProfile(base, args, nil, "/work", fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	const q1, q2, q3 = 100, 200, 300
	fork := func(pid, tid int) *orch.Request {
		return &orch.Request{Syscall: "clone", PID: pid, TID: tid, Thread: "qemu-system-x86", Args: [6]uint64{glibcForkFlags}}
	}
	steps := []struct {
		name string
		req  *orch.Request
		want profiles.Verdict
		rule string
	}{
		{"another thread of the first process races the fork", fork(q1, q1+1), profiles.VerdictDeny, "no-fork"},
		{"a fork with other flags (a thread-less clone sharing memory)", &orch.Request{Syscall: "clone", PID: q1, TID: q1, Args: [6]uint64{glibcForkFlags | 0x100}}, profiles.VerdictDeny, "no-fork"},
		{"a fork from a process that has a vCPU", &orch.Request{Syscall: "clone", PID: q1, TID: q1, HasVCPU: true, Args: [6]uint64{glibcForkFlags}}, profiles.VerdictDeny, "no-fork"},
		{"vfork", &orch.Request{Syscall: "vfork", PID: q1, TID: q1}, profiles.VerdictDeny, "no-fork"},
		{"the first fork", fork(q1, q1), profiles.VerdictAllow, "vm-daemonize"},
		{"the first process again", fork(q1, q1), profiles.VerdictDeny, "no-fork"},
		{"the child's other thread", fork(q2, q2+1), profiles.VerdictDeny, "no-fork"},
		{"the child's fork of the daemon", fork(q2, q2), profiles.VerdictAllow, "vm-daemonize"},
		{"the daemon", fork(q3, q3), profiles.VerdictDeny, "no-fork"},
		{"the child again", fork(q2, q2), profiles.VerdictDeny, "no-fork"},
	}
	for _, mk := range []func() (orch.Decider, func()){
		func() (orch.Decider, func()) {
			rs, err := orch.NewRules(p)
			if err != nil {
				t.Fatal(err)
			}
			return rs, func() {}
		},
		func() (orch.Decider, func()) {
			e, err := orch.NewEngine(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			return e, e.ResetDaemonize
		},
	} {
		dec, reset := mk()
		for round := 0; round < 2; round++ {
			for _, s := range steps {
				if d := dec.Decide(s.req); d.Action != s.want || d.Rule != s.rule {
					t.Errorf("%T round %d, %s: %v by %q, want %v by %q", dec, round, s.name, d.Action, d.Rule, s.want, s.rule)
				}
			}
			reset()
			if _, ok := dec.(*orch.Rules); ok {
				break
			}
		}
	}

	// Without -daemonize no fork is admitted.
	p, _, err = PrepareProfile(base, []string{"-accel", "kvm", "-nodefaults"}, nil, "/work", fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := orch.NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := rs.Decide(fork(q1, q1)); d.Action != profiles.VerdictDeny || d.Rule != "no-fork" {
		t.Errorf("fork without -daemonize: %v by %q, want a denial by no-fork", d.Action, d.Rule)
	}
}
