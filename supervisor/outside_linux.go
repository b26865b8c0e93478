//go:build linux

package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"kfv/orch"
)

// Reactions QEMU cannot refuse. QMP's stop and set_link are served by the
// QEMU they act on: a subverted QEMU may ignore them, fake its answer or
// close kfv's monitor first. So kfv also enforces pause and link down
// from outside QEMU, with what the kernel gives the supervisor:
//
//   - pause: the cgroup v2 freezer when QEMU has a cgroup of its own (a
//     subtree holding no other process, as libvirt's machine scope), else
//     SIGSTOP of the thread group through QEMU's pidfd; verified from
//     outside (cgroup.events "frozen 1", every /proc/PID/task/*/stat in
//     state T or t), never from QEMU's answer.
//   - link down: kfv's network switch (every later network call of the VM
//     that reaches kfv is refused), shutdown(SHUT_RDWR) of QEMU's inet
//     sockets through pidfd_getfd copies (a copy is the same socket), and
//     the VM's taps set down by netlink.
//
// What stays out of reach is said in docs/security.md.

// outsideVerify bounds the wait for QEMU to be seen stopped or frozen:
// a thread in an uninterruptible sleep (disk I/O) stops when it returns.
const outsideVerify = 5 * time.Second

// pauseQMPBound bounds QMP's stop in a pause: the outside freeze follows
// whatever QEMU answers, and a QEMU that does not answer at once must
// not keep running. A healthy QEMU answers stop in a few milliseconds; a
// payload flooding from a vCPU thread keeps stop from ever completing
// (QEMU waits for the vCPU to come back), and it was held only after
// this bound. A stop QEMU is still working on (draining its disks) when
// the bound passes completes after a thaw, before the continue's cont,
// which the monitor answers in order.
const pauseQMPBound = 50 * time.Millisecond

// cgroupRoot returns where the unified cgroup hierarchy is mounted:
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid
// one; "" without one.
func cgroupRoot() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	return parseCgroup2Mount(string(b))
}

// parseCgroup2Mount returns the mount point of the first cgroup2 mount of
// the whole hierarchy (its root "/") in the text of /proc/self/mountinfo:
// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE
// SUPEROPTIONS".
func parseCgroup2Mount(text string) string {
	for _, line := range strings.Split(text, "\n") {
		left, right, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 1 || rf[0] != "cgroup2" || lf[3] != "/" {
			continue
		}
		return strings.ReplaceAll(lf[4], `\040`, " ")
	}
	return ""
}

// outside is the state of the reactions kfv enforces outside QEMU.
type outside struct {
	mu sync.Mutex
	// paused is set while kfv holds QEMU stopped; cgroup is the cgroup
	// directory it froze ("" when it stopped QEMU with SIGSTOP).
	paused     bool
	cgroup     string
	cgroupName string // its name in the hierarchy, for the events
	// tapsDown are the taps kfv set down, for link up.
	tapsDown []string
}

// parseStatState returns the state letter of a /proc/PID/stat or
// /proc/PID/task/TID/stat line: the field after the command, which is in
// parentheses and may itself hold ") ".
func parseStatState(b []byte) (byte, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) || b[i+1] != ' ' {
		return 0, fmt.Errorf("stat line %q: no state after the command", b)
	}
	return b[i+2], nil
}

// stoppedState reports whether a state letter is a stop: T (a signal's
// group stop) or t (a ptrace stop, memwatch's scrub).
func stoppedState(s byte) bool { return s == 'T' || s == 't' }

// threadsStopped counts QEMU's threads and those in a stop. A thread that
// exits under the read is not counted.
func threadsStopped(pid int) (stopped, total int, err error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	names, err := readDirNames(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("list QEMU's threads: %w", err)
	}
	for _, n := range names {
		b, err := os.ReadFile(dir + "/" + n + "/stat")
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("read thread %s's state: %w", n, err)
		}
		s, err := parseStatState(b)
		if err != nil {
			return 0, 0, err
		}
		total++
		if stoppedState(s) {
			stopped++
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("QEMU %d has no threads: %w", pid, unix.ESRCH)
	}
	return stopped, total, nil
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// parseCgroupV2 returns the unified hierarchy's path in the text of
// /proc/PID/cgroup (the "0::/path" line); ok is false without one (a
// cgroup v1 host).
func parseCgroupV2(text string) (path string, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		if p, found := strings.CutPrefix(line, "0::"); found {
			return p, strings.HasPrefix(p, "/")
		}
	}
	return "", false
}

