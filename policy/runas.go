package policy

import (
	"os/user"
	"strconv"
	"strings"

	"kfv/profiles"
	"kfv/resources"
)

// RunAsRules returns the rules for a QEMU that changes its user once it
// is set up (-runas, -run-with user=: set.RunAs), nil for any other:
// setgid and setuid to that user's group and user exactly, setgroups
// (initgroups), and setuid(0), with which QEMU checks that root is gone. glibc makes every thread of the process make each call
// (its setxid broadcast), so the rules hold for every thread. setgroups'
// list is in memory the rules cannot read; it only takes effect while
// QEMU is still root, which can do anything such a list would give, and
// the kernel refuses it once setuid has left root. ids looks a user up on
// this host (LookupIDs); a user it cannot find gets no rule (QEMU then
// fails to find it too, and says so).
func RunAsRules(set *resources.Set, ids func(string) (uid, gid uint64, ok bool)) []profiles.VerdictRule {
	if set.RunAs == "" {
		return nil
	}
	uid, gid, ok := ids(set.RunAs)
	if !ok {
		return nil
	}
	why := "-runas " + set.RunAs + ": QEMU changes to that user once set up (os_setup_post), from every thread (glibc's setxid broadcast)"
	return []profiles.VerdictRule{{
		Name:     "vm-runas-setgid",
		Syscalls: []string{"setgid"},
		Args:     []profiles.ArgCond{{Index: 0, Op: profiles.OpEq, Values: []uint64{gid}}},
		Verdict:  profiles.VerdictAllow,
		Reason:   why + ": its group",
	}, {
		Name:     "vm-runas-setgroups",
		Syscalls: []string{"setgroups"},
		Verdict:  profiles.VerdictAllow,
		Reason:   why + ": its supplementary groups (initgroups), which only root may set",
	}, {
		Name:     "vm-runas-setuid",
		Syscalls: []string{"setuid"},
		Args:     []profiles.ArgCond{{Index: 0, Op: profiles.OpIn, Values: []uint64{uid, 0}}},
		Verdict:  profiles.VerdictAllow,
		Reason: why + ": its user; then QEMU checks that setuid(0) fails (measured on 7.2 and 10.0), which the kernel sees to: " +
			"once QEMU left root it cannot get back, and before that setuid(0) changes nothing",
	}}
}

// LookupIDs resolves the user of -runas as QEMU does: a user name, else
// UID:GID.
func LookupIDs(name string) (uid, gid uint64, ok bool) {
	if u, err := user.Lookup(name); err == nil {
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		return uid, gid, err1 == nil && err2 == nil
	}
	us, gs, cut := strings.Cut(name, ":")
	if !cut {
		return 0, 0, false
	}
	uid, err1 := strconv.ParseUint(us, 10, 32)
	gid, err2 := strconv.ParseUint(gs, 10, 32)
	return uid, gid, err1 == nil && err2 == nil
}
