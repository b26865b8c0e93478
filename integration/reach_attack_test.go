package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
)

// The reach payloads: a compromised QEMU reaching what belongs to another
// VM or another process of its user (docs/profiles.md, "QEMU reaches only
// its own VM's objects"). Each runs from a device thread (the block
// worker of the Linux guest's trigger write, or the vCPU thread of the
// raw trigger guest for the KVM ones) and from QEMU's main loop, handed
// over by that thread: the main loop holds the widest rights of QEMU's
// threads, and a hijacked main-loop callback is the usual shape of an
// escape. Bare, the effect shows; under kfv it does not, and the payload's
// thread has its deny.

// reachAttack is one payload and the threads it runs from.
type reachAttack struct {
	attack
	// where: "device", "main" or both (nil).
	where []string
}

// neighborGone is the effect of the payloads that kill a neighbour.
func neighborGone(n *proc) effectFunc {
	return func() (int, int, string) {
		dead := waitFor(2*time.Second, n.exited)
		return one(dead, fmt.Sprintf("neighbour %d dead=%t (%v)", n.cmd.Process.Pid, dead, n.err))
	}
}

var reachAttacks = []reachAttack{
	{attack: attack{
		name: "sigio-kill",
		// SIGKILL without a kill call: F_SETOWN, F_SETSIG, O_ASYNC.
		denied: [][]string{{"fcntl"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			return strconv.Itoa(n.cmd.Process.Pid), neighborGone(n)
		},
	}},
	{attack: attack{
		// The same with the owner set by F_SETOWN_EX (F_OWNER_PID).
		name:    "sigio-kill-ex",
		payload: "sigio-kill",
		denied:  [][]string{{"fcntl"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			return "ex:" + strconv.Itoa(n.cmd.Process.Pid), neighborGone(n)
		},
	}, where: []string{"device"}},
	{attack: attack{
		name:   "sched-pin",
		denied: [][]string{{"sched_setaffinity"}},
		need: func() string {
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				return "sched_getaffinity: " + err.Error()
			}
			if set.Count() < 2 {
				return fmt.Sprintf("this process may run on %d CPU: pinning a neighbour to one changes nothing", set.Count())
			}
			return ""
		},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			pid := n.cmd.Process.Pid
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(pid, &set); err != nil {
				t.Fatalf("the neighbour's affinity: %v", err)
			}
			cpu := -1
			for i := 0; i < 1024; i++ {
				if set.IsSet(i) {
					cpu = i // the last CPU it may use
				}
			}
			before := cpusAllowed(t, pid)
			return fmt.Sprintf("%d:%d", pid, cpu), func() (int, int, string) {
				now := cpusAllowed(t, pid)
				return one(now == strconv.Itoa(cpu), fmt.Sprintf("neighbour %d Cpus_allowed_list %s, was %s (payload pins to %d)", pid, now, before, cpu))
			}
		},
	}},
	{attack: attack{
		name:   "renice",
		denied: [][]string{{"setpriority"}, {"ioprio_set"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			pid := n.cmd.Process.Pid
			return strconv.Itoa(pid), func() (int, int, string) {
				seen := 0
				nice := procStat(t, pid)[16]
				if nice == "19" {
					seen++
				}
				prio, _, e := syscall.Syscall(syscall.SYS_IOPRIO_GET, 1, uintptr(pid), 0) // IOPRIO_WHO_PROCESS
				if e == 0 && prio>>13 == 3 {                                              // IOPRIO_CLASS_IDLE
					seen++
				}
				return seen, 2, fmt.Sprintf("neighbour %d nice=%s ioprio=0x%x (%v)", pid, nice, prio, e)
			}
		},
	}},
	{attack: attack{
		name:   "limit-sched",
		denied: [][]string{{"prlimit64"}, {"sched_setscheduler"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			pid := n.cmd.Process.Pid
			return strconv.Itoa(pid), func() (int, int, string) {
				seen := 0
				limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
				if err != nil {
					t.Fatalf("the neighbour's limits: %v", err)
				}
				nofile := regexp.MustCompile(`(?m)^Max open files\s+(\S+)\s+(\S+)`).FindSubmatch(limits)
				if nofile != nil && string(nofile[1]) == "16" && string(nofile[2]) == "16" {
					seen++
				}
				policy := procStat(t, pid)[38] // field 41, after the name
				if policy == "5" {             // SCHED_IDLE
					seen++
				}
				return seen, 2, fmt.Sprintf("neighbour %d open files %q, policy %s", pid, nofile, policy)
			}
		},
	}},
	{attack: attack{
		// A memory slot over anonymous memory that is not guest RAM:
		// a page of the implant's .bss, as QEMU's own .bss (function
		// tables), its heap and its stacks are. The guest reads it.
		name:   "kvm-memslot-bss",
		port:   true,
		need:   kvmProblem,
		denied: [][]string{{"ioctl"}},
		setup:  kvmMemslotSetup,
	}},
	{attack: attack{
		name:   "kvm-second-vm",
		port:   true,
		need:   kvmProblem,
		denied: [][]string{{"ioctl"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", func() (int, int, string) {
				fds := qemuFDs(t, r.qemuPID, "anon_inode:kvm-vm")
				return one(len(fds) > 1, fmt.Sprintf("QEMU's VM fds: %v (QEMU's own is one)", fds))
			}
		},
	}},
	{attack: attack{
		name:   "kvm-extra-vcpu",
		port:   true,
		qargs:  []string{"-smp", "1,maxcpus=4"},
		need:   kvmProblem,
		denied: [][]string{{"ioctl"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			// One vCPU booted (id 0) of four: KVM refuses ids at or above
			// the bound QEMU gave it from maxcpus (with -smp 1 alone, id 1
			// is EINVAL bare), so the payload takes an id a hot-plug
			// would, with no hot-plug: a vCPU beyond the command line's
			// count that no monitor command asked for.
			const id = 3
			return strconv.Itoa(id), func() (int, int, string) {
				fds := qemuFDs(t, r.qemuPID, "anon_inode:kvm-vcpu:"+strconv.Itoa(id))
				return one(len(fds) > 0, fmt.Sprintf("QEMU's fds of vCPU %d: %v", id, fds))
			}
		},
	}},
	{attack: attack{
		name: "seccomp-listener",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", func() (int, int, string) {
				m := regexp.MustCompile(`listener fd=(\d+)`).FindStringSubmatch(r.report.Detail)
				if m == nil {
					return 0, 1, "implant: " + r.report.Detail
				}
				l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", r.qemuPID, m[1]))
				return one(err == nil && l == "anon_inode:seccomp notify", fmt.Sprintf("QEMU's fd %s -> %q (%v)", m[1], l, err))
			}
		},
		// The built-in profile inspects seccomp() with any flag QEMU's
		// -sandbox does not use (rule no-seccomp-listener, EINVAL): a
		// deny event by the payload's thread.
		denied: [][]string{{"seccomp"}},
		// While kfv's listener exists the kernel itself refuses a second
		// one with EBUSY, which proves nothing of kfv (that refusal ends
		// with the supervisor): the errno must be kfv's.
		check: func(t *testing.T, r *attackRun, evs []event.Event) {
			m := regexp.MustCompile(`errno=(\S+)`).FindStringSubmatch(r.report.Detail)
			switch {
			case m == nil:
				t.Errorf("implant: %s: no errno", r.report.Detail)
			case m[1] == "EBUSY":
				t.Errorf("seccomp(NEW_LISTENER) failed with EBUSY: the kernel refused a second listener beside kfv's, kfv let the call through")
			}
		},
	}},
	{attack: attack{
		name:   "raw-inet",
		denied: [][]string{{"socket"}},
		need: func() string {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
			if err != nil {
				return "socket(AF_INET, SOCK_RAW) fails for this user here (needs CAP_NET_RAW): " + err.Error()
			}
			syscall.Close(fd)
			return ""
		},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", func() (int, int, string) {
				n, what := procNetSockets(t, r.qemuPID, "/proc/net/raw", 9)
				return one(n > 0, what)
			}
		},
	}},
	{attack: attack{
		// Another VM's RAM file (memory-backend-file or -shm under
		// /dev/shm), which this VM's command line does not name.
		name:    "other-shm",
		payload: "other-disk",
		denied:  [][]string{{"openat", "open", "openat2"}},
		need: func() string {
			if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
				return fmt.Sprintf("no /dev/shm here (%v)", err)
			}
			return ""
		},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			other := "/dev/shm/kfv-other-vm-" + randomHex(t, 6)
			if err := os.WriteFile(other, make([]byte, 64<<10), 0o600); err != nil {
				t.Fatalf("write the other VM's RAM file: %v", err)
			}
			t.Cleanup(func() { os.Remove(other) })
			return other, func() (int, int, string) {
				b, err := os.ReadFile(other)
				if err != nil {
					t.Fatalf("read the other VM's RAM file: %v", err)
				}
				head := b[:len(implantOtherDiskMark)]
				return one(string(head) == implantOtherDiskMark, fmt.Sprintf("%s starts with %q", other, head))
			}
		},
	}},
	{attack: attack{
		// Another VM's serial console: a pty whose master another
		// QEMU (here the test) holds.
		name:   "other-pty",
		denied: [][]string{{"openat", "open", "openat2"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			pts, got := otherPty(t)
			return pts, func() (int, int, string) {
				ok := waitFor(2*time.Second, func() bool { return strings.Contains(got.String(), "kfv-implant other-pty") })
				return one(ok, fmt.Sprintf("the master of %s read %q", pts, got.String()))
			}
		},
	}},
	{attack: attack{
		name:   "tun-create",
		denied: [][]string{{"openat", "open", "openat2", "ioctl"}},
		need: func() string {
			if os.Geteuid() != 0 {
				return "TUNSETIFF of a new link needs root"
			}
			f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
			if err != nil {
				return "open /dev/net/tun: " + err.Error()
			}
			f.Close()
			return ""
		},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			ifname := "kfvevil" + randomHex(t, 4)
			// The link lives while QEMU holds its fd; if it is left
			// anyway, remove it.
			t.Cleanup(func() {
				if _, err := os.Stat("/sys/class/net/" + ifname); err == nil {
					if out, err := exec.Command("ip", "link", "delete", ifname).CombinedOutput(); err != nil {
						t.Errorf("remove link %s: %v %s", ifname, err, out)
					}
				}
			})
			return ifname, func() (int, int, string) {
				_, err := os.Stat("/sys/class/net/" + ifname)
				return one(err == nil, fmt.Sprintf("/sys/class/net/%s: stat err=%v", ifname, err))
			}
		},
	}},
	{attack: attack{
		// listen on a socket never bound: the kernel binds a port of
		// its choice, on every address.
		name:   "listen-unbound",
		denied: [][]string{{"socket", "listen"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", func() (int, int, string) {
				m := regexp.MustCompile(`port=(\d+)`).FindStringSubmatch(r.report.Detail)
				if m == nil {
					return 0, 1, "no port in the implant's report: " + r.report.Detail
				}
				addr := "127.0.0.1:" + m[1]
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					c.Close()
				}
				return one(err == nil, fmt.Sprintf("dial %s: err=%v", addr, err))
			}
		},
	}},
	{attack: attack{
		// bind-shell from the main loop, which binds the command line's
		// listeners: an address and port the command line does not name.
		name:    "bind-other",
		payload: "bind-shell",
		denied:  [][]string{{"socket", "bind", "listen"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			addr := freeAddr(t)
			return addr, func() (int, int, string) {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					c.Close()
				}
				return one(err == nil, fmt.Sprintf("dial %s: err=%v", addr, err))
			}
		},
	}, where: []string{"main"}},
	{attack: attack{
		// The emulator model: QEMU kills its detached supervisor, found
		// as the peer of kfv's private monitor socket, by SIGIO and by
		// kill. Bare there is no supervisor: the same payload kills a
		// neighbour by its pid, which shows both routes work.
		name:     "supervisor-kill",
		emulator: true,
		denied:   [][]string{{"fcntl"}, {"kill"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			if !r.kfv {
				n := startNeighbor(t)
				return strconv.Itoa(n.cmd.Process.Pid), neighborGone(n)
			}
			// The manager stays connected to its monitor, as libvirt
			// does: the supervisor is the client of the private socket
			// QEMU serves it on.
			// QEMU serves one client at a time: the hold ends before
			// the test quits QEMU over the same monitor.
			release := holdMonitor(t, filepath.Join(r.dir, "qmp.sock"))
			return "peer", func() (int, int, string) {
				time.Sleep(200 * time.Millisecond)
				release()
				gone := !running(r.spid)
				return one(gone, fmt.Sprintf("supervisor %d gone=%t", r.spid, gone))
			}
		},
		check: func(t *testing.T, r *attackRun, evs []event.Event) {
			if !strings.Contains(r.report.Detail, fmt.Sprintf("target=%d ", r.spid)) {
				t.Errorf("the payload did not aim at the supervisor %d: %s", r.spid, r.report.Detail)
			}
		},
	}},
}