// parseFrozen reports whether cgroup.events says "frozen 1".
func parseFrozen(text string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "frozen 1" {
			return true
		}
	}
	return false
}

// subtreeProcs lists the processes in dir's cgroup and every cgroup under
// it (cgroup.procs of each; a threaded cgroup's lists its domain's
// processes, which are the same ones).
func subtreeProcs(dir string) ([]int, error) {
	var out []int
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("%s/cgroup.procs: %q is not a pid", p, f)
			}
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
		return nil
	})
	return out, err
}

// ownCgroup returns the highest cgroup under root, on the path of QEMU's
// cgroup (cgPath, from /proc/PID/cgroup), whose whole subtree holds QEMU's
// process alone: freezing it freezes QEMU and nothing else (libvirt's
// machine scope, or its emulator and vCPU cgroups under it). "" when
// QEMU shares its cgroup with another process (kfv-run's own, or a
// shell's) or sits in the root.
func ownCgroup(root, cgPath string, pid int) string {
	rel := strings.Trim(cgPath, "/")
	if rel == "" {
		return ""
	}
	parts := strings.Split(rel, "/")
	best := ""
	for i := len(parts); i >= 1; i-- {
		dir := filepath.Join(root, filepath.Join(parts[:i]...))
		if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err != nil {
			break
		}
		procs, err := subtreeProcs(dir)
		if err != nil || len(procs) != 1 || procs[0] != pid {
			break
		}
		best = dir
	}
	return best
}

// qemuCgroup is ownCgroup for a live QEMU: the cgroup's directory and
// its name in the hierarchy, "" when there is none.
func qemuCgroup(pid int) (dir, name string) {
	root := cgroupRoot()
	if root == "" {
		return "", ""
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", ""
	}
	p, ok := parseCgroupV2(string(b))
	if !ok {
		return "", ""
	}
	dir = ownCgroup(root, p, pid)
	if dir == "" {
		return "", ""
	}
	return dir, "/" + strings.TrimPrefix(strings.TrimPrefix(dir, root), "/")
}

// freeze stops QEMU from outside and verifies it: it returns how (for the
// reaction's event). Stopping an already stopped QEMU verifies it again.
func (o *outside) freeze(proc *process) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	pid, pidfd := proc.current()
	if pidfd == nil || pid <= 0 {
		return "", errors.New("no QEMU process")
	}
	if cg, name := qemuCgroup(pid); cg != "" {
		how, err := freezeCgroup(cg, name)
		if err == nil {
			o.paused, o.cgroup, o.cgroupName = true, cg, name
			return how, nil
		}
		// The freezer failed (a read-only cgroupfs): the signal still
		// stops QEMU.
		how2, err2 := o.sigstopLocked(pid, pidfd)
		return how2 + " (cgroup freeze failed: " + err.Error() + ")", err2
	}
	return o.sigstopLocked(pid, pidfd)
}

// sigstopLocked stops QEMU's thread group with SIGSTOP through its pidfd
// and waits until every thread is seen stopped.
// Preconditions: o.mu is held.
func (o *outside) sigstopLocked(pid int, pidfd *os.File) (string, error) {
	// The kernel stops every thread of the group; QEMU cannot catch,
	// block or ignore SIGSTOP, and while stopped runs nothing that could
	// send itself SIGCONT.
	if err := unix.PidfdSendSignal(int(pidfd.Fd()), unix.SIGSTOP, nil, 0); err != nil {
		return "SIGSTOP", fmt.Errorf("stop QEMU: %w", os.NewSyscallError("pidfd_send_signal(SIGSTOP)", err))
	}
	o.paused, o.cgroup = true, ""
	var stopped, total int
	var err error
	for end := time.Now().Add(outsideVerify); ; time.Sleep(2 * time.Millisecond) {
		stopped, total, err = threadsStopped(pid)
		if err != nil {
			return "SIGSTOP", err
		}
		if stopped == total || time.Now().After(end) {
			break
		}
	}
	how := fmt.Sprintf("SIGSTOP: %d of %d threads stopped", stopped, total)
	if stopped != total {
		return how, fmt.Errorf("%d of QEMU's %d threads not stopped after %v", total-stopped, total, outsideVerify)
	}
	return how, nil
}

