package policy

import (
	"slices"
	"sort"
	"strings"

	"kfv/profiles"
	"kfv/resources"
	"kfv/sysent"
)

// The calls the VM's rules name, from the syscall table: the opens and
// the removals kfv performs itself (it decides on the path, then acts on
// the object it resolved, so a rule by path holds), and every call that
// sends to an address.
var (
	openCalls = sysent.Select(func(e *sysent.Entry) bool {
		return e.Effect == sysent.OpenFiles && e.Perform == sysent.PerformOpen
	})
	removeCalls = sysent.Select(func(e *sysent.Entry) bool {
		return e.Effect == sysent.RemoveFiles && e.Perform == sysent.PerformUnlink
	})
	sendCalls = sysent.Select(func(e *sysent.Entry) bool { return e.Effect == sysent.SendToAddress })
	// A writable share's file work, every call kfv performs on the
	// entries it resolved: making, renaming, linking and removing
	// entries, and changing modes, owners and times.
	shareEntryCalls = sysent.Select(func(e *sysent.Entry) bool {
		switch e.Perform {
		case sysent.PerformMkdir, sysent.PerformMknod, sysent.PerformSymlink, sysent.PerformRename,
			sysent.PerformLink, sysent.PerformUnlink:
			return true
		}
		return false
	})
	shareAttrCalls = sysent.Select(func(e *sysent.Entry) bool {
		switch e.Perform {
		case sysent.PerformChmod, sysent.PerformChown, sysent.PerformUtimes:
			return true
		}
		return false
	})
)

// Open flag masks for access criteria, and AF_UNIX (x86_64 values; this
// package builds on every OS).
const (
	oAccmode = 0x3
	oCreat   = 0x40
	oTrunc   = 0x200
	afUnix   = 1
	enotty   = 25
)

// The ioctl requests of the rules for the VM's images and ptys (x86_64
// values; TestIoctlNumbers checks them against the profiles' names).
const (
	xfsIocDioinfo   = 0x800c581e // XFS_IOC_DIOINFO
	fsIocFsgetxattr = 0x801c581f // FS_IOC_FSGETXATTR
	fsIocFssetxattr = 0x401c5820 // FS_IOC_FSSETXATTR
	tiocgptpeer     = 0x5441     // TIOCGPTPEER
	fsIocGetversion = 0x80087601 // FS_IOC_GETVERSION
	tunSetIff       = 0x400454ca // TUNSETIFF
)

// PtyPeerRuleName names the rule a pty chardev gets (TIOCGPTPEER on
// /dev/ptmx): the Landlock wall lets the kernel open that pty's slave for
// QEMU when the profile has it.
const PtyPeerRuleName = "vm-pty-peer"

// escapeGlob quotes glob metacharacters so a path matches only itself.
func escapeGlob(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `{`, `\{`)
	return r.Replace(p)
}

// literalGlobs returns a glob that matches each path alone and, with a
// canon, one for its canonical path too where that differs.
func literalGlobs(paths []string, canon func(string) string) []string {
	globs := make([]string, 0, len(paths))
	for _, p := range paths {
		globs = append(globs, escapeGlob(p))
		if canon == nil {
			continue
		}
		if c := canon(p); c != p {
			globs = append(globs, escapeGlob(c))
		}
	}
	return globs
}

// allow is a rule that allows syscalls on the paths (globs).
func allow(name string, syscalls, paths []string, reason string) profiles.VerdictRule {
	return profiles.VerdictRule{Name: name, Syscalls: slices.Clone(syscalls), Paths: paths, Verdict: profiles.VerdictAllow, Reason: reason}
}

// openRules returns one rule per open call that lets QEMU open paths with
// access a. Read-only and read-write are a condition on the call's flags
// argument: nothing created (or, read-only, written or truncated). creat
// has no flags argument, its flags being O_CREAT|O_WRONLY|O_TRUNC, so it
// is only allowed where QEMU may create.
func openRules(a resources.Access, paths []string) []profiles.VerdictRule {
	var mask uint64
	switch a {
	case resources.ReadOnly:
		mask = oAccmode | oCreat | oTrunc // O_RDONLY, nothing created or truncated
	case resources.ReadWrite:
		mask = oCreat // any access mode, nothing created
	}
	var rules []profiles.VerdictRule
	for _, sc := range openCalls {
		r := allow("vm-"+a.String()+"-"+sc, []string{sc}, paths, "the VM's own "+a.String()+" resources, from QEMU's command line")
		if a != resources.Create {
			e, _ := sysent.Lookup(sc)
			if e.FlagsArg < 0 {
				continue
			}
			r.Args = []profiles.ArgCond{{Index: e.FlagsArg, Op: profiles.OpMaskedEq, Mask: mask, Values: []uint64{0}}}
		}
		rules = append(rules, r)
	}
	return rules
}

