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
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"kfv/seccompnotify"
)

// QEMU held still around the calls kfv decides and lets continue. kfv
// cannot perform KVM_SET_USER_MEMORY_REGION itself (KVM refuses an ioctl
// from another mm), so it answers an allowed one CONTINUE, and the kernel
// copies the struct from QEMU's memory again. After start-up, another
// QEMU thread rewriting userspace_addr between kfv's read and the
// kernel's copy would give the guest a slot over QEMU's own memory. The
// same holds for mmap of an fd and mprotect with PROT_EXEC, decided on
// the fd's target and the mapping under the range (a dup2 or a MAP_FIXED
// in between: foreign code executable). So, for such a call
// (seccompnotify's holdWanted), every other thread of QEMU is stopped
// first, with the cgroup freezer of QEMU's own cgroup, and each is seen
// stopped (/proc/PID/task/TID: sleeping in the freezer's trap, or in a
// ptrace or group stop, or dead) before the struct is read; the call is
// decided and answered; then the caller, which the freezer catches on its
// way back to user mode, is seen stopped too (the ioctl has run, the copy
// long made), and only then is the cgroup thawed. The caller's seccomp
// wait is killable only (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV), so the
// freeze does not undo the received call.
//
// The hold runs under the outside stop's lock: a pause (which freezes the
// same cgroup) waits for it, and a hold taken while QEMU is paused leaves
// it frozen. It ends on every path: the answer (Gate.Answered), the
// caller gone before one (a watchdog on the notification's id), or a
// bound.

// holdConfirm bounds the wait for the other threads to be seen stopped;
// a thread in the kernel stops when its call returns. A thread in an
// uninterruptible wait counts as stopped when its call cannot change what
// kfv decides (stillCall): the long waits of a QEMU on slow storage (a
// write, an fsync, a fault on a file page) do not hold a decision up.
// Past the bound the call is refused.
const holdConfirm = 2 * time.Second

// holdComplete bounds the wait for the caller to be seen stopped after
// its call continued; past it the hold ends all the same. What the
// kernel acts on was taken at the call's start for a memory slot (the
// struct copied) and an mmap (the fd looked up); an mprotect finds its
// mappings under the mmap lock, so one still waiting for that lock when
// the others are thawed is ahead of them in the lock's queue, but not
// proof against a writer that takes the lock the moment it is released
// (docs/security.md).
const holdComplete = time.Second

// holdLock bounds the wait for the outside stop's lock (a pause or a
// memwatch scrub in progress); past it the call is refused.
const holdLock = 100 * time.Millisecond

// lockWithin takes mu within bound.
func lockWithin(mu *sync.Mutex, bound time.Duration) bool {
	end := time.Now().Add(bound)
	for !mu.TryLock() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(100 * time.Microsecond)
	}
	return true
}

// memHold holds QEMU still around the calls kfv continues after deciding
// on what another thread could change.
type memHold struct {
	s *session

	mu  sync.Mutex // guards cur
	cur *slotHold

	cgMu  sync.Mutex
	cgPID int
	cgDir string // QEMU's cgroup, found once per process
}

// slotHold is one hold in force.
type slotHold struct {
	id       uint64
	pid, tid int
	mem      [2]uint64 // the caller's memory the decision reads
	dir      string    // the cgroup frozen
	paused   bool      // QEMU was paused by a reaction already: left frozen
	start    time.Time
	stopped  int // threads seen stopped
	inCall   int // of them, in an uninterruptible call that changes nothing decided
	// confirmed is how long the others took to be seen stopped.
	confirmed time.Duration
	// decided is how long until the answer, from the start.
	decided time.Duration
	ended   chan struct{}
	once    sync.Once
	detail  string
}

// cgroupOf is the cgroup whose freezer stops QEMU process pid and nothing
// else: the one kfv made, or (emulator model) the highest cgroup QEMU
// has alone; "" when there is none.
func (h *memHold) cgroupOf(pid int) string {
	h.cgMu.Lock()
	defer h.cgMu.Unlock()
	if h.cgPID == pid {
		return h.cgDir
	}
	dir := ""
	if h.s.cgroup != nil {
		dir = h.s.cgroup.dir
	} else {
		dir, _ = qemuCgroup(pid)
	}
	h.cgPID, h.cgDir = pid, dir
	return dir
}

