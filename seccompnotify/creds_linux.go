//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Credentials of performed file calls. The supervisor may be root while
// QEMU is not (-runas, -run-with user=, a manager's unprivileged user):
// a call kfv performs for QEMU on a file must not do more than QEMU
// itself could. kfv performs the calls of a writable share (mkdir,
// mknod, symlink, rename, link, chmod, chown, utimensat) with the
// caller's file-system uid, gid and supplementary groups, set on the
// performing thread only (setfsuid, setfsgid and setgroups are
// per-thread system calls; the thread is locked and has file-system
// attributes of its own). A nonzero fsuid also clears the supervisor's
// file capabilities (CAP_CHOWN, CAP_FOWNER, CAP_DAC_OVERRIDE, CAP_MKNOD
// and the others capabilities(7) lists) from that thread's effective
// set while it lasts, so a chown to another uid, or a chmod of another
// user's file, fails as it fails for QEMU bare.

// Creds are a thread's file-system credentials, and its effective ids.
type Creds struct {
	FSUID, FSGID int
	Groups       []int
	EUID, EGID   int
}

// ThreadCreds reads a thread's file-system credentials from
// /proc/TID/status.
func ThreadCreds(tid int) (Creds, error) {
	p := "/proc/" + strconv.Itoa(tid) + "/status"
	b, err := os.ReadFile(p)
	if err != nil {
		return Creds{}, fmt.Errorf("read credentials: %w", err)
	}
	return parseCreds(string(b), p)
}

func parseCreds(s, where string) (Creds, error) {
	var c Creds
	var haveU, haveG bool
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "Uid", "Gid":
			if len(f) != 4 {
				return Creds{}, fmt.Errorf("%s: %s line %q: want 4 ids", where, k, l)
			}
			id, err := strconv.Atoi(f[3]) // real, effective, saved, file system
			eff, eerr := strconv.Atoi(f[1])
			if err := errors.Join(err, eerr); err != nil {
				return Creds{}, fmt.Errorf("%s: %s line %q: %w", where, k, l, err)
			}
			if k == "Uid" {
				c.FSUID, c.EUID, haveU = id, eff, true
			} else {
				c.FSGID, c.EGID, haveG = id, eff, true
			}
		case "Groups":
			for _, g := range f {
				id, err := strconv.Atoi(g)
				if err != nil {
					return Creds{}, fmt.Errorf("%s: Groups line %q: %w", where, l, err)
				}
				c.Groups = append(c.Groups, id)
			}
		}
	}
	if !haveU || !haveG {
		return Creds{}, fmt.Errorf("%s: no Uid or Gid line", where)
	}
	slices.Sort(c.Groups)
	return c, nil
}

// ownCreds are the performing thread's credentials: its effective ids
// (which are its file-system ids outside asCaller) and groups.
func ownCreds() (Creds, error) {
	g, err := unix.Getgroups()
	if err != nil {
		return Creds{}, os.NewSyscallError("getgroups", err)
	}
	slices.Sort(g)
	return Creds{FSUID: unix.Geteuid(), FSGID: unix.Getegid(), Groups: g}, nil
}

func (c Creds) same(o Creds) bool {
	return c.FSUID == o.FSUID && c.FSGID == o.FSGID && slices.Equal(c.Groups, o.Groups)
}

// asCaller runs fn on the calling thread with the file-system
// credentials of thread tid, when they differ from the thread's own,
// and restores its own before returning. fn's error is returned as is
// (an Errno is the call's answer); other errors are kfv's.
func asCaller(tid int, fn func() error) error {
	them, err := ThreadCreds(tid)
	if err != nil {
		return err
	}
	us, err := ownCreds()
	if err != nil {
		return err
	}
	if them.same(us) {
		return fn()
	}
	if err := setFSCreds(them); err != nil {
		if rerr := setFSCreds(us); rerr != nil {
			panic("kfv: cannot restore the supervisor's credentials on a performing thread: " + rerr.Error())
		}
		return fmt.Errorf("take the caller's credentials (fsuid %d, fsgid %d): %w", them.FSUID, them.FSGID, err)
	}
	defer func() {
		if err := setFSCreds(us); err != nil {
			// This thread must not go on answering with QEMU's
			// credentials, nor with a mix of them.
			panic("kfv: cannot restore the supervisor's credentials on a performing thread: " + err.Error())
		}
	}()
	return fn()
}

