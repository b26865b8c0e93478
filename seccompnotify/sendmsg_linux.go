//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Msg is the content of a caller's sendmsg, copied into the supervisor:
// its data, and its control messages with the fds of SCM_RIGHTS taken
// from the caller (pidfd_getfd), so that kfv can send it on a socket it
// checked, with the address it checked.
type Msg struct {
	Data []byte
	// Truncated: the caller's iovecs hold more than the limit ReadMsg was
	// given; Data is their first part.
	Truncated bool
	Control   []byte // rebuilt with the supervisor's copies of the fds
	// creds: Control holds an SCM_CREDENTIALS of the caller's own.
	creds bool
	fds   []FD
}

// Close releases the copies of the fds the message carries.
func (m *Msg) Close() {
	for _, f := range m.fds {
		f.Close()
	}
	m.fds = nil
}

// Limits of ReadMsg: the kernel's own for the iovec count (UIO_MAXIOV),
// and a control buffer far above what sendmsg accepts (optmem_max).
const (
	maxIov     = 1024
	maxControl = 64 << 10
)

// ReadMsg reads the struct msghdr at addr in process pid: up to maxData
// bytes of data and its control messages. An error of type Errno is what
// the native call would have returned for the same message (EMSGSIZE for
// too many iovecs, EFAULT for unreadable memory, EBADF for an fd in
// SCM_RIGHTS the caller does not have, ENOBUFS for an oversized control
// buffer, EPERM for SCM_CREDENTIALS the caller could not send itself);
// msg_name is not read: the caller passes the address decided on.
func ReadMsg(pid int, pidfd *os.File, addr uint64, maxData int) (*Msg, error) {
	h := make([]byte, sizeofMsghdr)
	if err := ReadMem(pid, addr, h); err != nil {
		return nil, unix.EFAULT
	}
	iovAddr := binary.NativeEndian.Uint64(h[16:])
	iovLen := binary.NativeEndian.Uint64(h[24:])
	ctlAddr := binary.NativeEndian.Uint64(h[32:])
	ctlLen := binary.NativeEndian.Uint64(h[40:])
	if iovLen > maxIov {
		return nil, unix.EMSGSIZE
	}
	if ctlLen > maxControl {
		return nil, unix.ENOBUFS
	}
	m := &Msg{}
	if iovLen > 0 {
		iov := make([]byte, 16*iovLen)
		if err := ReadMem(pid, iovAddr, iov); err != nil {
			return nil, unix.EFAULT
		}
		for i := uint64(0); i < iovLen; i++ {
			base := binary.NativeEndian.Uint64(iov[16*i:])
			l := binary.NativeEndian.Uint64(iov[16*i+8:])
			if int64(l) < 0 {
				return nil, unix.EINVAL
			}
			room := uint64(maxData - len(m.Data))
			if l > room {
				l, m.Truncated = room, true
			}
			if l > 0 {
				off := len(m.Data)
				m.Data = append(m.Data, make([]byte, l)...)
				if err := ReadMem(pid, base, m.Data[off:]); err != nil {
					return nil, unix.EFAULT
				}
			}
			if m.Truncated {
				break
			}
		}
	}
	if ctlLen > 0 {
		ctl := make([]byte, ctlLen)
		if err := ReadMem(pid, ctlAddr, ctl); err != nil {
			return nil, unix.EFAULT
		}
		if err := m.rebuildControl(pid, pidfd, ctl); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// rebuildControl copies the control messages, with the caller's fds in
// SCM_RIGHTS replaced by the supervisor's copies of them.
// SCM_RIGHTS fds are taken from the caller (pidfd_getfd of its own fd
// numbers): a message can only carry what QEMU holds.
func (m *Msg) rebuildControl(tid int, pidfd *os.File, ctl []byte) error {
	cmsgs, err := unix.ParseSocketControlMessage(ctl)
	if err != nil {
		return unix.EINVAL
	}
	for i := range cmsgs {
		c := &cmsgs[i]
		if c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_CREDENTIALS {
			// kfv sends this message; as root it may claim any pid,
			// uid and gid. Only what QEMU itself could claim passes.
			if err := checkCredentials(tid, c); err != nil {
				return err
			}
			m.creds = true
		}
		if c.Header.Level != unix.SOL_SOCKET || c.Header.Type != unix.SCM_RIGHTS {
			m.Control = append(m.Control, cmsg(c.Header.Level, c.Header.Type, c.Data)...)
			continue
		}
		theirs, err := unix.ParseUnixRights(c)
		if err != nil {
			return unix.EINVAL
		}
		ours := make([]int, 0, len(theirs))
		for _, fd := range theirs {
			f, err := TakeFD(pidfd, fd)
			if err != nil {
				if errors.Is(err, unix.EBADF) {
					return unix.EBADF
				}
				return fmt.Errorf("SCM_RIGHTS fd %d: %w", fd, err)
			}
			m.fds = append(m.fds, f)
			ours = append(ours, int(f))
		}
		m.Control = append(m.Control, unix.UnixRights(ours...)...)
	}
	return nil
}

// checkCredentials checks an SCM_CREDENTIALS message of thread tid: the
// pid must be its process's, the uid one of its real, effective and
// saved uids, the gid one of its gids, as the kernel checks an
// unprivileged sender (scm_check_creds); anything else is EPERM, even
// when kfv, which sends it, could claim it.
func checkCredentials(tid int, c *unix.SocketControlMessage) error {
	uc, err := unix.ParseUnixCredentials(c)
	if err != nil {
		return unix.EINVAL
	}
	p := "/proc/" + strconv.Itoa(tid) + "/status"
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("SCM_CREDENTIALS: read the sender's credentials: %w", err)
	}
	ids, err := parseIDs(string(b), p)
	if err != nil {
		return fmt.Errorf("SCM_CREDENTIALS: %w", err)
	}
	if int(uc.Pid) != ids.tgid || !slices.Contains(ids.uids[:3], int(uc.Uid)) || !slices.Contains(ids.gids[:3], int(uc.Gid)) {
		return unix.EPERM
	}
	return nil
}

// callerCreds returns the SCM_CREDENTIALS message that a send kfv
// performs on sock for thread tid must carry, or nil when none is
// needed. The kernel gives a unix message without one the sender's
// credentials when either end has SO_PASSCRED (maybe_add_creds in
// af_unix.c): the sending thread's process id and real uid and gid.
// For a send kfv performs the sender is kfv, so a root kfv would tell
// the peer "pid of kfv, uid 0, gid 0" on QEMU's behalf, and a peer that
// trusts SCM_CREDENTIALS (journald, a vhost-user backend, an agent that
// checks its client) would grant QEMU root's standing. A root kfv
// therefore states the caller's own: its process id and real uid and
// gid, as the kernel would have for QEMU's own send. An unprivileged
// kfv runs as QEMU's user and cannot claim QEMU's pid (the kernel
// wants CAP_SYS_ADMIN): its sends carry QEMU's uid and gid and kfv's
// pid (docs/security.md).
func callerCreds(sock FD, tid int) ([]byte, error) {
	if unix.Geteuid() != 0 {
		return nil, nil
	}
	dom, err := unix.GetsockoptInt(int(sock), unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("SO_DOMAIN: %w", err)
	}
	if dom != unix.AF_UNIX {
		return nil, nil
	}
	p := "/proc/" + strconv.Itoa(tid) + "/status"
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read the sender's credentials: %w", err)
	}
	ids, err := parseIDs(string(b), p)
	if err != nil {
		return nil, err
	}
	return unix.UnixCredentials(&unix.Ucred{Pid: int32(ids.tgid), Uid: uint32(ids.uids[0]), Gid: uint32(ids.gids[0])}), nil
}