// hold is Decoder.HoldOthers: it freezes QEMU's cgroup and waits until
// every thread of pid but tid is seen stopped.
func (h *memHold) hold(id uint64, pid, tid int, mem [2]uint64) error {
	dir := h.cgroupOf(pid)
	if dir == "" {
		// Nothing can stop QEMU from outside without touching it: the
		// slot is decided as before (docs/security.md says so).
		return nil
	}
	o := &h.s.plane.out
	// Released by end, on whichever path ends the hold. Not a plain
	// Lock: a memwatch scrub holds it while the loop answers the calls
	// it injects, which this loop thread would then never do.
	if !lockWithin(&o.mu, holdLock) {
		return fmt.Errorf("QEMU is being paused or scrubbed (waited %v)", holdLock)
	}
	c := &slotHold{id: id, pid: pid, tid: tid, mem: mem, dir: dir, start: time.Now(), ended: make(chan struct{})}
	c.paused = o.paused && o.cgroup == dir
	if !c.paused {
		if err := writeCgroupFile(filepath.Join(dir, "cgroup.freeze"), "1"); err != nil {
			o.mu.Unlock()
			return fmt.Errorf("freeze %s: %w", dir, err)
		}
	}
	st, err := waitStopped(pid, tid, holdConfirm, mem)
	c.stopped, c.inCall, c.confirmed = st.stopped, st.inCall, time.Since(c.start)
	if err != nil {
		h.thaw(c)
		o.mu.Unlock()
		return err
	}
	h.mu.Lock()
	h.cur = c
	h.mu.Unlock()
	go h.watch(c)
	return nil
}

// watch ends c if its caller goes away unanswered, and after a bound in
// any case: QEMU is never left frozen by a hold.
func (h *memHold) watch(c *slotHold) {
	end := time.Now().Add(holdConfirm + holdComplete + time.Second)
	for {
		select {
		case <-c.ended:
			return
		case <-time.After(2 * time.Millisecond):
		}
		gone := h.s.listener.IDValid(c.id) != nil && !threadAlive(c.pid, c.tid)
		if gone || time.Now().After(end) {
			why := "the caller went away before its answer"
			if !gone {
				why = "no answer within " + (end.Sub(c.start)).String()
			}
			h.end(c, why)
			return
		}
	}
}

// answered is Gate.Answered: the hold of call id ends once the call has
// run (its caller seen stopped by the freezer on its way back) or at once
// when it did not continue.
func (h *memHold) answered(id uint64, continued bool) string {
	h.mu.Lock()
	c := h.cur
	h.mu.Unlock()
	if c == nil || c.id != id {
		return ""
	}
	why := "refused"
	c.decided = time.Since(c.start)
	if continued {
		t0 := time.Now()
		// The caller itself must be seen in the freezer's trap: only
		// then has its call returned.
		_, err := waitStopped(c.pid, -1, holdComplete, c.mem, c.tid)
		why = "the call ran, its caller seen stopped " + time.Since(t0).Round(time.Microsecond).String() + " after the answer"
		if err != nil {
			why = "the call continued; " + err.Error()
		}
	}
	h.end(c, why)
	return c.detail
}

// end thaws what c froze, once, and lets go of the outside stop's lock.
func (h *memHold) end(c *slotHold, why string) {
	c.once.Do(func() {
		h.mu.Lock()
		if h.cur == c {
			h.cur = nil
		}
		h.mu.Unlock()
		t0 := time.Now()
		err := h.thaw(c)
		took := time.Since(c.start)
		why += ", thawed in " + time.Since(t0).Round(time.Microsecond).String()
		c.detail = fmt.Sprintf("QEMU's other %d threads held still (cgroup freezer) for %v, seen stopped after %v, answered after %v: %s", c.stopped, took.Round(time.Microsecond), c.confirmed.Round(time.Microsecond), c.decided.Round(time.Microsecond), why)
		if c.inCall > 0 {
			c.detail += fmt.Sprintf("; %d of them in an uninterruptible call that changes nothing kfv decided", c.inCall)
		}
		if c.paused {
			c.detail += "; QEMU stays paused"
		}
		if err != nil {
			c.detail += "; " + err.Error()
		}
		close(c.ended)
		h.s.plane.out.mu.Unlock()
	})
}

// thaw undoes c's freeze, unless a reaction's pause holds the cgroup.
func (h *memHold) thaw(c *slotHold) error {
	if c.paused || h.s.plane.out.paused {
		return nil
	}
	if err := writeCgroupFile(filepath.Join(c.dir, "cgroup.freeze"), "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("thaw %s: %w", c.dir, err)
	}
	return nil
}

// stopCount is what waitStopped saw: threads stopped, and of them those
// counted still in an uninterruptible call (stillCall).
type stopCount struct{ stopped, inCall int }