// setFSCreds sets this thread's groups, fsgid and fsuid, and checks the
// ids took (setfsuid reports no failure).
func setFSCreds(c Creds) error {
	if err := unix.Setgroups(c.Groups); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	unix.Setfsgid(c.FSGID)
	unix.Setfsuid(c.FSUID)
	if g, _ := unix.SetfsgidRetGid(-1); g != c.FSGID {
		return fmt.Errorf("setfsgid(%d): still %d", c.FSGID, g)
	}
	if u, _ := unix.SetfsuidRetUid(-1); u != c.FSUID {
		return fmt.Errorf("setfsuid(%d): still %d", c.FSUID, u)
	}
	return nil
}

// Identity of the calls kfv performs as root for an unprivileged QEMU.
// kfv keeps its own rights to reach the VM's objects (the configuration
// may name a socket or a directory QEMU's user cannot reach, and kfv
// opened them as root before QEMU ran unprivileged), but what such a call
// leaves behind must name QEMU, not root: a file or socket kfv creates
// is owned by QEMU's uid and gid, and the peer of a unix socket kfv
// connects sees QEMU's uid and gid in SO_PEERCRED (the kernel records
// the connecting thread's effective ids). asOwner takes QEMU's effective
// ids and groups on the performing thread (setresuid and setresgid are
// per-thread system calls, made raw: Go's syscall package would change
// every thread), which clears the thread's effective capabilities, and
// raises back only CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its
// permitted set: kfv still reaches what it reached, and nothing else
// (no chown, no mknod, no capability over processes) is available to it
// meanwhile. The real and saved uids stay 0, so the thread can return.

// ownerCaps are the capabilities a performing thread keeps while it has
// QEMU's identity: reaching the objects the decision named.
const ownerCaps = 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH

// asOwner runs fn on the calling thread with the effective ids and
// groups of thread tid and kfv's access to files (ownerCaps), when the
// supervisor is root and the caller is not; otherwise it runs fn as is.
// fn's error is returned as is.
//
// Preconditions: the calling goroutine is locked to its thread
// (PrepareEmulationThread).
func asOwner(tid int, fn func() error) error {
	if unix.Geteuid() != 0 {
		return fn() // kfv has no more rights than QEMU to hand over
	}
	them, err := ThreadCreds(tid)
	if err != nil {
		return err
	}
	if them.EUID == 0 {
		return fn()
	}
	us, err := ownCreds()
	if err != nil {
		return err
	}
	restore := func() {
		if err := restoreOwner(us); err != nil {
			// This thread must not go on answering as QEMU.
			panic("kfv: cannot restore the supervisor's credentials on a performing thread: " + err.Error())
		}
	}
	if err := takeOwner(them); err != nil {
		restore()
		return fmt.Errorf("take the caller's identity (uid %d, gid %d): %w", them.EUID, them.EGID, err)
	}
	defer restore()
	return fn()
}

// takeOwner gives this thread c's effective ids and groups, and
// ownerCaps alone as its effective capabilities.
func takeOwner(c Creds) error {
	if err := unix.Setgroups(c.Groups); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(c.EGID), ^uintptr(0)); e != 0 {
		return os.NewSyscallError("setresgid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(c.EUID), ^uintptr(0)); e != 0 {
		return os.NewSyscallError("setresuid", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.NewSyscallError("capget", err)
	}
	data[0].Effective = data[0].Permitted & ownerCaps
	data[1].Effective = 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return os.NewSyscallError("capset", err)
	}
	return nil
}

// restoreOwner gives this thread back the supervisor's ids and groups;
// the effective uid back to 0 restores every permitted capability.
func restoreOwner(us Creds) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(us.FSUID), ^uintptr(0)); e != 0 {
		return os.NewSyscallError("setresuid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(us.FSGID), ^uintptr(0)); e != 0 {
		return os.NewSyscallError("setresgid", e)
	}
	if err := unix.Setgroups(us.Groups); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	if u, g := unix.Geteuid(), unix.Getegid(); u != us.FSUID || g != us.FSGID {
		return fmt.Errorf("still uid %d, gid %d", u, g)
	}
	return nil
}