// ResourceRules turns a resource set into verdict rules placed after the
// profile's own (so the profile's denials still win): the VM's files,
// trees and devices with the access their options imply (by the path as
// given and by the canonical path), its unix sockets for connect or bind,
// and its working directory, read-only (QEMU opens "." at start-up).
func ResourceRules(set *resources.Set, cwd string, canon func(string) string) []profiles.VerdictRule {
	paths := map[resources.Access][]string{}
	add := func(a resources.Access, p string, pattern bool) {
		switch {
		case p == "":
		case pattern:
			paths[a] = append(paths[a], p)
		default:
			paths[a] = append(paths[a], literalGlobs([]string{p}, canon)...)
		}
	}
	for _, f := range set.Files {
		add(f.Access, f.Abs, f.Pattern)
	}
	for _, d := range set.Dirs {
		add(d.Access, d.Abs, false)
		add(d.Access, strings.TrimSuffix(escapeGlob(d.Abs), "/")+"/**", true)
		if c := canon(d.Abs); c != d.Abs {
			add(d.Access, strings.TrimSuffix(escapeGlob(c), "/")+"/**", true)
		}
	}
	for _, d := range set.Devices {
		add(d.Access, d.Path, d.Pattern)
	}
	if cwd != "" {
		add(resources.ReadOnly, cwd, false)
	}
	rules := imageRules(set, canon)
	for _, a := range []resources.Access{resources.ReadOnly, resources.ReadWrite, resources.Create} {
		if len(paths[a]) == 0 {
			continue
		}
		sort.Strings(paths[a])
		rules = append(rules, openRules(a, paths[a])...)
		if a == resources.Create {
			rules = append(rules, allow("vm-create-unlink", removeCalls, paths[a],
				"QEMU removes what it created (pidfile, overlays) when it exits"))
		}
	}
	rules = append(rules, shareRules(set, canon)...)
	rules = append(rules, tapRules(set)...)
	socks := map[string][]string{}
	for _, so := range set.Sockets {
		if so.Family != resources.FamilyUnix {
			continue
		}
		addr := so.Address
		if !strings.HasPrefix(addr, "@") {
			addr = escapeGlob(addr)
		}
		socks[so.Op] = append(socks[so.Op], addr)
	}
	for _, op := range []string{resources.OpConnect, resources.OpBind} {
		if len(socks[op]) == 0 {
			continue
		}
		sort.Strings(socks[op])
		calls := []string{op}
		if op == resources.OpBind {
			// listen on a socket bound to one of them: kfv reads the
			// bound address (getsockname) and performs the listen on the
			// socket it checked.
			calls = append(calls, "listen")
		}
		rules = append(rules, profiles.VerdictRule{
			Name:      "vm-sockets-" + op,
			Syscalls:  calls,
			Families:  []int{afUnix},
			Addresses: socks[op],
			Verdict:   profiles.VerdictAllow,
			Reason:    "the VM's own unix sockets (" + op + "), from QEMU's command line",
		})
		if op == resources.OpBind {
			rules = append(rules, allow("vm-sockets-unlink", removeCalls, socks[op],
				"QEMU replaces and removes its own server sockets"))
		}
	}
	return rules
}

// tapRules admits TUNSETIFF for the interface names of the VM's taps
// only (vm-tap-setiff): the ifname= of each tap QEMU opens itself, or the
// kernel's template "tap%d" for a tap without one. kfv reads the struct
// ifreq once, decides on its name and performs the ioctl on its copy of
// QEMU's fd with the struct it read, so a rewritten name cannot reach the
// kernel. Any other name (another VM's tap, a new link on the host) is
// denied by default.
func tapRules(set *resources.Set) []profiles.VerdictRule {
	if len(set.TapNames) == 0 {
		return nil
	}
	names := slices.Clone(set.TapNames)
	sort.Strings(names)
	return []profiles.VerdictRule{{
		Name:     "vm-tap-setiff",
		Syscalls: []string{"ioctl"},
		Args:     []profiles.ArgCond{{Index: 1, Op: profiles.OpEq, Values: []uint64{tunSetIff}}},
		Ifnames:  names,
		Verdict:  profiles.VerdictAllow,
		Reason:   "TUNSETIFF for the VM's own taps (-netdev tap ifname=, or the kernel's tap%d for a tap without one)",
	}}
}

// ioctlRule is a rule on ioctl requests (its second argument) on the
// files paths name (the fd's target).
func ioctlRule(name string, requests []uint64, paths []string, v profiles.Verdict, reason string) profiles.VerdictRule {
	return profiles.VerdictRule{
		Name:     name,
		Syscalls: []string{"ioctl"},
		Args:     []profiles.ArgCond{{Index: 1, Op: profiles.OpIn, Values: requests}},
		Paths:    paths,
		Verdict:  v,
		Reason:   reason,
	}
}

