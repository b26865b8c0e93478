//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/seccompnotify"
)

// QEMU without root (the standalone model). When kfv-run runs as root,
// the loader drops QEMU to an unprivileged user just before its exec:
// the supplementary groups of that user, its gid and uid (real,
// effective and saved), and no capability left in any set (bounding,
// ambient, inheritable, permitted, effective). kfv itself stays root: it
// opens the VM's images, /dev/kvm and its taps for QEMU (performed calls,
// seccompnotify), so QEMU's user needs no right to them, and a payload
// that gets past a rule of the profile meets the kernel's checks for an
// ordinary user. The emulator model is untouched: libvirt runs QEMU as
// its own user and drops its capabilities itself.
//
// Credentials are per thread in the kernel, and Go's syscall.Setresuid
// changes every thread of the process (AllThreadsSyscall): the loader
// changes them with raw system calls on its locked thread, the one that
// execs; the runtime's other threads, still root, vanish at exec.

// DefaultRunAs is the user QEMU runs as when kfv-run is root and says
// nothing else. make install creates it (useradd --system, no home, no
// login shell), as do make test and make demo (tools/deps.sh).
const DefaultRunAs = "kfv-qemu"

// RunAs is who QEMU runs as. The zero value (nil) changes nothing.
type RunAs struct {
	User   string
	UID    int
	GID    int
	Groups []int // supplementary groups, the primary one included
	// Root: kfv-run is root and was told --run-as root: QEMU stays root.
	Root bool
	// Audit: QEMU stays root because kfv runs in audit mode, which
	// watches the VM as it runs without kfv (no drop, as no wall).
	Audit bool
	// QEMUDrops names QEMU's own option that changes its user (-runas,
	// -run-with user=): QEMU needs root to make it, so kfv leaves it be.
	QEMUDrops string
	// Reach are the directories QEMU's user must be able to search
	// itself (reachList): the loader checks them after the drop.
	Reach []string
}

// AuditRunAs is who QEMU runs as in audit mode when no user was asked
// for: kfv-run's own user, as without kfv. Audit mode shows what the VM
// does today; an unprivileged QEMU would fail where a root one does not
// (a continued call in a directory only root may enter), and the audit
// would report a VM that is not the one being rolled out.
func AuditRunAs() *RunAs {
	if os.Geteuid() != 0 {
		return nil
	}
	return &RunAs{User: "root", Root: true, Audit: true}
}

// ResolveRunAs works out who QEMU runs as, from the --run-as setting
// ("" for none given) and QEMU's arguments. As root, "" is DefaultRunAs
// (or QEMU's own -runas); "root" keeps QEMU root. Not root, QEMU runs as
// kfv-run's caller, and naming any other user is an error. A user that
// does not exist is an error that says how to create it.
func ResolveRunAs(name string, args []string) (*RunAs, error) {
	if os.Geteuid() != 0 {
		if name == "" {
			return nil, nil
		}
		me, err := user.LookupId(strconv.Itoa(os.Geteuid()))
		if name == strconv.Itoa(os.Geteuid()) || err == nil && me.Username == name {
			return nil, nil
		}
		who := "uid " + strconv.Itoa(os.Geteuid())
		if err == nil {
			who = me.Username + " (" + who + ")"
		}
		return nil, fmt.Errorf("--run-as %s: kfv-run runs as %s, and only root can run QEMU as another user", name, who)
	}
	own := qemuChangesUser(args)
	if own != "" {
		if name != "" && name != "root" {
			return nil, fmt.Errorf("--run-as %s: QEMU's command line changes its user itself (%s), which it can only do as root: keep one of them", name, own)
		}
		return &RunAs{User: "root", QEMUDrops: own}, nil
	}
	what := "--run-as " + name
	if name == "" {
		name = DefaultRunAs
		what = "QEMU's user " + name + " (the default of --run-as under a root kfv-run)"
	}
	if name == "root" || name == "0" {
		return &RunAs{User: "root", Root: true}, nil
	}
	u, err := lookupUser(name)
	if err != nil {
		var unknown user.UnknownUserError
		var unknownID user.UnknownUserIdError
		if errors.As(err, &unknown) || errors.As(err, &unknownID) {
			fix := "name an existing user"
			if name == DefaultRunAs {
				fix = "create it with make install, or: useradd --system --no-create-home --shell /usr/sbin/nologin " + DefaultRunAs
			}
			return nil, fmt.Errorf("%s: no such user, so QEMU cannot be run as it; %s (or --run-as root to keep QEMU root)", what, fix)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	r := &RunAs{User: u.Username, Reach: reachList(args)}
	r.UID, err = strconv.Atoi(u.Uid)
	if err == nil {
		r.GID, err = strconv.Atoi(u.Gid)
	}
	if err != nil {
		return nil, fmt.Errorf("--run-as %s: %w", name, err)
	}
	if r.UID == 0 {
		return &RunAs{User: u.Username, Root: true}, nil
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("--run-as %s: supplementary groups: %w", name, err)
	}
	for _, g := range gids {
		id, err := strconv.Atoi(g)
		if err != nil {
			return nil, fmt.Errorf("--run-as %s: group %q: %w", name, g, err)
		}
		r.Groups = append(r.Groups, id)
	}
	slices.Sort(r.Groups)
	r.Groups = slices.Compact(r.Groups)
	return r, nil
}

// reachList are the directories QEMU looks into itself, with calls the
// kernel checks as QEMU's user: kfv opens and creates QEMU's files for
// it, but QEMU stat()s its pidfile after creating it, and QEMU 7.2 tries
// again without end while that stat fails. The pidfile's directory must
// be searchable by QEMU's user.
func reachList(args []string) []string {
	var dirs []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-pidfile" || args[i] == "--pidfile" {
			dirs = append(dirs, filepath.Dir(args[i+1]))
		}
	}
	return dirs
}

