//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// QEMU's cgroup (the standalone model). When kfv-run's own cgroup v2
// directory is writable by kfv (delegated to its user, or kfv is root
// and the unified hierarchy is mounted), kfv makes a child cgroup for
// QEMU, kfv-VM-PID (PID is kfv-run's), and starts the loader in it
// (clone3 CLONE_INTO_CGROUP): QEMU is in it from its first instruction,
// alone. There kfv sets pids.max and memory.max when those controllers
// reach the child, and a pause is the cgroup freezer (outside_linux.go),
// which a SIGCONT from anyone does not lift. The cgroup outlives
// restarts and is removed when kfv-run is done with QEMU. The emulator
// model is left alone: libvirt places QEMU in its machine scope.

// CgroupMode is how hard kfv insists on QEMU's cgroup.
type CgroupMode string

const (
	// CgroupBestEffort makes QEMU's cgroup where the host allows it,
	// with the limits whose controllers reach it, and says in the
	// lifecycle event what is missing.
	CgroupBestEffort CgroupMode = "best-effort"
	// CgroupRequired refuses to start QEMU without its cgroup and both
	// limits.
	CgroupRequired CgroupMode = "required"
	// CgroupOff leaves QEMU in kfv-run's cgroup.
	CgroupOff CgroupMode = "off"
)

// ParseCgroupMode checks a cgroup setting; "" is best-effort.
func ParseCgroupMode(s string) (CgroupMode, error) {
	switch m := CgroupMode(s); m {
	case "":
		return CgroupBestEffort, nil
	case CgroupBestEffort, CgroupRequired, CgroupOff:
		return m, nil
	}
	return "", fmt.Errorf("cgroup %q: want required, best-effort or off", s)
}

// DefaultPidsMax is pids.max of QEMU's cgroup when nothing else is
// said: the kernel counts every task (thread) of the cgroup; QEMU has a
// thread per vCPU, up to 64 block workers and a few more, so this is
// far above a VM's needs while a fork or thread bomb stops there.
const DefaultPidsMax = 4096

// Cgroup is QEMU's cgroup setting.
type Cgroup struct {
	Mode CgroupMode
	// PidsMax is pids.max: 0 is DefaultPidsMax, -1 "max" (no limit).
	PidsMax int64
	// MemoryMax is memory.max in bytes; 0 is "max": the memory a VM
	// needs is more than its -m (QEMU's own heap, device buffers, the
	// page cache of its images, hotplug up to maxmem), and an
	// underestimate is an OOM kill of the guest, so kfv derives none.
	MemoryMax int64
}

func (c *Cgroup) pidsMax() string {
	switch {
	case c == nil || c.PidsMax == 0:
		return strconv.Itoa(DefaultPidsMax)
	case c.PidsMax < 0:
		return "max"
	}
	return strconv.FormatInt(c.PidsMax, 10)
}

func (c *Cgroup) memoryMax() string {
	if c == nil || c.MemoryMax <= 0 {
		return "max"
	}
	return strconv.FormatInt(c.MemoryMax, 10)
}

// vmCgroup is QEMU's cgroup once made.
type vmCgroup struct {
	dir  string   // its directory
	name string   // its path in the hierarchy, for the events
	fd   *os.File // the directory, for CLONE_INTO_CGROUP
	// detail says what it is and its limits, for the lifecycle event.
	detail string
}

// cgroupPrefix starts the name of every cgroup kfv makes under its own.
const cgroupPrefix = "kfv-"

// cgroupName is QEMU's cgroup's name for VM vm under kfv-run pid.
func cgroupName(vm string, pid int) string {
	b := []byte(vm)
	if len(b) == 0 {
		b = []byte("qemu")
	}
	if len(b) > 64 {
		b = b[:64]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' && i > 0) {
			b[i] = '_'
		}
	}
	return cgroupPrefix + string(b) + "-" + strconv.Itoa(pid)
}

// stalePID returns the kfv-run pid a cgroup name of kfv's ends in.
func stalePID(name string) (int, bool) {
	if !strings.HasPrefix(name, cgroupPrefix) {
		return 0, false
	}
	i := strings.LastIndexByte(name, '-')
	pid, err := strconv.Atoi(name[i+1:])
	if err != nil || pid <= 0 || i < len(cgroupPrefix) {
		return 0, false
	}
	return pid, true
}

