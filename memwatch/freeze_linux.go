package memwatch

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

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

// frozen is a QEMU whose every thread is in a ptrace stop. All calls on
// it must come from the OS thread that froze it (ptrace ties a tracee to
// the tracer thread).
type frozen struct {
	pid   int
	tasks map[int]*task
}

// freeze seizes every thread of pid and interrupts it (PTRACE_SEIZE
// does not stop the thread or send it a signal; PTRACE_INTERRUPT then
// stops it at its next return to user space, pulling it out of a
// blocking call, which the thread restarts when resumed). Threads that
// appear meanwhile are caught by listing /proc/PID/task again until a
// listing shows no thread not yet stopped. The caller must hold its OS
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
			if fz.tasks[tid] != nil {
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
		if len(fresh) == 0 {
			return fz, nil
		}
		for _, tid := range fresh {
			if err := fz.waitStop(fz.tasks[tid]); err != nil {
				return nil, errors.Join(err, fz.thaw())
			}
		}
	}
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
			if ws.TrapCause() == unix.PTRACE_EVENT_STOP {
				t.sig = 0 // interrupt or group stop
			} else {
				t.sig = int(ws.StopSignal()) // a signal on its way in
			}
			return nil
		}
	}
}

// thaw detaches from every thread; each resumes, receiving the signal
// it was stopped with, if any.
func (fz *frozen) thaw() error {
	var errs []error
	for tid, t := range fz.tasks {
		// PTRACE_DETACH's data is the signal to deliver.
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(tid), 0, uintptr(t.sig), 0, 0); e != 0 && e != unix.ESRCH {
			errs = append(errs, fmt.Errorf("resume thread %d: %w", tid, os.NewSyscallError("ptrace(PTRACE_DETACH)", e)))
		}
		for _, sig := range t.resend {
			if err := unix.Tgkill(fz.pid, tid, syscall.Signal(sig)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("resend signal %d to thread %d: %w", sig, tid, os.NewSyscallError("tgkill", err)))
			}
		}
	}
	fz.tasks = map[int]*task{}
	return errors.Join(errs...)
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
