//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Emulation: instead of letting a checked call continue (the caller's other
// threads could rewrite its path or address between the check and the
// kernel's own read), the supervisor performs the call itself on objects it
// resolved and checked, and hands the result to the caller. For opens the
// check is made on the object actually reached (its canonical path, device
// and inode), not on the string the caller passed.

// OpenRequest is an open-family call to perform on a caller's behalf.
type OpenRequest struct {
	TGID, TID int      // the caller's process and thread
	Pidfd     *os.File // pidfd of TGID, to copy its dirfd
	DirFD     int      // unix.AT_FDCWD or the caller's directory fd
	Path      string   // as read from the caller
	Flags     int      // open(2) flags
	Mode      uint32   // creation mode, before the umask
}

// Target is what an open would reach, found with O_PATH: nothing is read,
// written, created or truncated.
type Target struct {
	obj  FD     // the existing object (O_PATH), or -1
	dir  FD     // the parent directory (O_PATH) when the object is to be created, or -1
	name string // the final component to create in dir
	// Path is the canonical path of the object (or of the one that would be
	// created), with QEMU's own /proc/PID and /proc/PID/task/TID shown as
	// /proc/self and /proc/thread-self.
	Path string
	// Exists tells whether the object exists; Dev, Ino and Type describe it.
	Exists   bool
	Dev, Ino uint64
	Type     uint32 // S_IFMT bits

	second *Target // the second path's (rename, link), or nil
}

// Close releases the target's fds. A nil target has none.
func (t *Target) Close() {
	if t == nil {
		return
	}
	if t.obj >= 0 {
		t.obj.Close()
	}
	if t.dir >= 0 {
		t.dir.Close()
	}
	t.obj, t.dir = -1, -1
	t.second.Close()
	t.second = nil
}

// ResolveOpen finds the object an open would reach, resolving the path as
// the kernel would for the caller: relative to its directory fd or working
// directory, absolute paths inside its root, following symlinks unless
// O_NOFOLLOW. It refuses magic links (/proc/PID/fd/N and the like: they
// would resolve in the supervisor, not in the caller) with ELOOP.
//
// An error of type Errno is what the native call would have returned
// (ENOENT, ENOTDIR, ELOOP, EACCES...); other errors are the supervisor's.
func ResolveOpen(r *OpenRequest) (*Target, error) {
	p, base, resolve, err := lookupStart(r)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve}
	if r.Flags&unix.O_NOFOLLOW != 0 {
		how.Flags |= unix.O_NOFOLLOW
	}
	if r.Flags&unix.O_DIRECTORY != 0 {
		how.Flags |= unix.O_DIRECTORY
	}
	fd, err := openat2(int(base), p, &how)
	switch {
	case err == nil:
		t := &Target{obj: FD(fd), dir: -1, Exists: true}
		if err := t.describe(r); err != nil {
			t.Close()
			return nil, err
		}
		return t, nil
	case errors.Is(err, unix.ENOENT) && r.Flags&unix.O_CREAT != 0:
		return resolveParent(r, base, p, resolve)
	}
	return nil, err
}

// lookupStart begins a lookup as the kernel would for the caller: the
// path with /proc/self made the caller's, the directory it starts from
// (the caller closes it) and the RESOLVE_ flags that keep it there.
func lookupStart(r *OpenRequest) (p string, base FD, resolve uint64, err error) {
	if r.Path == "" {
		return "", -1, 0, unix.ENOENT
	}
	p = selfToPID(r.Path, r.TGID, r.TID)
	base, err = baseDir(r, p)
	if err != nil {
		return "", -1, 0, err
	}
	resolve = unix.RESOLVE_NO_MAGICLINKS
	if strings.HasPrefix(p, "/") {
		// The caller's root: with RESOLVE_IN_ROOT, "/" and ".." stop there.
		resolve |= unix.RESOLVE_IN_ROOT
	}
	return p, base, resolve, nil
}