// speakFor makes m carry creds (from callerCreds) unless it carries
// the caller's own SCM_CREDENTIALS already.
func (m *Msg) speakFor(creds []byte) {
	if creds != nil && !m.creds {
		m.Control = append(m.Control, creds...)
		m.creds = true
	}
}

// procIDs are a thread's process id and its uids and gids (real,
// effective, saved, file system), from /proc/TID/status.
type procIDs struct {
	tgid       int
	uids, gids [4]int
}

func parseIDs(s, where string) (procIDs, error) {
	var ids procIDs
	seen := 0
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		var dst []int
		switch k {
		case "Tgid":
			dst = []int{0}
		case "Uid", "Gid":
			dst = make([]int, 4)
		default:
			continue
		}
		if len(f) != len(dst) {
			return ids, fmt.Errorf("%s: %s line %q: want %d fields", where, k, l, len(dst))
		}
		for i := range f {
			n, err := strconv.Atoi(f[i])
			if err != nil {
				return ids, fmt.Errorf("%s: %s line %q: %w", where, k, l, err)
			}
			dst[i] = n
		}
		switch k {
		case "Tgid":
			ids.tgid = dst[0]
		case "Uid":
			copy(ids.uids[:], dst)
		case "Gid":
			copy(ids.gids[:], dst)
		}
		seen++
	}
	if seen != 3 {
		return ids, fmt.Errorf("%s: want Tgid, Uid and Gid lines", where)
	}
	return ids, nil
}