// holdMonitor connects to the QMP monitor at sock once it is there and
// stays connected until the returned function (or the test's end)
// releases it.
func holdMonitor(t *testing.T, sock string) (release func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := net.Dial("unix", sock)
			if err == nil {
				<-stop
				c.Close()
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	release = sync.OnceFunc(func() {
		close(stop)
		<-done
	})
	t.Cleanup(release)
	return release
}

// TestReachAttack runs the reach payloads, bare and under kfv, each from
// a device thread and from the main loop. The cases run in parallel: each
// boots its own VMs, bare then under kfv.
func TestReachAttack(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU twice per payload and thread: skipped with -short")
	}
	for _, c := range reachAttacks {
		where := c.where
		if where == nil {
			where = []string{"device", "main"}
		}
		for _, w := range where {
			a := c.attack
			a.main = w == "main"
			t.Run(a.name+"/"+w, func(t *testing.T) {
				t.Parallel()
				if a.need != nil {
					if why := a.need(); why != "" {
						t.Skipf("the bare run cannot demonstrate %s: %s", a.name, why)
					}
				}
				t.Run("bare", func(t *testing.T) { runAttack(t, qemu, a, false) })
				t.Run("kfv", func(t *testing.T) { runAttack(t, qemu, a, true) })
			})
		}
	}
}