// lookupUser finds a user by name, or by uid when name is a number.
func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.Atoi(name); nerr == nil {
		return user.LookupId(name)
	}
	return nil, err
}

// qemuChangesUser returns QEMU's own option that changes its user, or "".
func qemuChangesUser(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		switch strings.TrimPrefix(args[i], "-") {
		case "-runas", "runas":
			return "-runas " + args[i+1]
		case "-run-with", "run-with":
			for _, kv := range strings.Split(args[i+1], ",") {
				if strings.HasPrefix(kv, "user=") {
					return "-run-with " + kv
				}
			}
		}
	}
	return ""
}

// drop is what the loader does with RunAs; nil when QEMU keeps the
// loader's credentials.
func (r *RunAs) drop() *credDrop {
	if r == nil || r.Root || r.QEMUDrops != "" {
		return nil
	}
	return &credDrop{User: r.User, UID: r.UID, GID: r.GID, Groups: r.Groups, Reach: r.Reach}
}

// describe says who QEMU runs as, for the lifecycle event; warn is set
// when QEMU keeps root.
func (r *RunAs) describe() (s string, warn bool) {
	switch {
	case r == nil:
		return fmt.Sprintf("QEMU runs as kfv-run's caller (uid %d): kfv-run is not root", os.Geteuid()), false
	case r.QEMUDrops != "":
		return "QEMU starts as root and changes its user itself (" + r.QEMUDrops + "); kfv does not drop it", false
	case r.Audit:
		return "audit mode: QEMU runs as root, as it would without kfv (audit mode drops no privileges, as it builds no wall; --run-as USER drops them all the same)", false
	case r.Root:
		return "--run-as root: QEMU runs as root, with every capability; a rule mistake hands a payload root's rights", true
	}
	return fmt.Sprintf("QEMU runs as %s (uid %d, gid %d, groups %v) with no capabilities; RLIMIT_CORE 0, RLIMIT_NOFILE %d, RLIMIT_NPROC %d", r.User, r.UID, r.GID, r.Groups, limitNoFile, limitNProc), false
}

// runAs says in the event stream who this QEMU runs as (a warning
// when it keeps root) and returns the loader's part.
func (s *session) runAs() *credDrop {
	detail, warn := s.cfg.RunAs.describe()
	kind := event.KindLifecycle
	if warn {
		kind = event.KindWarning
	}
	s.emit(&event.Event{Kind: kind, Source: "supervisor", Detail: detail})
	return s.cfg.RunAs.drop()
}

// credDrop is the loader's part: the user QEMU is exec'd as.
type credDrop struct {
	User   string   `json:"user"`
	UID    int      `json:"uid"`
	GID    int      `json:"gid"`
	Groups []int    `json:"groups"`
	Reach  []string `json:"reach,omitempty"`
}

// Limits the loader sets on QEMU, whoever it runs as.
const (
	// limitNoFile bounds QEMU's open files (hard limit; QEMU raises its
	// soft limit to it): a VM holds a few per disk, NIC queue, vhost
	// device, vCPU and io_uring, far below this; a payload that opens
	// without end is stopped short of exhausting the host's file table.
	limitNoFile = 65536
	// limitNProc bounds the tasks of QEMU's real uid (the kernel counts
	// threads, of every process of that uid): QEMU has a thread per vCPU
	// and up to 64 block workers, so this leaves room for many VMs under
	// one user while a fork or thread bomb stops there. Root and
	// CAP_SYS_RESOURCE are not held to it.
	limitNProc = 8192
)

// setLimits gives the calling process no core dumps (a dump of QEMU is
// a dump of the guest's memory, written wherever core_pattern says), and
// the bounds above, never raising a limit the caller already lowered.
func setLimits() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return os.NewSyscallError("setrlimit(RLIMIT_CORE)", err)
	}
	for _, l := range []struct {
		res  int
		name string
		max  uint64
	}{{unix.RLIMIT_NOFILE, "RLIMIT_NOFILE", limitNoFile}, {unix.RLIMIT_NPROC, "RLIMIT_NPROC", limitNProc}} {
		var cur unix.Rlimit
		if err := unix.Getrlimit(l.res, &cur); err != nil {
			return os.NewSyscallError("getrlimit("+l.name+")", err)
		}
		cur.Max = min(cur.Max, l.max)
		cur.Cur = min(cur.Cur, cur.Max)
		if err := unix.Setrlimit(l.res, &cur); err != nil {
			return os.NewSyscallError("setrlimit("+l.name+")", err)
		}
	}
	return nil
}

