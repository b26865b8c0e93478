//go:build linux

package seccompnotify

import (
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Resolution for the path calls of a writable 9p share (mkdir, mknod,
// symlink, rename, link, chmod, chown, utimensat): the object or the
// directory entry a call acts on is found once, as the kernel would find
// it for the caller, and kept as fds; kfv decides on its canonical path
// and then acts through those fds, so a path another QEMU thread
// rewrites after the check, a symlink planted in the tree or a ".."
// changes nothing of what is acted on.

// ResolveCreate finds the directory entry a mkdir, mknod or symlink
// would make: its parent resolved as the kernel would for the caller,
// and its name, which must not be "." or "..". Trailing slashes are
// accepted for mkdir only, as the kernel does. The target does not say
// whether the entry exists: the call made in the parent fails with
// EEXIST then.
func ResolveCreate(r *OpenRequest, dir bool) (*Target, error) {
	p, base, resolve, err := lookupStart(r)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	if strings.HasSuffix(p, "/") {
		if !dir {
			return nil, unix.ENOENT
		}
		if q := strings.TrimRight(p, "/"); q != "" {
			p = q
		}
	}
	d, name := path.Split(p)
	if name == "" || name == "." || name == ".." {
		return nil, unix.EEXIST // "/", "." and ".." exist
	}
	return entryIn(r, base, d, name, resolve)
}

// ResolveObject finds the object a chmod, chown or utimensat acts on:
// followed unless follow is false (AT_SYMLINK_NOFOLLOW, lchown: the
// symlink itself), and held as an O_PATH fd. The caller's own
// /proc/self/fd/N (and /proc/thread-self/fd/N) names its fd N: QEMU's
// local 9p backend changes modes that way (chmod of /proc/self/fd/N on
// an O_PATH|O_NOFOLLOW fd it opened in the share); kfv copies that fd
// (pidfd_getfd) and the target is the object it refers to, which is
// what the call then acts on. Any other magic link fails with ELOOP,
// as for opens.
func ResolveObject(r *OpenRequest, follow bool) (*Target, error) {
	if follow {
		if n, ok := ownFD(selfToPID(r.Path, r.TGID, r.TID), r.TGID, r.TID); ok {
			f, err := TakeFD(r.Pidfd, n)
			if err != nil {
				if errnoOr(err, 0) == unix.EBADF {
					return nil, unix.ENOENT // as /proc/self/fd/N of a closed fd
				}
				return nil, err
			}
			t := &Target{obj: f, dir: -1, Exists: true}
			if err := t.describe(r); err != nil {
				t.Close()
				return nil, err
			}
			return t, nil
		}
	}
	or := *r
	or.Flags = unix.O_PATH
	if !follow {
		or.Flags |= unix.O_NOFOLLOW
	}
	return ResolveOpen(&or)
}

// ownFD says whether p (with /proc/self already made the caller's pid)
// is /proc/TGID/fd/N or /proc/TGID/task/TID/fd/N of the caller, and N.
func ownFD(p string, tgid, tid int) (int, bool) {
	rest, ok := strings.CutPrefix(p, "/proc/"+strconv.Itoa(tgid)+"/")
	if !ok {
		return 0, false
	}
	if t, ok := strings.CutPrefix(rest, "task/"+strconv.Itoa(tid)+"/"); ok {
		rest = t
	}
	s, ok := strings.CutPrefix(rest, "fd/")
	if !ok || s == "" || strings.ContainsAny(s, "/+-") {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// procFD is the supervisor's own magic link to one of its fds: a call
// through it reaches that fd's object, with no lookup of any name.
func procFD(f FD) string { return "/proc/self/fd/" + strconv.Itoa(int(f)) }

// Mkdir makes the directory the target names, in the parent kfv
// resolved, with mode (the calling thread's umask applies).
func (t *Target) Mkdir(mode uint32) error {
	if t.dir < 0 {
		return unix.EINVAL
	}
	return unix.Mkdirat(int(t.dir), t.name, mode)
}

// Mknod makes the node the target names in the parent kfv resolved.
func (t *Target) Mknod(mode uint32, dev int) error {
	if t.dir < 0 {
		return unix.EINVAL
	}
	return unix.Mknodat(int(t.dir), t.name, mode, dev)
}

// Symlink makes the symlink the target names, pointing at text.
func (t *Target) Symlink(text string) error {
	if t.dir < 0 {
		return unix.EINVAL
	}
	return unix.Symlinkat(text, int(t.dir), t.name)
}

// Rename renames the entry t names to the entry to names (renameat2's
// flags), each in the parent kfv resolved.
func (t *Target) Rename(to *Target, flags uint) error {
	if t.dir < 0 || to == nil || to.dir < 0 {
		return unix.EINVAL
	}
	return unix.Renameat2(int(t.dir), t.name, int(to.dir), to.name, flags)
}

// Link links what t names to the entry to names: t's entry in its
// parent, or, when t holds an object (AT_SYMLINK_FOLLOW), that object,
// through the supervisor's magic link to it.
func (t *Target) Link(to *Target) error {
	if to == nil || to.dir < 0 {
		return unix.EINVAL
	}
	if t.obj >= 0 {
		return unix.Linkat(unix.AT_FDCWD, procFD(t.obj), int(to.dir), to.name, unix.AT_SYMLINK_FOLLOW)
	}
	if t.dir < 0 {
		return unix.EINVAL
	}
	return unix.Linkat(int(t.dir), t.name, int(to.dir), to.name, 0)
}

// Chmod changes the mode of the object the target holds, through the
// supervisor's magic link to its O_PATH fd (fchmod refuses O_PATH fds;
// the link reaches the object itself, no name is looked up). A symlink
// has no mode of its own: EOPNOTSUPP, as fchmodat2 with
// AT_SYMLINK_NOFOLLOW answers.
func (t *Target) Chmod(mode uint32) error {
	if t.obj < 0 {
		return unix.EINVAL
	}
	if t.Type == unix.S_IFLNK {
		return unix.EOPNOTSUPP
	}
	return unix.Chmod(procFD(t.obj), mode)
}

// Chown changes the owner of the object the target holds (the symlink
// itself when it was not followed).
func (t *Target) Chown(uid, gid int) error {
	if t.obj < 0 {
		return unix.EINVAL
	}
	return unix.Fchownat(int(t.obj), "", uid, gid, unix.AT_EMPTY_PATH)
}

// Utimes sets the times of the object the target holds (nil: now).
func (t *Target) Utimes(ts []unix.Timespec) error {
	if t.obj < 0 {
		return unix.EINVAL
	}
	return utimensatEmpty(int(t.obj), ts)
}

// Second is the target of a call's second path (rename's and link's new
// name), or nil.
func (t *Target) Second() *Target {
	if t == nil {
		return nil
	}
	return t.second
}
