//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/policy"
	"kfv/profiles"
	"kfv/seccompnotify"
)

// QEMU's -daemonize under kfv-run (the standalone model). QEMU forks, its
// child calls setsid and forks the daemon, and the process started exits
// once the daemon says it is ready: its caller (Proxmox's qm) waits for
// that exit and reads the pidfile. Under kfv the process the caller
// waits for is kfv-run's foreground process; the supervisor must outlive
// it and be an ancestor of the daemon, to reap it. So, as in the emulator
// model, the supervisor runs detached from the process the caller waits
// on:
//
//	caller ─fork/exec─► kfv-run ARGS -- qemu ... -daemonize        (the foreground: waits, then exits as QEMU's first process did)
//	  └─fork, setsid, exec─► kfv-run ARGS -- qemu ...                (the supervisor, PR_SET_CHILD_SUBREAPER)
//	      └─ loader ─exec─► qemu ─fork─► qemu ─setsid, fork─► qemu -daemonize (the daemon, reparented to the supervisor)
//
// The supervisor tells the foreground QEMU's first exit status over a
// pipe (detachedStatusEnv names its fd), then lets go of the caller's
// stdio and goes on supervising the daemon.

// detachedStatusEnv, in the supervisor's environment (never QEMU's),
// names the fd of the pipe to the foreground process.
const detachedStatusEnv = "KFV_DETACHED_STATUS_FD"

// detachedStatus is the supervisor's end of that pipe, nil in any other
// process.
var detachedStatus *os.File

func init() {
	v, ok := os.LookupEnv(detachedStatusEnv)
	if !ok {
		return
	}
	os.Unsetenv(detachedStatusEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd <= 2 || !isOpen(fd) {
		return
	}
	unix.CloseOnExec(fd)
	inheritedFDs = without(inheritedFDs, []int{fd})
	detachedStatus = os.NewFile(uintptr(fd), "kfv-detached-status")
}

// IsDetached reports whether this process is the detached supervisor of
// a QEMU started with -daemonize.
func IsDetached() bool { return detachedStatus != nil }

// Detached tells the foreground process that QEMU's first process exited
// with status, so that it exits with it, and closes the pipe. Only the
// first call does anything.
func Detached(status int) error {
	f := detachedStatus
	if f == nil {
		return nil
	}
	detachedStatus = nil
	_, err := f.WriteString(strconv.Itoa(status) + "\n")
	return errors.Join(err, f.Close())
}

// RunDetached is the foreground process: it starts this program again,
// with the same arguments, as the detached supervisor (in a session of
// its own, with every fd this process has), forwards it the signals
// kfv-run forwards to QEMU, and returns the exit status of QEMU's first
// process once the supervisor reports it, or the supervisor's own if it
// exits without a report (it failed before QEMU ran, and said why on
// stderr).
func RunDetached() (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return exitLaunch, launchErr(exitLaunch, "create supervisor status pipe: %w", err)
	}
	defer r.Close()
	files, first := childFiles(inheritedFDs, w.Fd())
	env := append(os.Environ(), detachedStatusEnv+"="+strconv.Itoa(first))
	sigCh := make(chan os.Signal, 16)
	signal.Notify(sigCh, forwarded...)
	defer signal.Stop(sigCh)
	pid, err := syscall.ForkExec("/proc/self/exe", os.Args, &syscall.ProcAttr{Env: env, Files: files, Sys: &syscall.SysProcAttr{Setsid: true}})
	w.Close()
	if err != nil {
		return exitLaunch, launchErr(exitLaunch, "start the supervisor: %w", err)
	}
	report := make(chan string, 1)
	go func() {
		b := make([]byte, 32)
		n, _ := r.Read(b)
		report <- string(b[:n])
	}()
	for {
		select {
		case sig := <-sigCh:
			unix.Kill(pid, sig.(syscall.Signal))
		case s := <-report:
			if code, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				return code, nil
			}
			// No report: the supervisor ended before QEMU's first
			// process did.
			var ws unix.WaitStatus
			for {
				_, err := unix.Wait4(pid, &ws, 0, nil)
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			switch {
			case ws.Exited():
				return ws.ExitStatus(), nil
			case ws.Signaled():
				return 128 + int(ws.Signal()), fmt.Errorf("the supervisor died of %s before QEMU was ready", unix.SignalName(ws.Signal()))
			}
			return exitLaunch, errors.New("the supervisor ended before QEMU was ready")
		}
	}
}

