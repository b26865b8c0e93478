//go:build linux

package seccompnotify

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// Performed attribute changes by path: chmod, chown and utimensat. The
// object is resolved once (ResolveObject), held as an O_PATH fd, decided
// on by its canonical path and changed through that fd. QEMU's own
// /proc/self/fd/N is its fd N, copied with pidfd_getfd: what the check
// saw is what is changed, even if QEMU closes and reuses N meanwhile.

func init() {
	register(sysent.PerformChmod, performer{resolve: resolveChmod, perform: performChmod})
	register(sysent.PerformChown, performer{resolve: resolveChown, perform: performChown})
	register(sysent.PerformUtimes, performer{resolve: resolveUtimes, perform: performUtimes})
}

// chmodFlags is fchmodat2's flags (chmod and fchmodat have none: the
// kernel's fchmodat takes no flags argument).
func chmodFlags(c *Call) uint64 { return flagsArg(c, 3, "fchmodat2") }

func resolveChmod(g *Gate, c *Call) (*Target, error) {
	flags := chmodFlags(c)
	if flags&^uint64(unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH) != 0 {
		return nil, unix.EINVAL
	}
	return ResolveObject(firstRequest(g, c), flags&unix.AT_SYMLINK_NOFOLLOW == 0)
}

func performChmod(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	mode := uint32(atArg(c, "chmod", 1)) & 0o7777
	return performedErr(asCaller(c.Req.TID, func() error { return t.Chmod(mode) }), "chmod")
}

// chownFollows says whether a chown-family call follows a final symlink.
func chownFollows(c *Call) (follow bool, err error) {
	switch c.Req.Syscall {
	case "chown":
		return true, nil
	case "lchown":
		return false, nil
	}
	flags := c.Req.Args[4]
	if flags&^uint64(unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH) != 0 {
		return false, unix.EINVAL
	}
	return flags&unix.AT_SYMLINK_NOFOLLOW == 0, nil
}

func resolveChown(g *Gate, c *Call) (*Target, error) {
	follow, err := chownFollows(c)
	if err != nil {
		return nil, err
	}
	return ResolveObject(firstRequest(g, c), follow)
}

func performChown(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	uid, gid := int(int32(atArg(c, "chown", 1))), int(int32(atArg(c, "chown", 2)))
	if c.Req.Syscall == "lchown" {
		uid, gid = int(int32(c.Req.Args[1])), int(int32(c.Req.Args[2]))
	}
	return performedErr(asCaller(c.Req.TID, func() error { return t.Chown(uid, gid) }), "chown")
}

func resolveUtimes(g *Gate, c *Call) (*Target, error) {
	flags := c.Req.Args[3]
	if flags&^uint64(unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH) != 0 {
		return nil, unix.EINVAL
	}
	return ResolveObject(firstRequest(g, c), flags&unix.AT_SYMLINK_NOFOLLOW == 0)
}

// performUtimes reads the two timespecs (once: they are what is set) and
// sets them on the object.
func performUtimes(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result {
	defer t.Close()
	if terr != nil {
		return resolveFailed(terr)
	}
	var ts []unix.Timespec
	if addr := c.Req.Args[2]; addr != 0 {
		var raw [32]byte
		if err := ReadMem(c.N.PID, addr, raw[:]); err != nil {
			return failed(unix.EFAULT, "read the times: "+err.Error())
		}
		ts = make([]unix.Timespec, 2)
		for i := range ts {
			ts[i].Sec = int64(binary.NativeEndian.Uint64(raw[16*i:]))
			ts[i].Nsec = int64(binary.NativeEndian.Uint64(raw[16*i+8:]))
		}
	}
	if g.Listener.IDValid(c.N.ID) != nil {
		return result{kind: resGone}
	}
	return performedErr(asCaller(c.Req.TID, func() error { return t.Utimes(ts) }), "utimensat")
}
