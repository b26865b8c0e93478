//go:build linux

package seccompnotify

import (
	"errors"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// Performed creations of a writable 9p share: mkdir, mknod and symlink.
// The parent is resolved once (ResolveCreate) and the entry made in it,
// with the caller's umask and file-system credentials: a rename of a
// parent, or a symlink swapped in for it after the check, changes
// nothing of where the entry is made.

func init() {
	register(sysent.PerformMkdir, performer{resolve: resolveMkdir, perform: performMkdir})
	register(sysent.PerformMknod, performer{resolve: resolveMknod, perform: performMknod})
	register(sysent.PerformSymlink, performer{resolve: resolveSymlink, perform: performSymlink})
}

// pathRequest is the lookup of the call's path argument, relative to its
// directory fd argument dirfdArg (-1: the caller's cwd).
func pathRequest(g *Gate, c *Call, dirfdArg int, p string) *OpenRequest {
	dirfd := unix.AT_FDCWD
	if dirfdArg >= 0 {
		dirfd = int(int32(c.Req.Args[dirfdArg]))
	}
	return &OpenRequest{TGID: c.Req.PID, TID: c.Req.TID, Pidfd: g.pidfdOf(c), DirFD: dirfd, Path: p}
}

// firstRequest is the lookup of the call's (first) path argument.
func firstRequest(g *Gate, c *Call) *OpenRequest {
	e, _ := sysent.Lookup(c.Req.Syscall)
	return pathRequest(g, c, e.DirFDArg, c.Req.PathArg)
}

// atArgs: the arguments after the path of a call and of its *at form
// are the same, one place further in the *at form.
func atArg(c *Call, plain string, i int) uint64 {
	if c.Req.Syscall == plain {
		return c.Req.Args[i]
	}
	return c.Req.Args[i+1]
}

// performedErr answers a performed call with err: success, the call's
// own errno, or kfv's refusal when it failed in kfv.
func performedErr(err error, what string) result {
	e := errnoOr(err, 0)
	if err != nil && e == 0 {
		return refused("kfv:emulation", what+": "+err.Error(), true)
	}
	return failed(e, "emulated")
}

// resolveFailed answers a call whose resolution failed: the errno the
// native call would have returned, or kfv's refusal.
func resolveFailed(terr error) result { return performedErr(terr, "resolve") }

func resolveMkdir(g *Gate, c *Call) (*Target, error) {
	return ResolveCreate(firstRequest(g, c), true)
}

func performMkdir(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	mode := uint32(atArg(c, "mkdir", 1))
	if err := syncUmask(c.Req.PID); err != nil {
		return refused("kfv:emulation", err.Error(), true)
	}
	return performedErr(asCaller(c.Req.TID, func() error { return t.Mkdir(mode) }), "mkdir")
}

func resolveMknod(g *Gate, c *Call) (*Target, error) {
	return ResolveCreate(firstRequest(g, c), false)
}

// performMknod makes regular files, FIFOs and sockets. A device node is
// refused whatever the rules say: in a tree QEMU serves, a node for a
// host disk would open that disk through a path the rules allow.
func performMknod(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	mode := uint32(atArg(c, "mknod", 1))
	dev := int(atArg(c, "mknod", 2))
	switch mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK:
		return refused("kfv:mknod-device", "kfv makes no device nodes for QEMU: a node in a tree QEMU may open would reach a host device", true)
	}
	if terr != nil {
		return resolveFailed(terr)
	}
	if err := syncUmask(c.Req.PID); err != nil {
		return refused("kfv:emulation", err.Error(), true)
	}
	return performedErr(asCaller(c.Req.TID, func() error { return t.Mknod(mode, dev) }), "mknod")
}

func resolveSymlink(g *Gate, c *Call) (*Target, error) {
	return ResolveCreate(firstRequest(g, c), false)
}

// performSymlink makes the symlink. Its target is text kfv does not
// resolve: whatever later follows the link is an open, a lookup or a
// call kfv resolves on the object reached.
func performSymlink(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	text, err := ReadString(c.N.PID, c.Req.Args[0], maxPath)
	if err != nil {
		e := errnoOr(err, unix.EFAULT)
		if errors.Is(err, ErrTooLong) {
			e = unix.ENAMETOOLONG
		}
		return failed(e, "read the symlink's target: "+err.Error())
	}
	if g.Listener.IDValid(c.N.ID) != nil {
		return result{kind: resGone}
	}
	return performedErr(asCaller(c.Req.TID, func() error { return t.Symlink(text) }), "symlink")
}