// waitStopped waits until every thread of pid but skip is seen stopped,
// within bound. A thread is stopped when it runs no user code and cannot
// until kfv says: asleep in the freezer's trap (wchan do_freezer_trap, or
// get_signal where that is inlined), in a ptrace or group stop, or dead;
// or in an uninterruptible wait (D: the freezer catches it on its way
// back to user mode) in a call that writes none of mem and changes no
// mapping or fd (stillCall). Threads named in strict count only in the
// first sense.
func waitStopped(pid, skip int, bound time.Duration, mem [2]uint64, strict ...int) (stopCount, error) {
	task := "/proc/" + strconv.Itoa(pid) + "/task"
	end := time.Now().Add(bound)
	for pause := 10 * time.Microsecond; ; pause = min(2*pause, 100*time.Microsecond) {
		ents, err := os.ReadDir(task)
		if err != nil {
			return stopCount{}, nil // QEMU is gone: nothing runs
		}
		var n stopCount
		running := ""
		for _, e := range ents {
			t, err := strconv.Atoi(e.Name())
			if err != nil || t == skip {
				continue
			}
			switch threadStopped(task+"/"+e.Name(), mem, slices.Contains(strict, t)) {
			case stopTrapped:
				n.stopped++
			case stopInCall:
				n.stopped++
				n.inCall++
			default:
				if running == "" {
					running = e.Name()
				}
			}
		}
		if running == "" {
			return n, nil
		}
		if time.Now().After(end) {
			return n, fmt.Errorf("thread %s of QEMU %d not stopped after %v", running, pid, bound)
		}
		// nanosleep itself: Go's timers wake about a millisecond late
		// when nothing else is due, longer than the whole wait.
		ts := unix.NsecToTimespec(pause.Nanoseconds())
		unix.Nanosleep(&ts, nil)
	}
}

// How a thread was seen.
const (
	stopRunning = iota // it may run user code before kfv thaws it
	stopTrapped        // in the freezer's trap, a stop, or gone
	stopInCall         // in an uninterruptible call that changes nothing decided
)

// threadStopped reads one thread's state (dir: /proc/PID/task/TID); a
// strict thread counts only as trapped.
func threadStopped(dir string, mem [2]uint64, strict bool) int {
	st, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return stopTrapped // gone
	}
	i := strings.LastIndexByte(string(st), ')')
	if i < 0 || i+2 >= len(st) {
		return stopRunning
	}
	switch st[i+2] {
	case 'Z', 'X', 'x', 't', 'T':
		return stopTrapped
	case 'S':
		w, err := os.ReadFile(dir + "/wchan")
		if err != nil {
			return stopTrapped // gone
		}
		switch string(w) {
		case "do_freezer_trap", "get_signal":
			return stopTrapped
		}
	case 'D':
		if strict {
			break
		}
		b, err := os.ReadFile(dir + "/syscall")
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return stopTrapped // gone
			}
			return stopRunning
		}
		if stillCall(string(b), mem) {
			return stopInCall
		}
	}
	return stopRunning
}

// stillCall reports whether a thread in an uninterruptible wait, whose
// /proc/PID/task/TID/syscall reads sys, is as good as stopped: the
// freezer, whose trap is already pending for it, catches it on its way
// back to user mode, and until then it can change only what its call
// writes. That is nothing kfv decides on for a fault on a page (-1: not
// in a call; the faulting instruction runs again only after the thaw),
// a write or a sync (they read QEMU's memory, write none of it, and map
// and open nothing), or a read into one buffer outside mem. The
// registers in the file are those of the call's entry, which the thread
// cannot change any more. A vectored read is not: the kernel copied its
// vector at the call's start, and what the vector in memory says now
// proves nothing.
func stillCall(sys string, mem [2]uint64) bool {
	f := strings.Fields(sys)
	if len(f) == 0 {
		return false // "running": on a CPU, in the kernel or not
	}
	nr, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return false
	}
	if nr == -1 {
		return true
	}
	switch nr {
	case unix.SYS_WRITE, unix.SYS_PWRITE64, unix.SYS_WRITEV, unix.SYS_PWRITEV, unix.SYS_PWRITEV2,
		unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_SYNC_FILE_RANGE, unix.SYS_SYNCFS, unix.SYS_FALLOCATE:
		return true
	case unix.SYS_READ, unix.SYS_PREAD64:
		if len(f) < 4 {
			return false
		}
		buf, err1 := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64)
		n, err2 := strconv.ParseUint(strings.TrimPrefix(f[3], "0x"), 16, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		end := buf + n
		if end < buf {
			return false // wraps: could be anywhere
		}
		return end <= mem[0] || buf >= mem[1]
	}
	return false
}

// threadAlive reports whether thread tid of pid exists.
func threadAlive(pid, tid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid))
	return err == nil
}

// ensure the hooks' types match.
var (
	_ = (&seccompnotify.Decoder{}).HoldOthers
	_ = (&seccompnotify.Gate{}).Answered
)
