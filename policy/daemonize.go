package policy

import (
	"slices"

	"kfv/profiles"
	"kfv/resources"
	"kfv/sysent"
)

// glibc's fork() is clone(CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD,
// NULL stack) on x86_64 (glibc 2.36, Debian 12, for QEMU 7.2 and 10.0
// alike; measured with strace -f). clone3 never reaches kfv: the filter
// answers it ENOSYS, and glibc falls back to clone.
const (
	cloneChildSettid   = 0x01000000
	cloneChildCleartid = 0x00200000
	sigchld            = 17
	glibcForkFlags     = cloneChildSettid | cloneChildCleartid | sigchld
)

// DaemonizeRuleName names the rule that admits the daemonizing forks: the
// supervisor follows the process such a fork makes.
const DaemonizeRuleName = "vm-daemonize"

// DaemonizeRule returns the rules for QEMU's -daemonize when its command
// line has it (set.Daemonize), and nil otherwise: its forks (glibc's fork
// exactly, and orch admits only DaemonizeForks of them, each from a
// process's main thread before it has a vCPU, once per process:
// profiles.VerdictRule.Daemonize), its setsid and umask, and its chdir
// to /. The pidfile is a file of the VM's set like any other.
func DaemonizeRule(set *resources.Set) []profiles.VerdictRule {
	if !set.Daemonize {
		return nil
	}
	return []profiles.VerdictRule{{
		Name:     DaemonizeRuleName,
		Syscalls: []string{"clone"},
		Args: []profiles.ArgCond{
			{Index: 0, Op: profiles.OpEq, Values: []uint64{glibcForkFlags}, Wide: true},
			{Index: 1, Op: profiles.OpEq, Values: []uint64{0}, Wide: true},
		},
		Verdict:   profiles.VerdictAllow,
		Daemonize: true,
		Reason:    "-daemonize: QEMU forks, its child calls setsid and forks the daemon; each fork from the main thread of a process without a vCPU, once per process, two in all. Any other process creation is refused",
	}, {
		Name:     "vm-daemonize-session",
		Syscalls: []string{"setsid", "umask"},
		Verdict:  profiles.VerdictAllow,
		Reason:   "-daemonize: the child leaves the caller's session (setsid), the daemon sets umask 027 (os_daemonize); neither reaches anything outside QEMU",
	}, {
		Name:     "vm-daemonize-chdir",
		Syscalls: []string{"chdir"},
		Paths:    []string{"/"},
		Verdict:  profiles.VerdictAllow,
		Reason:   "-daemonize: once ready the daemon changes to / (os_setup_post), so that it holds no directory of its caller",
	}}
}

// daemonizeRuleAt is where DaemonizeRule goes in a profile's rules:
// before the first rule about process creation, except the rules that
// refuse processes to some threads (a vCPU thread forking is a payload,
// whatever the command line), so that the profile's refusal of forks
// (no-fork) still answers every fork the rule does not admit.
func daemonizeRuleAt(rules []profiles.VerdictRule) int {
	for i, r := range rules {
		forks := slices.ContainsFunc(r.Syscalls, func(sc string) bool {
			e, ok := sysent.Lookup(sc)
			return ok && e.Effect == sysent.CreateProcesses
		})
		if forks && !(r.Verdict == profiles.VerdictDeny && len(r.Threads) > 0) {
			return i
		}
	}
	return len(rules)
}