// cpusAllowed is pid's Cpus_allowed_list.
func cpusAllowed(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	m := regexp.MustCompile(`(?m)^Cpus_allowed_list:\s*(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no Cpus_allowed_list for %d", pid)
	}
	return string(m[1])
}

// qemuFDs lists pid's fds whose link starts with prefix.
func qemuFDs(t *testing.T, pid int, prefix string) []string {
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	if err != nil {
		t.Fatalf("list fds: %v", err)
	}
	var found []string
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, prefix) {
			found = append(found, filepath.Base(fd)+"="+l)
		}
	}
	return found
}

// procNetSockets counts pid's sockets listed in a /proc/net table whose
// inode is field inodeField.
func procNetSockets(t *testing.T, pid int, table string, inodeField int) (int, string) {
	b, err := os.ReadFile(table)
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > inodeField {
			inodes[f[inodeField]] = true
		}
	}
	var found []string
	for _, s := range qemuFDs(t, pid, "socket:[") {
		_, l, _ := strings.Cut(s, "=")
		if inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			found = append(found, s)
		}
	}
	return len(found), fmt.Sprintf("QEMU %d sockets in %s: %v", pid, table, found)
}

// otherPty opens a pty pair, as another VM's serial console, and returns
// the slave's path and what its master reads.
func otherPty(t *testing.T) (string, *lockedBuffer) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("the pty's number: %v", err)
	}
	pts := fmt.Sprintf("/dev/pts/%d", n)
	// The other VM's side stays open, so that the master reads what
	// the payload wrote even after the payload closed its fd.
	slave, err := os.OpenFile(pts, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", pts, err)
	}
	t.Cleanup(func() { slave.Close() })
	got := &lockedBuffer{}
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := master.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return pts, got
}

// running says whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