// freezeCgroup freezes the cgroup dir and waits for the kernel to say
// that it is frozen.
func freezeCgroup(dir, name string) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return "", fmt.Errorf("freeze cgroup %s: %w", name, err)
	}
	for end := time.Now().Add(outsideVerify); ; time.Sleep(2 * time.Millisecond) {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil {
			return "", fmt.Errorf("read %s/cgroup.events: %w", dir, err)
		}
		if parseFrozen(string(b)) {
			return "cgroup freeze: " + name + " frozen", nil
		}
		if time.Now().After(end) {
			return "", fmt.Errorf("cgroup %s not frozen after %v", name, outsideVerify)
		}
	}
}

// thaw undoes freeze: the cgroup is thawed, or QEMU gets SIGCONT. It
// returns how, "" when kfv held nothing.
func (o *outside) thaw(proc *process) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.thawLocked(proc)
}

// thawLocked is thaw.
// Preconditions: o.mu is held.
func (o *outside) thawLocked(proc *process) (string, error) {
	if !o.paused {
		return "", nil
	}
	o.paused = false
	if o.cgroup != "" {
		cg := o.cgroup
		o.cgroup = ""
		if err := os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0); err != nil {
			return "cgroup thaw", fmt.Errorf("thaw cgroup %s: %w", cg, err)
		}
		return "cgroup " + o.cgroupName + " thawed", nil
	}
	_, pidfd := proc.current()
	if pidfd == nil {
		return "", nil
	}
	if err := unix.PidfdSendSignal(int(pidfd.Fd()), unix.SIGCONT, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return "SIGCONT", fmt.Errorf("resume QEMU: %w", os.NewSyscallError("pidfd_send_signal(SIGCONT)", err))
	}
	return "SIGCONT", nil
}

// isPaused reports whether kfv holds QEMU stopped.
func (o *outside) isPaused() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.paused
}

// holdAcross runs f (memwatch's scrub, which stops and resumes QEMU
// itself) so that a security pause outlives it: kfv's stop is lifted for
// f, and put back at once after.
func (o *outside) holdAcross(proc *process, f func() error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.paused {
		return f()
	}
	cg, name := o.cgroup, o.cgroupName
	pid, pidfd := proc.current()
	if cg != "" {
		// A frozen cgroup's threads cannot be seized by ptrace: thaw,
		// scrub (which stops QEMU itself), freeze again.
		if _, err := o.thawLocked(proc); err != nil {
			return err
		}
		err := f()
		_, ferr := freezeCgroup(cg, name)
		if ferr == nil {
			o.paused, o.cgroup, o.cgroupName = true, cg, name
		}
		return errors.Join(err, ferr)
	}
	// The scrub seizes the stopped threads and ends with SIGCONT: stop
	// them again at once.
	err := f()
	_, serr := o.sigstopLocked(pid, pidfd)
	return errors.Join(err, serr)
}

// Link down from outside.