// alive reports whether a process pid exists (EPERM: it does).
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// removeStale removes the empty cgroups kfv-*-PID under parent left by a
// kfv-run PID that is gone. A cgroup of a live pid is never touched, and
// rmdir removes only an empty one. It returns the names removed.
func removeStale(parent string, isAlive func(int) bool) []string {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		pid, ok := stalePID(e.Name())
		if !e.IsDir() || !ok || isAlive(pid) {
			continue
		}
		if unix.Rmdir(filepath.Join(parent, e.Name())) == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// readFields reads a cgroupfs file of space-separated words.
func readFields(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// limitControllers are the controllers of QEMU's limits.
var limitControllers = []string{"memory", "pids"}

// enableControllers turns on the controllers ctls that parent has
// (cgroup.controllers) in its cgroup.subtree_control, so that its
// children get them. A non-root cgroup with processes cannot give its
// children controllers (no internal processes): when kfv-run is the
// only process in parent, it moves itself into a leaf of its own,
// kfv-run-PID, first. It returns what it did ("" for nothing) and the
// controllers the children still lack, with why.
func enableControllers(parent string, self int, ctls []string) (moved string, missing map[string]string) {
	missing = map[string]string{}
	avail, _ := readFields(filepath.Join(parent, "cgroup.controllers"))
	on, _ := readFields(filepath.Join(parent, "cgroup.subtree_control"))
	var want []string
	for _, c := range ctls {
		switch {
		case slices.Contains(on, c):
		case !slices.Contains(avail, c):
			missing[c] = "the " + c + " controller is not delegated to kfv-run's cgroup"

		default:
			want = append(want, c)
		}
	}
	if len(want) == 0 {
		return "", missing
	}
	enable := func() error {
		var errs []error
		for _, c := range want {
			if err := writeCgroupFile(filepath.Join(parent, "cgroup.subtree_control"), "+"+c); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	err := enable()
	if err != nil && errors.Is(err, unix.EBUSY) {
		// No internal processes: kfv-run leaves for a leaf, if it is
		// alone in parent (another process there is not kfv's to move).
		procs, _ := readFields(filepath.Join(parent, "cgroup.procs"))
		if len(procs) == 1 && procs[0] == strconv.Itoa(self) {
			leaf := filepath.Join(parent, cgroupPrefix+"run-"+strconv.Itoa(self))
			if merr := os.Mkdir(leaf, 0o755); merr == nil || errors.Is(merr, os.ErrExist) {
				if merr = writeCgroupFile(filepath.Join(leaf, "cgroup.procs"), "0"); merr == nil {
					moved = "kfv-run moved itself into " + filepath.Base(leaf) + " (no internal processes)"
					err = enable()
				}
			}
		}
	}
	if err != nil {
		for _, c := range want {
			missing[c] = "cannot enable " + c + " in kfv-run's cgroup.subtree_control: " + err.Error()
		}
		return moved, missing
	}
	// What the kernel shows enabled now.
	on, _ = readFields(filepath.Join(parent, "cgroup.subtree_control"))
	for _, c := range want {
		if !slices.Contains(on, c) {
			missing[c] = c + " is not enabled in kfv-run's cgroup.subtree_control"

		}
	}
	return moved, missing
}

// writeCgroupFile writes one value to an existing cgroupfs file.
func writeCgroupFile(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	return errors.Join(err, f.Close())
}

// writeLimits sets pids.max and memory.max in QEMU's cgroup dir where
// the files exist (their controllers reach it). It returns the limits
// set ("pids.max 4096") and those it could not set, with why (why
// holds what is known of a controller the cgroup lacks).
func writeLimits(dir string, set *Cgroup, why map[string]string) (limits, missing []string) {
	for _, l := range []struct{ ctl, file, v string }{{"pids", "pids.max", set.pidsMax()}, {"memory", "memory.max", set.memoryMax()}} {
		p := filepath.Join(dir, l.file)
		if _, err := os.Stat(p); err != nil {
			w := why[l.ctl]
			if w == "" {
				w = "no " + l.ctl + " controller in QEMU's cgroup"
			}
			missing = append(missing, "no "+l.file+" ("+w+")")
			continue
		}
		if err := writeCgroupFile(p, l.v); err != nil {
			missing = append(missing, fmt.Sprintf("no %s (write %s: %v)", l.file, l.v, err))
			continue
		}
		limits = append(limits, l.file+" "+l.v)
	}
	return limits, missing
}

// ownV2Cgroup is kfv-run's cgroup v2 path ("/..."), from /proc/self/cgroup.
func ownV2Cgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	p, ok := parseCgroupV2(string(b))
	if !ok {
		return "", errors.New("no cgroup v2 path in /proc/self/cgroup")
	}
	return p, nil
}

// makeVMCgroup makes QEMU's cgroup for VM vm under kfv-run's cgroup own
// (its path in the hierarchy mounted at root), as set says. A nil
// cgroup comes with why there is none; with mode required, a cgroup
// without both limits is an error.
func makeVMCgroup(root, own, vm string, self int, set *Cgroup) (*vmCgroup, string, error) {
	mode := CgroupBestEffort
	if set != nil && set.Mode != "" {
		mode = set.Mode
	}
	none := func(why string) (*vmCgroup, string, error) {
		why = "QEMU has no cgroup of its own (" + why + "): it stays in kfv-run's, without kfv's pids and memory limits, and a pause is SIGSTOP"
		if mode == CgroupRequired {
			return nil, why, errors.New("cgroup = \"required\": " + why)
		}
		return nil, why, nil
	}
	if mode == CgroupOff {
		return nil, "cgroup = off: QEMU stays in kfv-run's cgroup, and a pause is SIGSTOP", nil
	}
	if root == "" {
		return none("no cgroup v2 hierarchy is mounted")
	}
	parent := filepath.Join(root, own)
	name := cgroupName(vm, self)
	var notes []string
	if gone := removeStale(parent, alive); len(gone) > 0 {
		notes = append(notes, fmt.Sprintf("removed %d empty cgroups of a kfv-run gone: %s", len(gone), strings.Join(gone, " ")))
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return none(fmt.Sprintf("kfv-run's cgroup %s is not writable by kfv: %v", own, err))
	}
	fail := func(why string) (*vmCgroup, string, error) {
		unix.Rmdir(dir)
		return none(why)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err != nil {
		return fail("no cgroup v2 freezer (Linux 5.2) in " + dir)
	}
	moved, why := enableControllers(parent, self, limitControllers)
	if moved != "" {
		notes = append(notes, moved)
	}
	limits, missing := writeLimits(dir, set, why)
	fd, err := os.Open(dir)
	if err != nil {
		return fail(fmt.Sprintf("open %s: %v", dir, err))
	}
	cgName := "/" + strings.Trim(filepath.Join(strings.Trim(own, "/"), name), "/")
	d := "QEMU's cgroup " + cgName
	if len(limits) > 0 {
		d += ": " + strings.Join(limits, ", ")
	}
	if len(missing) > 0 {
		d += "; " + strings.Join(missing, ", ")
	}
	d += "; a pause freezes it"
	if len(notes) > 0 {
		d += "; " + strings.Join(notes, "; ")
	}
	cg := &vmCgroup{dir: dir, name: cgName, fd: fd, detail: d}
	if mode == CgroupRequired && len(missing) > 0 {
		cg.remove()
		return nil, d, errors.New("cgroup = \"required\": " + d)
	}
	return cg, d, nil
}

// newVMCgroup is makeVMCgroup for this kfv-run.
func newVMCgroup(vm string, set *Cgroup) (*vmCgroup, string, error) {
	if set != nil && set.Mode == CgroupOff {
		return makeVMCgroup("", "", vm, os.Getpid(), set)
	}
	root := cgroupRoot()
	own := "/"
	if root != "" {
		var err error
		if own, err = ownV2Cgroup(); err != nil {
			return makeVMCgroup("", "", vm, os.Getpid(), set)
		}
	}
	return makeVMCgroup(root, own, vm, os.Getpid(), set)
}

// cgroupRemoveWait bounds the wait for a reaped QEMU to leave its
// cgroup.
const cgroupRemoveWait = 2 * time.Second

// remove removes QEMU's cgroup once QEMU is gone: rmdir succeeds when it
// is empty (the kernel takes a dead task out shortly after its reaping).
func (c *vmCgroup) remove() error {
	if c == nil {
		return nil
	}
	c.fd.Close()
	var err error
	for end := time.Now().Add(cgroupRemoveWait); ; time.Sleep(10 * time.Millisecond) {
		err = unix.Rmdir(c.dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(end) {
			break
		}
	}
	return fmt.Errorf("remove QEMU's cgroup %s: %w", c.name, os.NewSyscallError("rmdir", err))
}
