//go:build linux

package supervisor

import (
	"slices"

	"golang.org/x/sys/unix"

	"kfv/policy"
	"kfv/profiles"
	"kfv/sysent"
)

// The wall is a second line behind the profile: it stands whatever the
// profile says. It rests on kfv performing the calls it allows; a profile
// that lets a call through the kernel filter (allow), or allows it by a
// rule and lets it continue (kfv does not perform it), leaves QEMU to make
// that call in its own domain, where the wall refuses it. That is the
// point when the rule is a mistake, and a surprise when it is not: kfv
// names every such call in a warning at start, and a profile whose QEMU
// must make them itself says landlock = "off". The built-in profile lets
// none of them through.

// Filesystem rights each kind of by-path call needs.
var landlockRightsOf = map[sysent.Effect]uint64{
	sysent.OpenFiles: unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV,
	sysent.RunPrograms:  unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE,
	sysent.RemoveFiles:  unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR,
	sysent.MakeDirs:     unix.LANDLOCK_ACCESS_FS_MAKE_DIR,
	sysent.MakeNodes:    unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_REG,
	sysent.MakeSymlinks: unix.LANDLOCK_ACCESS_FS_MAKE_SYM,
	sysent.RenameFiles:  unix.LANDLOCK_ACCESS_FS_REFER | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_SYM | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK,
	sysent.LinkFiles:    unix.LANDLOCK_ACCESS_FS_REFER | unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SYM | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK,
}

// landlockRightsOfCall is for by-path calls with no effect group.
var landlockRightsOfCall = map[string]uint64{
	"truncate": unix.LANDLOCK_ACCESS_FS_TRUNCATE,
}

// kernelOpens adds to the plan the trees where the kernel itself opens
// files in QEMU's name for what the profile admits: a pty chardev's slave
// (TIOCGPTPEER, rule vm-pty-peer), which QEMU then sets up with ioctls.
// Opening a pty by path stays kfv's decision (no rule admits /dev/pts/*).
func kernelOpens(p *landlockPlan, prof *profiles.Profile) {
	if p == nil || prof == nil {
		return
	}
	if slices.ContainsFunc(prof.Rules, func(r profiles.VerdictRule) bool { return r.Name == policy.PtyPeerRuleName }) {
		p.Beneath = append(p.Beneath, landlockTree{Path: "/dev/pts", Access: unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV})
	}
}

// landlockConflicts names what the profile lets QEMU do itself that the
// wall refuses.
func landlockConflicts(p *landlockPlan, prof *profiles.Profile) []string {
	if p == nil || prof == nil {
		return nil
	}
	var why []string
	for _, e := range sysent.Entries() {
		if e.Object != sysent.Path && e.Effect != sysent.RunPrograms && e.Effect != sysent.OpenFiles {
			continue
		}
		rights := landlockRightsOf[e.Effect] | landlockRightsOfCall[e.Name]
		if rights == 0 || p.FS&rights == 0 {
			continue
		}
		switch {
		case kernelMayAllow(prof, e.Name):
			why = append(why, e.Name+" (allowed in the kernel)")
		case (!e.Performed() || e.Effect == sysent.RunPrograms) && verdictMayAllow(prof, e.Name):
			why = append(why, e.Name+" (allowed by a rule, not performed by kfv)")
		}
	}
	if p.Net != 0 {
		for _, sc := range []string{"connect", "bind"} {
			if kernelMayAllow(prof, sc) {
				why = append(why, sc+" over TCP (allowed in the kernel)")
			}
		}
	}
	if p.Scoped&unix.LANDLOCK_SCOPE_SIGNAL != 0 {
		for _, sc := range sysent.Select(func(e *sysent.Entry) bool { return e.Effect == sysent.SendSignals }) {
			if signalsOthers(prof, sc) {
				why = append(why, sc+" to other processes")
			}
		}
		if ownerAnyCommand(prof) {
			why = append(why, "fcntl's signal owners (F_SETOWN to other processes)")
		}
	}
	return why
}

// ownerAnyCommand says whether the kernel filter allows fcntl whatever
// its command, F_SETOWN to another process included (SIGIO, which the
// wall's signal scope refuses).
func ownerAnyCommand(p *profiles.Profile) bool {
	for _, r := range p.Syscalls {
		if r.Action == profiles.ActAllow && slices.Contains(r.Names, "fcntl") &&
			!slices.ContainsFunc(r.Args, func(c profiles.ArgCond) bool { return c.Index == 1 }) {
			return true
		}
	}
	return !slices.ContainsFunc(p.Syscalls, func(r profiles.SyscallRule) bool { return slices.Contains(r.Names, "fcntl") }) &&
		p.DefaultAction == profiles.ActAllow
}

// kernelMayAllow says whether the kernel filter lets some call of sc
// through without asking kfv.
func kernelMayAllow(p *profiles.Profile, sc string) bool {
	named := false
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, sc) {
			continue
		}
		named = true
		if r.Action == profiles.ActAllow {
			return true
		}
	}
	return !named && p.DefaultAction == profiles.ActAllow
}

// verdictMayAllow says whether some verdict rule, or the default
// verdict, allows an inspected sc.
func verdictMayAllow(p *profiles.Profile, sc string) bool {
	for _, r := range p.Rules {
		if r.Verdict == profiles.VerdictAllow && (len(r.Syscalls) == 0 || slices.Contains(r.Syscalls, sc)) {
			return true
		}
	}
	return p.DefaultVerdict == profiles.VerdictAllow
}

// signalsOthers says whether the profile lets sc, a call that sends a
// signal, reach a process other than QEMU: allowed in the kernel or by a
// rule without the condition that its first argument is QEMU's pid.
func signalsOthers(p *profiles.Profile, sc string) bool {
	selfOnly := func(conds []profiles.ArgCond) bool {
		return slices.ContainsFunc(conds, func(c profiles.ArgCond) bool { return c.Index == 0 && c.Op == profiles.OpEq && c.Self })
	}
	named := false
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, sc) {
			continue
		}
		named = true
		if r.Action == profiles.ActAllow && !selfOnly(r.Args) {
			return true
		}
	}
	if !named && p.DefaultAction == profiles.ActAllow {
		return true
	}
	for _, r := range p.Rules {
		if r.Verdict == profiles.VerdictAllow && (len(r.Syscalls) == 0 || slices.Contains(r.Syscalls, sc)) && !selfOnly(r.Args) {
			return true
		}
	}
	return p.DefaultVerdict == profiles.VerdictAllow
}