// shutInetSockets shuts down (SHUT_RDWR) every AF_INET and AF_INET6
// socket of QEMU, through pidfd_getfd copies: shutdown acts on the
// socket, which QEMU's fd and kfv's copy share. It returns how many.
func shutInetSockets(pid int, pidfd *os.File) (int, error) {
	fds, err := qemuFDs(pid, func(link string) bool { return strings.HasPrefix(link, "socket:") })
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, fd := range fds {
		cp, err := unix.PidfdGetfd(int(pidfd.Fd()), fd, 0)
		if err != nil {
			if !errors.Is(err, unix.EBADF) { // closed meanwhile
				errs = append(errs, fmt.Errorf("copy QEMU's fd %d: %w", fd, os.NewSyscallError("pidfd_getfd", err)))
			}
			continue
		}
		dom, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err == nil && (dom == unix.AF_INET || dom == unix.AF_INET6) {
			// ENOTCONN: an unconnected UDP socket; the kernel marks it
			// shut down all the same.
			if err := unix.Shutdown(cp, unix.SHUT_RDWR); err == nil || errors.Is(err, unix.ENOTCONN) {
				n++
			} else {
				errs = append(errs, fmt.Errorf("shut down QEMU's fd %d: %w", fd, os.NewSyscallError("shutdown", err)))
			}
		}
		unix.Close(cp)
	}
	return n, errors.Join(errs...)
}

// qemuFDs lists QEMU's fds whose /proc/PID/fd link text want accepts.
func qemuFDs(pid int, want func(string) bool) ([]int, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	names, err := readDirNames(dir)
	if err != nil {
		return nil, fmt.Errorf("list QEMU's fds: %w", err)
	}
	var out []int
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		link, err := os.Readlink(dir + "/" + n)
		if err != nil || !want(link) {
			continue
		}
		out = append(out, fd)
	}
	sort.Ints(out)
	return out, nil
}

// qemuTaps names the taps of QEMU's /dev/net/tun fds (TUNGETIFF on
// pidfd_getfd copies), whether QEMU opened them or its manager passed
// them (tap fd=N).
func qemuTaps(pid int, pidfd *os.File) ([]string, error) {
	fds, err := qemuFDs(pid, func(link string) bool { return link == "/dev/net/tun" })
	if err != nil {
		return nil, err
	}
	var names []string
	var errs []error
	for _, fd := range fds {
		cp, err := unix.PidfdGetfd(int(pidfd.Fd()), fd, 0)
		if err != nil {
			continue
		}
		ifr, err := unix.NewIfreq("")
		if err == nil {
			// TUNGETIFF: the name of the interface the fd is attached
			// to (EBADFD before TUNSETIFF).
			err = unix.IoctlIfreq(cp, unix.TUNGETIFF, ifr)
		}
		unix.Close(cp)
		if err != nil {
			if !errors.Is(err, unix.EBADFD) {
				errs = append(errs, fmt.Errorf("name the tap of QEMU's fd %d: %w", fd, os.NewSyscallError("ioctl(TUNGETIFF)", err)))
			}
			continue
		}
		if n := ifr.Name(); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names, errors.Join(errs...)
}

// linkMsg builds an RTM_NEWLINK request that sets (up) or clears IFF_UP
// of interface index, asking for an acknowledgement: a struct nlmsghdr,
// then a struct ifinfomsg whose ifi_change names IFF_UP alone, so no
// other flag changes.
func linkMsg(index int32, up bool, seq uint32) []byte {
	const hdr, ifi = unix.NLMSG_HDRLEN, unix.SizeofIfInfomsg
	b := make([]byte, hdr+ifi)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.RTM_NEWLINK)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(b[8:], seq)
	// ifinfomsg: family (1), pad (1), type (2), index (4), flags (4),
	// change (4).
	b[hdr] = unix.AF_UNSPEC
	ne.PutUint32(b[hdr+4:], uint32(index))
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	ne.PutUint32(b[hdr+8:], flags)
	ne.PutUint32(b[hdr+12:], unix.IFF_UP)
	return b
}

// parseAck returns the error of a netlink acknowledgement for seq (nil
// when it reports success).
func parseAck(b []byte, seq uint32) error {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return fmt.Errorf("netlink: message of %d bytes in %d", l, len(b))
		}
		typ, s := ne.Uint16(b[4:]), ne.Uint32(b[8:])
		if typ == unix.NLMSG_ERROR && s == seq {
			if l < unix.NLMSG_HDRLEN+4 {
				return errors.New("netlink: short error message")
			}
			if code := int32(ne.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
		b = b[(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1):]
	}
	return errors.New("netlink: no acknowledgement")
}

