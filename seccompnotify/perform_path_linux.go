//go:build linux

package seccompnotify

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// Performed calls that name a path: open and unlink. The object is
// resolved once, with openat2 and RESOLVE_ flags as the kernel would for
// the caller, decided on, and acted on through the fds that resolution
// left: a path rewritten by another QEMU thread after the check, or a
// symlink swapped in, changes nothing.

func init() {
	register(sysent.PerformOpen, performer{resolve: resolveOpen, perform: performOpen})
	register(sysent.PerformUnlink, performer{resolve: resolveUnlink, perform: performUnlink})
}

// openRequest rebuilds the open-family call from its registers.
func openRequest(g *Gate, c *Call) *OpenRequest {
	a := c.Req.Args
	r := &OpenRequest{TGID: c.Req.PID, TID: c.Req.TID, Pidfd: g.pidfdOf(c), Path: c.Req.PathArg}
	switch c.Req.Syscall {
	case "open":
		r.DirFD, r.Flags, r.Mode = unix.AT_FDCWD, int(int32(a[1])), uint32(a[2])
	case "creat":
		r.DirFD, r.Flags, r.Mode = unix.AT_FDCWD, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, uint32(a[1])
	default:
		r.DirFD, r.Flags, r.Mode = int(int32(a[0])), int(int32(a[2])), uint32(a[3])
	}
	return r
}

func resolveOpen(g *Gate, c *Call) (*Target, error) { return ResolveOpen(openRequest(g, c)) }

func performOpen(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	or := openRequest(g, c)
	if or.Flags&unix.O_PATH != 0 {
		// ADDFD cannot install an O_PATH fd (EBADF), so this one call
		// continues. It is safe without emulation: an O_PATH fd reads and
		// writes nothing, and every open through it (openat on it as a
		// dirfd, or its /proc magic link) is performed and checked on the
		// object it reaches.
		t.Close()
		return decided("O_PATH: continued")
	}
	if or.Flags&unix.O_CREAT != 0 || or.Flags&unix.O_TMPFILE == unix.O_TMPFILE {
		// Creations get QEMU's umask of the moment on this thread.
		if err := syncUmask(c.Req.PID); err != nil {
			t.Close()
			return refused("kfv:emulation", err.Error(), true)
		}
	}
	if terr != nil {
		e := errnoOr(terr, 0)
		if e == 0 {
			return refused("kfv:emulation", "resolve: "+terr.Error(), true)
		}
		return failed(e, "emulated: "+e.Error())
	}
	creates := !t.Exists && or.Flags&unix.O_CREAT != 0 || or.Flags&unix.O_TMPFILE == unix.O_TMPFILE
	open := func(c *Call) result {
		defer t.Close()
		var f FD
		var err error
		if creates {
			// A file kfv creates for QEMU is QEMU's: its owner is QEMU's
			// uid and gid, not the supervisor's (asOwner).
			err = asOwner(c.Req.TID, func() error {
				var oerr error
				f, oerr = t.Open(openRequest(g, c))
				return oerr
			})
		} else {
			f, err = t.Open(openRequest(g, c))
		}
		if err != nil {
			e := errnoOr(err, unix.EIO)
			return failed(e, "emulated: "+e.Error())
		}
		var flags uint32
		if or.Flags&unix.O_CLOEXEC != 0 {
			flags = unix.O_CLOEXEC
		}
		res := installs(f, flags, "")
		if t.Exists && t.Type == unix.S_IFREG && or.Flags&unix.O_ACCMODE == unix.O_RDONLY && or.Flags&unix.O_TRUNC == 0 {
			// Reopened through its O_PATH fd: the same inode, unless
			// that fd's number was taken meanwhile (gate: obj).
			res.obj = &[2]uint64{t.Dev, t.Ino}
		}
		return res
	}
	if t.MayBlock(or.Flags) {
		// A FIFO or a device may wait for its other end: open it beside
		// the loop, which goes on answering the other threads.
		return g.later(c, d, t.Close, open)
	}
	return open(c)
}

func unlinkArgs(c *Call) (dirfd, flags int) {
	if c.Req.Syscall == "unlinkat" {
		return int(int32(c.Req.Args[0])), int(int32(c.Req.Args[2]))
	}
	return unix.AT_FDCWD, 0
}

func resolveUnlink(g *Gate, c *Call) (*Target, error) {
	dirfd, flags := unlinkArgs(c)
	r := &OpenRequest{TGID: c.Req.PID, TID: c.Req.TID, Pidfd: g.pidfdOf(c), DirFD: dirfd, Path: c.Req.PathArg}
	return ResolveEntry(r, flags&unix.AT_REMOVEDIR != 0)
}

// performUnlink removes the entry that was decided on, in the directory
// kfv resolved.
func performUnlink(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	_, flags := unlinkArgs(c)
	if terr == nil {
		terr = t.Remove(flags)
	}
	e := errnoOr(terr, 0)
	if terr != nil && e == 0 {
		return refused("kfv:emulation", "resolve: "+terr.Error(), true)
	}
	return failed(e, "emulated")
}

// syncUmask gives the calling thread (whose file-system attributes are
// its own) the caller's current umask.
func syncUmask(pid int) error {
	u, err := ProcessUmask(pid)
	if err != nil {
		return err
	}
	unix.Umask(u)
	return nil
}

// chdirToCaller moves the calling thread, which must have file-system
// attributes of its own (PrepareEmulationThread), to the caller's cwd.
func chdirToCaller(tid int) error {
	fd, err := unix.Open("/proc/"+strconv.Itoa(tid)+"/cwd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the caller's cwd: %w", os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("move to the caller's cwd: %w", os.NewSyscallError("fchdir", err))
	}
	return nil
}