// baseDir returns the directory a path starts from: the caller's root for
// absolute paths, else its dirfd or working directory.
func baseDir(r *OpenRequest, p string) (FD, error) {
	tid := strconv.Itoa(r.TID)
	switch {
	case strings.HasPrefix(p, "/"):
		return openPath("/proc/" + tid + "/root")
	case r.DirFD == unix.AT_FDCWD:
		return openPath("/proc/" + tid + "/cwd")
	}
	f, err := TakeFD(r.Pidfd, r.DirFD)
	if err != nil {
		return -1, err // EBADF: the caller's dirfd is not open
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f), &st); err != nil {
		f.Close()
		return -1, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		f.Close()
		return -1, unix.ENOTDIR
	}
	return f, nil
}

// openPath opens one of the caller's /proc magic links (cwd, root) as an
// O_PATH directory fd.
func openPath(p string) (FD, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", p, os.NewSyscallError("open", err))
	}
	return FD(fd), nil
}

// resolveParent handles O_CREAT of a missing object: the parent must
// exist; the object will be created in it.
func resolveParent(r *OpenRequest, base FD, p string, resolve uint64) (*Target, error) {
	if strings.HasSuffix(p, "/") {
		return nil, unix.EISDIR
	}
	dir, name := path.Split(p)
	if name == "." || name == ".." {
		return nil, unix.EISDIR
	}
	return entryIn(r, base, dir, name, resolve)
}

// entryIn resolves directory dir (from base, with resolve) and returns
// the target for the entry name in it: what an O_CREAT open creates, or
// what an unlink removes.
func entryIn(r *OpenRequest, base FD, dir, name string, resolve uint64) (*Target, error) {
	if dir == "" {
		dir = "."
	}
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve}
	fd, err := openat2(int(base), dir, &how)
	if err != nil {
		return nil, err
	}
	t := &Target{obj: -1, dir: FD(fd), name: name}
	real, err := fdPath(fd)
	if err != nil {
		t.Close()
		return nil, err
	}
	t.Path = pidToSelf(strings.TrimSuffix(real, "/")+"/"+name, r.TGID, r.TID)
	return t, nil
}

func (t *Target) describe(r *OpenRequest) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(t.obj), &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	t.Dev, t.Ino, t.Type = st.Dev, st.Ino, st.Mode&unix.S_IFMT
	real, err := fdPath(int(t.obj))
	if err != nil {
		return err
	}
	t.Path = pidToSelf(real, r.TGID, r.TID)
	return nil
}

// fdPath is the canonical path of one of the supervisor's fds.
func fdPath(fd int) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("canonical path: %w", err)
	}
	return p, nil
}

// selfToPID rewrites /proc/self and /proc/thread-self, which would name the
// supervisor once it resolves the path, to the caller's own entries.
func selfToPID(p string, tgid, tid int) string {
	switch {
	case p == "/proc/self" || strings.HasPrefix(p, "/proc/self/"):
		return "/proc/" + strconv.Itoa(tgid) + p[len("/proc/self"):]
	case p == "/proc/thread-self" || strings.HasPrefix(p, "/proc/thread-self/"):
		return "/proc/" + strconv.Itoa(tgid) + "/task/" + strconv.Itoa(tid) + p[len("/proc/thread-self"):]
	}
	return p
}

// pidToSelf shows the caller's own /proc entries as /proc/self and
// /proc/thread-self, the names profiles use. Another process's entries
// keep their pid.
func pidToSelf(p string, tgid, tid int) string {
	thread := "/proc/" + strconv.Itoa(tgid) + "/task/" + strconv.Itoa(tid)
	proc := "/proc/" + strconv.Itoa(tgid)
	switch {
	case p == thread || strings.HasPrefix(p, thread+"/"):
		return "/proc/thread-self" + p[len(thread):]
	case p == proc || strings.HasPrefix(p, proc+"/"):
		return "/proc/self" + p[len(proc):]
	}
	return p
}

