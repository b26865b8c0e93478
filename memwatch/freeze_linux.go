package memwatch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// task is one thread of QEMU held in a ptrace stop.
type task struct {
	tid int
	// sig is the signal of the signal-delivery-stop the thread is in
	// (0 in an event stop): detaching with it delivers it.
	sig int
	// resend are signals taken out of delivery while the thread was
	// stepped; they are sent again with tgkill after it is detached.
	resend []int
}

// frozen is a QEMU whose every thread is stopped: the main thread by
// SIGSTOP, the others in a ptrace stop. All calls on it must come from
// the OS thread that froze it (ptrace ties a tracee to the tracer
// thread).
//
// The main thread is not traced because QEMU's parent would see its
// ptrace stops: when the tracer belongs to the parent's thread group (a
// standalone supervisor), the kernel reports a traced child's stops to
// any wait of that group, even one for WEXITED only, such as Go's
// os.Process.Wait, which would then return as if QEMU had ended, and the
// stop would never reach the tracer. Other threads are not children:
// a wait for QEMU's pid never matches them (a wait for any child, -1,
// would: the parent must reap QEMU by pid or pidfd).
type frozen struct {
	pid     int
	tasks   map[int]*task // traced threads: all but the main thread
	stopped bool          // the main thread was sent SIGSTOP
}

// freeze stops every thread of pid. The other threads are seized and
// interrupted (PTRACE_SEIZE does not stop the thread or send it a
// signal; PTRACE_INTERRUPT then stops it at its next return to user
// space, pulling it out of a blocking call, which it restarts when
// resumed); the main thread gets SIGSTOP, which stops the whole group
// once the traced threads are let go, until thaw sends SIGCONT. Threads
// that appear meanwhile are caught by listing /proc/PID/task again until
// a listing shows none not yet stopped. The caller must hold its OS
// thread locked until thaw.
func freeze(pid int) (*frozen, error) {
	fz := &frozen{pid: pid, tasks: map[int]*task{}}
	for round := 0; ; round++ {
		if round == 100 {
			return nil, errors.Join(fmt.Errorf("freeze %d: threads keep appearing", pid), fz.thaw())
		}
		tids, err := listTasks(pid)
		if err != nil {
			return nil, errors.Join(err, fz.thaw())
		}
		var fresh []int
		for _, tid := range tids {
			if tid == pid || fz.tasks[tid] != nil {
				continue
			}
			if err := unix.PtraceSeize(tid); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // exited
				}
				return nil, errors.Join(fmt.Errorf("freeze %d: %w", tid, os.NewSyscallError("ptrace(PTRACE_SEIZE)", err)), fz.thaw())
			}
			fz.tasks[tid] = &task{tid: tid}
			if err := unix.PtraceInterrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
				return nil, errors.Join(fmt.Errorf("freeze %d: %w", tid, os.NewSyscallError("ptrace(PTRACE_INTERRUPT)", err)), fz.thaw())
			}
			fresh = append(fresh, tid)
		}
		for _, tid := range fresh {
			if err := fz.waitStop(fz.tasks[tid]); err != nil {
				return nil, errors.Join(err, fz.thaw())
			}
		}
		if !fz.stopped {
			if err := unix.Tgkill(pid, pid, unix.SIGSTOP); err != nil {
				return nil, errors.Join(fmt.Errorf("freeze %d: %w", pid, os.NewSyscallError("tgkill(SIGSTOP)", err)), fz.thaw())
			}
			fz.stopped = true
			if err := waitStopped(pid); err != nil {
				return nil, errors.Join(err, fz.thaw())
			}
			continue // it may have started a thread meanwhile
		}
		if len(fresh) == 0 {
			return fz, nil
		}
	}
}

// waitStopped polls until pid's main thread is stopped (state T).
func waitStopped(pid int) error {
	for range 1000 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return fmt.Errorf("freeze %d: %w", pid, err)
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
			switch b[i+2] {
			case 'T', 't':
				return nil
			case 'Z', 'X':
				return fmt.Errorf("freeze %d: %w", pid, unix.ESRCH)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("freeze %d: main thread did not stop within a second", pid)
}

// waitStop waits until t is in a ptrace stop; a thread that exits is
// dropped.
func (fz *frozen) waitStop(t *task) error {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(t.tid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ECHILD) {
				delete(fz.tasks, t.tid)
				return nil
			}
			return fmt.Errorf("wait for thread %d: %w", t.tid, os.NewSyscallError("wait4", err))
		}
		switch {
		case ws.Exited() || ws.Signaled():
			delete(fz.tasks, t.tid)
			return nil
		case ws.Stopped():
			if eventStop(ws) {
				t.sig = 0 // interrupt or group stop
			} else {
				t.sig = int(ws.StopSignal()) // a signal on its way in
			}
			return nil
		}
	}
}

// thaw detaches from every traced thread, each with the signal it was
// stopped with, if any (the stop signal still pending holds them), then
// sends SIGCONT, which resumes them all.
func (fz *frozen) thaw() error {
	var errs []error
	for tid, t := range fz.tasks {
		// PTRACE_DETACH's data is the signal to deliver.
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(tid), 0, uintptr(t.sig), 0, 0); e != 0 && e != unix.ESRCH {
			errs = append(errs, fmt.Errorf("resume thread %d: %w", tid, os.NewSyscallError("ptrace(PTRACE_DETACH)", e)))
		}
	}
	if fz.stopped {
		if err := unix.Kill(fz.pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("resume %d: %w", fz.pid, os.NewSyscallError("kill(SIGCONT)", err)))
		}
		fz.stopped = false
	}
	for tid, t := range fz.tasks {
		for _, sig := range t.resend {
			if err := unix.Tgkill(fz.pid, tid, syscall.Signal(sig)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("resend signal %d to thread %d: %w", sig, tid, os.NewSyscallError("tgkill", err)))
			}
		}
	}
	fz.tasks = map[int]*task{}
	return errors.Join(errs...)
}

// eventStop says a ptrace stop is PTRACE_EVENT_STOP (an interrupt or a
// group stop, whatever its signal), not a signal on its way in.
// WaitStatus.TrapCause cannot say: it answers only for SIGTRAP.
func eventStop(ws unix.WaitStatus) bool {
	return uint32(ws)>>16 == unix.PTRACE_EVENT_STOP
}

func listTasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			return nil, fmt.Errorf("list threads of %d: %q: %w", pid, e.Name(), err)
		}
		tids = append(tids, tid)
	}
	return tids, nil
}
