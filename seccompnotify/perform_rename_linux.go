//go:build linux

package seccompnotify

import (
	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// Performed calls with two paths: rename and link. Both entries are
// resolved (ResolveEntry: the last component is not followed), the gate
// decides on both canonical paths, and the call is made between the two
// parents kfv resolved: neither path can be rewritten after the check,
// and a symlink planted in the tree leads nowhere.

func init() {
	register(sysent.PerformRename, performer{resolve: resolveRename, perform: performRename})
	register(sysent.PerformLink, performer{resolve: resolveLink, perform: performLink})
}

// secondRequest is the lookup of the call's second path (the new name).
func secondRequest(g *Gate, c *Call) *OpenRequest {
	e, _ := sysent.Lookup(c.Req.Syscall)
	return pathRequest(g, c, e.DirFD2Arg, c.Req.Path2Arg)
}

// flagsArg is argument i of the *at2 forms, 0 for the others.
func flagsArg(c *Call, i int, calls ...string) uint64 {
	for _, s := range calls {
		if c.Req.Syscall == s {
			return c.Req.Args[i]
		}
	}
	return 0
}

// resolveTwo resolves the call's second path as an entry and hangs it
// on first.
func resolveTwo(g *Gate, c *Call, first *Target, err error) (*Target, error) {
	if err != nil {
		return nil, err
	}
	second, err := ResolveEntry(secondRequest(g, c), false)
	if err != nil {
		first.Close()
		return nil, err
	}
	first.second = second
	return first, nil
}

func resolveRename(g *Gate, c *Call) (*Target, error) {
	flags := flagsArg(c, 4, "renameat2")
	if flags&^uint64(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE|unix.RENAME_WHITEOUT) != 0 {
		return nil, unix.EINVAL
	}
	first, err := ResolveEntry(firstRequest(g, c), false)
	return resolveTwo(g, c, first, err)
}

func performRename(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	flags := uint(flagsArg(c, 4, "renameat2"))
	return performedErr(asCaller(c.Req.TID, func() error { return t.Rename(t.second, flags) }), "rename")
}

func resolveLink(g *Gate, c *Call) (*Target, error) {
	flags := flagsArg(c, 4, "linkat")
	if flags&^uint64(unix.AT_SYMLINK_FOLLOW|unix.AT_EMPTY_PATH) != 0 {
		return nil, unix.EINVAL
	}
	var first *Target
	var err error
	if flags&unix.AT_SYMLINK_FOLLOW != 0 {
		// The object the old path reaches, followed: linked through
		// kfv's magic link to it.
		first, err = ResolveObject(firstRequest(g, c), true)
	} else {
		first, err = ResolveEntry(firstRequest(g, c), false)
	}
	return resolveTwo(g, c, first, err)
}

func performLink(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	return performedErr(asCaller(c.Req.TID, func() error { return t.Link(t.second) }), "link")
}