// setLink sets the interface name up or down by netlink (needs
// CAP_NET_ADMIN in the tap's network namespace, which is kfv's own).
func setLink(name string, up bool) error {
	ifi, err := ifIndex(name)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return os.NewSyscallError("socket(AF_NETLINK)", err)
	}
	defer unix.Close(fd)
	const seq = 1
	if err := unix.Sendto(fd, linkMsg(ifi, up, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto(RTM_NEWLINK)", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return os.NewSyscallError("recvfrom(netlink)", err)
	}
	return parseAck(buf[:n], seq)
}

func ifIndex(name string) (int32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, os.NewSyscallError("ioctl(SIOCGIFINDEX)", err))
	}
	return int32(ifr.Uint32()), nil
}

// cutNetwork carries out the outside part of link down: the switch is
// already on; QEMU's inet sockets are shut down and its taps set down.
func (o *outside) cutNetwork(proc *process) (string, error) {
	pid, pidfd := proc.current()
	if pidfd == nil {
		return "", errors.New("no QEMU process")
	}
	parts := []string{"kfv refuses the VM's network calls"}
	n, err := shutInetSockets(pid, pidfd)
	parts = append(parts, fmt.Sprintf("%d inet sockets shut down", n))
	errs := []error{err}
	taps, err := qemuTaps(pid, pidfd)
	errs = append(errs, err)
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, t := range taps {
		if err := setLink(t, false); err != nil {
			errs = append(errs, fmt.Errorf("set tap %s down: %w", t, err))
			continue
		}
		parts = append(parts, t+" down")
		if !slices.Contains(o.tapsDown, t) {
			o.tapsDown = append(o.tapsDown, t)
		}
	}
	return strings.Join(parts, " + "), errors.Join(errs...)
}

// restoreNetwork undoes what can be undone of cutNetwork: the taps kfv
// set down go up (the switch is turned on by the caller). Sockets shut
// down stay so: QEMU makes new ones.
func (o *outside) restoreNetwork() (string, error) {
	o.mu.Lock()
	taps := o.tapsDown
	o.tapsDown = nil
	o.mu.Unlock()
	parts := []string{"kfv allows the VM's network calls again"}
	var errs []error
	for _, t := range taps {
		if err := setLink(t, true); err != nil {
			errs = append(errs, fmt.Errorf("set tap %s up: %w", t, err))
			continue
		}
		parts = append(parts, t+" up")
	}
	return strings.Join(parts, " + "), errors.Join(errs...)
}

// netSwitchRule is the rule of a call kfv's network switch refused.
const netSwitchRule = "kfv:link-down"

// netSyscalls are the calls kfv's network switch refuses while the VM's
// network is down, when they reach kfv (the profile sends them to it)
// and act on an inet socket: the socket is made, named, connected, or
// sends.
var netSyscalls = map[string]bool{"socket": true, "connect": true, "bind": true, "listen": true, "accept": true, "accept4": true, "sendto": true, "sendmsg": true, "sendmmsg": true}

// netCall says which network call r is ("" for none): a call of
// netSyscalls on anything but an AF_UNIX socket (QEMU's monitors, its
// vhost-user and chardev sockets keep working).
func (s *session) netCall(r *orch.Request) string {
	if !netSyscalls[r.Syscall] {
		return ""
	}
	if r.Syscall == "socket" {
		fam := int(r.Args[0])
		if fam == unix.AF_UNIX {
			return ""
		}
		return fmt.Sprintf("socket(family %d)", fam)
	}
	if r.Sock != nil && r.Sock.Family == unix.AF_UNIX {
		return ""
	}
	pid, pidfd := s.proc.current()
	if r.PID != pid || pidfd == nil {
		return r.Syscall // another process under the filter: refused
	}
	cp, err := unix.PidfdGetfd(int(pidfd.Fd()), int(int32(r.Args[0])), 0)
	if err != nil {
		return r.Syscall
	}
	defer unix.Close(cp)
	dom, err := unix.GetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err == nil && dom == unix.AF_UNIX {
		return ""
	}
	return r.Syscall
}