// MayBlock reports whether opening the target could block the supervisor
// (a FIFO without O_NONBLOCK waits for its other end; character devices
// such as serial lines may wait for a carrier). Callers open those outside
// the notification loop.
func (t *Target) MayBlock(flags int) bool {
	if flags&unix.O_NONBLOCK != 0 || !t.Exists {
		return false
	}
	return t.Type == unix.S_IFIFO || t.Type == unix.S_IFCHR
}

// Open opens the target with the request's flags and mode: the object
// that was resolved (reopened through its O_PATH fd, so no rename or
// symlink swap in between can change what is opened), or a new file
// created in the resolved directory. The umask applied to a created file
// is the calling thread's, so callers run this on a thread whose umask is
// the caller's (see EmulationThread).
func (t *Target) Open(r *OpenRequest) (FD, error) {
	flags := r.Flags | unix.O_CLOEXEC
	if t.Exists {
		if r.Flags&(unix.O_CREAT|unix.O_EXCL) == unix.O_CREAT|unix.O_EXCL {
			return -1, unix.EEXIST
		}
		if r.Flags&unix.O_PATH != 0 {
			fd, err := unix.FcntlInt(uintptr(t.obj), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return -1, os.NewSyscallError("dup", err)
			}
			return FD(fd), nil
		}
		// O_NOFOLLOW was honoured while resolving; O_CREAT and O_EXCL
		// cannot apply to an existing object.
		flags &^= unix.O_NOFOLLOW | unix.O_CREAT | unix.O_EXCL
		fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(t.obj)), flags, 0)
		if err != nil {
			return -1, err
		}
		return FD(fd), nil
	}
	// Created in the directory that was checked; O_NOFOLLOW so that a
	// symlink planted there meanwhile is not followed out of it.
	fd, err := unix.Openat(int(t.dir), t.name, flags|unix.O_NOFOLLOW, r.Mode)
	if err != nil {
		return -1, err
	}
	return FD(fd), nil
}

func openat2(dirfd int, p string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, p, how)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			// EAGAIN: a rename raced with RESOLVE_IN_ROOT's checks.
			continue
		}
		return fd, err
	}
}

// ResolveEntry finds the directory entry an unlink or rmdir would remove,
// resolving the path as the kernel would for the caller (as ResolveOpen
// does) except its last component, which is not followed: unlink removes
// a symlink, not what it points to. The target's dir and name are the
// entry; Path is its canonical path. rmdir is unlinkat's AT_REMOVEDIR.
//
// An error of type Errno is what the native call would have returned.
func ResolveEntry(r *OpenRequest, rmdir bool) (*Target, error) {
	p, base, resolve, err := lookupStart(r)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	if strings.HasSuffix(p, "/") && strings.Trim(p, "/") != "" {
		if !rmdir {
			// unlink("x/"): the kernel follows x to see whether it is a
			// directory (EISDIR) or not (ENOTDIR), and removes nothing.
			how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve}
			fd, err := openat2(int(base), p, &how)
			if err != nil {
				return nil, err
			}
			var st unix.Stat_t
			err = unix.Fstat(fd, &st)
			unix.Close(fd)
			if err != nil {
				return nil, os.NewSyscallError("fstat", err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				return nil, unix.EISDIR
			}
			return nil, unix.ENOTDIR
		}
		p = strings.TrimRight(p, "/")
	}
	dir, name := path.Split(p)
	switch {
	case name == "" || name == ".":
		if rmdir {
			return nil, unix.EINVAL
		}
		return nil, unix.EISDIR
	case name == "..":
		if rmdir {
			return nil, unix.ENOTEMPTY
		}
		return nil, unix.EISDIR
	}
	return entryIn(r, base, dir, name, resolve)
}

// Remove removes the entry ResolveEntry found, in the directory it
// checked (a rename of a parent in between cannot redirect it), with
// unlinkat's flags.
func (t *Target) Remove(flags int) error {
	if t.dir < 0 || t.name == "" {
		return unix.EINVAL
	}
	return unix.Unlinkat(int(t.dir), t.name, flags)
}