// imageRules admits the file-attribute ioctls QEMU's file-posix driver
// makes on the VM's own images (the set's Image files), measured on QEMU
// 7.2 and 10.0 alike: XFS_IOC_DIOINFO, which asks an image opened with
// O_DIRECT (cache=none, aio=native) for its alignment
// (raw_probe_alignment), on every image; FS_IOC_FSGETXATTR and
// FS_IOC_FSSETXATTR, with which raw_co_create sets a 1 MiB extent size
// hint, on the images QEMU creates (snapshot=on overlays, blockdev-create
// and drive-mirror targets). The same requests on any other file are
// denied at low severity: a probe of a file QEMU already holds open
// reaches nothing new and must not stop a VM (an image handed over as an
// fd is such a file). A 9p share adds FS_IOC_GETVERSION on its files.
// A pty chardev adds TIOCGPTPEER on /dev/ptmx: glibc's
// openpty opens the slave of the master QEMU just made with it, the
// /dev/pts/N the set allows already.
func imageRules(set *resources.Set, canon func(string) string) []profiles.VerdictRule {
	var all, created []string
	for _, f := range set.Files {
		if !f.Image || f.Abs == "" {
			continue
		}
		g := []string{f.Abs}
		if !f.Pattern {
			g = literalGlobs(g, canon)
		}
		all = append(all, g...)
		if f.Access == resources.Create {
			created = append(created, g...)
		}
	}
	var rules []profiles.VerdictRule
	if len(created) > 0 {
		sort.Strings(created)
		rules = append(rules, ioctlRule("vm-image-create-xattr", []uint64{fsIocFsgetxattr, fsIocFssetxattr}, slices.Compact(created), profiles.VerdictAllow,
			"QEMU sets the extent size hint of an image it creates (FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR), from QEMU's command line"))
	}
	if len(all) > 0 {
		sort.Strings(all)
		rules = append(rules, ioctlRule("vm-image-dioinfo", []uint64{xfsIocDioinfo}, slices.Compact(all), profiles.VerdictAllow,
			"QEMU asks the VM's own images for their O_DIRECT alignment (XFS_IOC_DIOINFO), from QEMU's command line"))
	}
	deny := ioctlRule("image-probe-elsewhere", []uint64{xfsIocDioinfo, fsIocFsgetxattr, fsIocFssetxattr}, nil, profiles.VerdictDeny,
		"a file-attribute ioctl QEMU's block layer makes, on a file that is not one of the VM's images: denied, and of low severity, as it reaches only a file QEMU holds open")
	// ENOTTY, as from a file system without the request: QEMU goes on
	// without the hint or the alignment, as it does there.
	deny.Errno, deny.Severity = enotty, profiles.SevLow
	rules = append(rules, deny)
	var shares []string
	for _, d := range set.Dirs {
		if d.Share {
			shares = append(shares, strings.TrimSuffix(escapeGlob(d.Abs), "/")+"/**")
			if c := canon(d.Abs); c != d.Abs {
				shares = append(shares, strings.TrimSuffix(escapeGlob(c), "/")+"/**")
			}
		}
	}
	if len(shares) > 0 {
		sort.Strings(shares)
		rules = append(rules, ioctlRule("vm-share-getversion", []uint64{fsIocGetversion}, slices.Compact(shares), profiles.VerdictAllow,
			"the VM's 9p shares: QEMU's local backend asks the files it serves for their inode generation (FS_IOC_GETVERSION, on ext4, XFS and btrfs), from QEMU's command line"))
	}
	for _, d := range set.Devices {
		if d.Path == "/dev/ptmx" {
			rules = append(rules, ioctlRule(PtyPeerRuleName, []uint64{tiocgptpeer}, []string{"/dev/ptmx"}, profiles.VerdictAllow,
				"the VM's pty chardev: glibc's openpty opens the pty's slave with TIOCGPTPEER, from QEMU's command line"))
			break
		}
	}
	return rules
}

// shareRules admits the file work of the VM's writable 9p shares
// (security_model=none, QEMU's local backend acting for the guest):
// making, renaming, linking and removing entries strictly under the
// share's directory, and changing the mode, owner and times of the
// share and of what is under it. kfv performs every one of these calls
// on the entries and objects it resolved (both paths of a rename or a
// link, each of which must be in a share), so these rules by path hold;
// the directory itself is never made, renamed or removed. Device nodes
// are refused by kfv whatever the rules say.
func shareRules(set *resources.Set, canon func(string) string) []profiles.VerdictRule {
	var under, tree []string
	for _, d := range set.Dirs {
		if !d.Share || d.Access != resources.Create || d.Abs == "" {
			continue
		}
		for _, p := range []string{d.Abs, canon(d.Abs)} {
			root := strings.TrimSuffix(escapeGlob(p), "/")
			under = append(under, root+"/*/**")
			tree = append(tree, root+"/**")
		}
	}
	if len(under) == 0 {
		return nil
	}
	sort.Strings(under)
	sort.Strings(tree)
	return []profiles.VerdictRule{
		allow("vm-share-entries", shareEntryCalls, slices.Compact(under),
			"the VM's writable 9p shares: the guest makes, renames, links and removes files and directories in them, from QEMU's command line"),
		allow("vm-share-attributes", shareAttrCalls, slices.Compact(tree),
			"the VM's writable 9p shares: QEMU sets the owner and mode of what it creates there and the guest changes modes, owners and times, from QEMU's command line"),
	}
}