// apply drops the calling thread to d's user, with no capability in any
// set, and checks that it took. Preconditions: the thread is locked and
// is the one that execs; the process runs as root. parent is the
// supervisor's pid: a change of credentials clears the parent-death
// signal, which apply sets again, and a supervisor already gone by then
// is an error rather than a QEMU nobody watches.
func (d *credDrop) apply(parent int) error {
	// The bounding set first: dropping needs CAP_SETPCAP, which the
	// uid change takes away. It keeps a later exec of a file with
	// capabilities from regaining any.
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, os.NewSyscallError("prctl(PR_CAPBSET_DROP)", err))
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", err)
	}
	// Groups, then gid, then uid: each of the first two needs the
	// CAP_SETGID the last takes away. Raw calls: this thread only.
	if err := unix.Setgroups(d.Groups); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(d.GID), uintptr(d.GID), uintptr(d.GID)); e != 0 {
		return os.NewSyscallError("setresgid", e)
	}
	// With no uid left 0, the kernel clears the permitted, effective and
	// ambient sets (no SECBIT_KEEP_CAPS is set); not the inheritable one.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(d.UID), uintptr(d.UID), uintptr(d.UID)); e != 0 {
		return os.NewSyscallError("setresuid", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var none [2]unix.CapUserData
	if err := unix.Capset(&hdr, &none[0]); err != nil {
		return os.NewSyscallError("capset", err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl(PR_SET_PDEATHSIG)", err)
	}
	if os.Getppid() != parent {
		return errors.New("the supervisor ended while QEMU's credentials were being dropped")
	}
	if err := d.check(); err != nil {
		return err
	}
	for _, dir := range d.Reach {
		// access(2) checks with the real uid, now QEMU's.
		if err := unix.Access(dir, unix.X_OK); err != nil {
			return fmt.Errorf("-pidfile in %s: QEMU's user %s cannot search that directory (%v), and QEMU looks at its pidfile there itself: put the pidfile where %s can reach, or give --run-as root", dir, d.User, err, d.User)
		}
	}
	return nil
}

// check reads the thread's credentials back from the kernel.
func (d *credDrop) check() error {
	r, e, s := unix.Getresuid() // this thread's
	if r != d.UID || e != d.UID || s != d.UID {
		return fmt.Errorf("drop to uid %d: still uids %d %d %d", d.UID, r, e, s)
	}
	st, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return fmt.Errorf("read back credentials: %w", err)
	}
	return checkStatus(string(st), d)
}

// checkStatus checks a /proc status text against d: ids, groups and
// every capability set empty.
func checkStatus(st string, d *credDrop) error {
	uid, gid := strconv.Itoa(d.UID), strconv.Itoa(d.GID)
	want := map[string]string{
		"Uid": strings.Repeat(uid+" ", 4), "Gid": strings.Repeat(gid+" ", 4),
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
	}
	var groups []string
	for _, g := range d.Groups {
		groups = append(groups, strconv.Itoa(g))
	}
	want["Groups"] = strings.Join(groups, " ")
	seen := 0
	for _, l := range strings.Split(st, "\n") {
		k, v, ok := strings.Cut(l, ":")
		w, wanted := want[k]
		if !ok || !wanted {
			continue
		}
		seen++
		got := strings.Join(strings.Fields(v), " ")
		if k == "Groups" {
			f := strings.Fields(v)
			slices.SortFunc(f, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
			got = strings.Join(f, " ")
		}
		if got != strings.TrimSpace(w) {
			return fmt.Errorf("after the drop to %s: %s is %q, want %q", d.User, k, got, strings.TrimSpace(w))
		}
	}
	if seen != len(want) {
		return fmt.Errorf("after the drop to %s: status has %d of the %d lines checked", d.User, seen, len(want))
	}
	return nil
}

// lastCap is the highest capability number the kernel knows.
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("highest capability: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("highest capability: %w", err)
	}
	return n, nil
}

// execFD checks the loader's execveat: AT_EMPTY_PATH on an fd that is
// QEMU's binary, or QEMU's base name in an fd of its directory; either
// must reach the same file as the path kfv resolved.
func (s *session) execFD(c *seccompnotify.Call) error {
	fd := int(int32(c.Req.Args[0]))
	p := "/proc/" + strconv.Itoa(int(c.N.PID)) + "/fd/" + strconv.Itoa(fd)
	switch name := c.Req.PathArg; {
	case name == "" && c.Req.Args[4]&unix.AT_EMPTY_PATH != 0:
	case name == filepath.Base(s.qemuPath) && c.Req.Args[4] == 0:
		p += "/" + name
	default:
		return fmt.Errorf("execveat of %q in fd %d with flags %#x", name, fd, c.Req.Args[4])
	}
	got, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("fd %d: %w", fd, err)
	}
	want, err := os.Stat(s.qemuPath)
	if err != nil {
		return err
	}
	if !os.SameFile(got, want) {
		return fmt.Errorf("fd %d is not %s", fd, s.qemuPath)
	}
	return nil
}