// isFork reports whether r creates a process (clone without CLONE_THREAD).
func isFork(r *orch.Request) bool {
	switch r.Syscall {
	case "fork", "vfork":
		return true
	case "clone":
		return r.Args[0]&unix.CLONE_THREAD == 0
	}
	return false
}

// countFork notes a daemonizing fork the engine admitted: the process it
// makes is QEMU's next, once it makes its first inspected call. A fork
// that runs only because the mode is audit is not followed: the process it
// makes is a payload's, not QEMU's. Only the loop calls it.
func (s *session) countFork(r *orch.Request, d orch.Decision) {
	if isFork(r) && d.Action == profiles.VerdictAllow && d.Rule == policy.DaemonizeRuleName {
		s.forks++
	}
}

// maybeFollow makes the process of c QEMU's when it is a new one and a
// fork was let run: after an admitted fork, the only new process under
// the filter is its child. QEMU's process then is the daemon (the child's
// child), for reactions, memwatch, events and the exit status. Only the
// loop calls it.
func (s *session) maybeFollow(c *seccompnotify.Call) {
	pid := c.Req.PID
	if s.forks <= len(s.leftPIDs) || pid <= 0 || pid == s.curPID || slices.Contains(s.leftPIDs, pid) {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		s.emitErr(fmt.Errorf("follow QEMU's fork %d: pidfd_open: %w", pid, err))
		return
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	if s.listener.IDValid(c.N.ID) != nil {
		pidfd.Close() // gone before it could be followed: its pid proves nothing
		return
	}
	from := s.curPID
	s.leftPIDs = append(s.leftPIDs, from)
	s.curPID = pid
	s.proc.follow(pid, pidfd)
	s.dec.Follow(pid)
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", PID: pid, Detail: fmt.Sprintf("QEMU forked (-daemonize): process %d, forked by %d, is QEMU's process now", pid, from)})
}

// setSubreaper makes this process the reaper of the processes its
// QEMU forks once their parent is gone: the daemon of -daemonize.
func setSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", err)
	}
	return nil
}

// daemonizeResetter is orch.Engine's ResetDaemonize, through the
// DynamicDecider.
type daemonizeResetter interface{ ResetDaemonize() }

// firstExited says that QEMU's first process exited and its daemon goes
// on, and passes the status to Config.Detached.
func (s *session) firstExited(status int) {
	pid, _ := s.proc.current()
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", PID: s.proc.started, Detail: fmt.Sprintf("QEMU's first process %d exited with status %d; its daemon %d goes on under supervision", s.proc.started, status, pid)})
	if s.cfg.Detached != nil {
		s.cfg.Detached(status)
	}
}

// waitDaemon waits for QEMU's daemon, which this process reaps as the
// subreaper, and reports its end on s.exited; it reaps the processes
// between (the daemon's parent) too. A daemon that is not this process's
// child (no subreaper) is waited for through its pidfd, without a status.
func (s *session) waitDaemon() {
	pid, pidfd, left := s.proc.daemon()
	for _, p := range left {
		go func() {
			var ws unix.WaitStatus
			for {
				if _, err := unix.Wait4(p, &ws, 0, nil); !errors.Is(err, unix.EINTR) {
					return
				}
			}
		}()
	}
	var ws unix.WaitStatus
	for tries := 0; ; {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) && tries < 200 {
			// The daemon becomes this subreaper's child only once its
			// parent has exited, a moment after the fork kfv saw.
			tries++
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err == nil && (ws.Stopped() || ws.Continued()) {
			continue // a scrub freezing QEMU, not its end
		}
		if err != nil {
			s.emitErr(fmt.Errorf("wait for QEMU's daemon %d: %w; its end is seen through its pidfd, its exit status is not known", pid, err))
			fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
			for {
				if _, err := unix.Poll(fds, -1); !errors.Is(err, unix.EINTR) {
					break
				}
			}
			ws = unix.WaitStatus(exitLaunch << 8)
		}
		break
	}
	s.exited <- ws
}
