//go:build linux

package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/qmpproxy"
	"kfv/seccompnotify"
)

// The emulator model (docs/libvirt.md): kfv is started by libvirt
// as the domain's emulator and must become QEMU in the same process, so
// that libvirt's pid, /proc accounting, vCPU thread ids and kill all
// reach QEMU itself. Three programs, one binary:
//
//	caller (libvirt) ─exec─► kfv-qemu-system-x86_64 ARGS      (stage 1, the caller's environment)
//	  └─exec, same pid─► kfv __kfv_emulator ENVFD -- ARGS   (stage 2, a clean environment)
//	      ├─clone(CLONE_PARENT), setsid, exec─► kfv __kfv_supervise  (the supervisor, detached)
//	      └─seccomp(NEW_LISTENER), exec─► qemu-system-x86_64 ARGS      (same pid, the caller's environment)
//
// Stage 1 passes capability probes straight to QEMU and otherwise
// re-executes itself so that the Go runtime and the dynamic loader of
// the process that compiles, forks and loads the filter are steered by
// nothing the domain's <qemu:env> put in the environment (GODEBUG,
// GOTRACEBACK, GOMAXPROCS, LD_PRELOAD...). The original environment
// travels in a memfd and is what QEMU gets.

const (
	// emulatorStageArg is argv[1] of stage 2.
	emulatorStageArg = "__kfv_emulator"
	// supervisorArg is argv[1] of the detached supervisor.
	supervisorArg = "__kfv_supervise"
)

// The supervisor's fds: its request, its status report to stage 2, a
// pidfd of stage 2 (which becomes QEMU), kfv's end of its private
// monitor, the lock of the VM's runtime directory (/dev/null for none of
// either), and from supervisorMonitorFD on the listening sockets of the
// VM's monitors, one per EmulatorRequest.Monitors entry.
const (
	supervisorReqFD     = 3
	supervisorStatusFD  = 4
	supervisorPidFD     = 5
	supervisorPrivateFD = 6
	supervisorDirLockFD = 7
	supervisorMonitorFD = 8
)

// supervisorReadyTimeout bounds stage 2's wait for the supervisor to
// compile the profile and open the event stream.
const supervisorReadyTimeout = 30 * time.Second

// stageEnv is the whole environment of stage 2. Without asynchronous
// preemption no SIGURG lands between seccomp() and execve() (see
// seccompnotify.LoadAndExec).
var stageEnv = []string{"GODEBUG=asyncpreemptoff=1"}

// supervisorEnv is the whole environment of the supervisor.
var supervisorEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}

func init() {
	if IsEmulatorStage() {
		// Stage 2 loads the filter on, and execs QEMU from, the main
		// thread: the thread group leader, whose id is the pid the
		// caller knows. init runs on the main goroutine locked to the
		// main thread; keep it there.
		runtime.LockOSThread()
	}
}

// IsEmulatorStage reports whether this process is stage 2 of the
// emulator model (started by Reexec).
func IsEmulatorStage() bool { return len(os.Args) > 1 && os.Args[1] == emulatorStageArg }

// IsEmulatorSupervisor reports whether this process is the detached
// supervisor of the emulator model.
func IsEmulatorSupervisor() bool { return len(os.Args) > 1 && os.Args[1] == supervisorArg }

// Reexec replaces this process, keeping its pid, with stage 2: the same
// binary with an environment of its own. The current environment is
// saved in a memfd for stage 2 to hand to QEMU; every inherited fd stays
// where it is. It returns only on failure.
func Reexec(args []string) error {
	var env bytes.Buffer
	for _, kv := range os.Environ() {
		env.WriteString(kv)
		env.WriteByte(0)
	}
	// Not close-on-exec: stage 2 reads it and closes it before anything
	// else, so QEMU never sees it.
	fd, err := unix.MemfdCreate("kfv-environment", 0)
	if err != nil {
		return os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "kfv-environment")
	if _, err := f.Write(env.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("save environment: %w", err)
	}
	argv := append([]string{os.Args[0], emulatorStageArg, strconv.Itoa(fd), "--"}, args...)
	// /proc/self/exe is this very binary, even if the path it was
	// started by has been replaced since.
	err = syscall.Exec("/proc/self/exe", argv, stageEnv)
	f.Close()
	return fmt.Errorf("re-execute kfv: %w", os.NewSyscallError("execve", err))
}

// StageArgs returns, in stage 2, the caller's argv[0], QEMU's arguments
// and the caller's environment, and closes the memfd that carried it.
func StageArgs() (argv0 string, args, env []string, err error) {
	if len(os.Args) < 4 || os.Args[3] != "--" {
		return "", nil, nil, errors.New("emulator stage: usage: ARGV0 __kfv_emulator ENVFD -- ARGS")
	}
	fd, err := strconv.Atoi(os.Args[2])
	if err != nil || fd <= 2 {
		return "", nil, nil, fmt.Errorf("emulator stage: bad environment fd %q", os.Args[2])
	}
	f := os.NewFile(uintptr(fd), "kfv-environment")
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<30))
	if err != nil {
		return "", nil, nil, fmt.Errorf("emulator stage: read environment: %w", err)
	}
	env = []string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if len(kv) > 0 {
			env = append(env, string(kv))
		}
	}
	return os.Args[0], os.Args[4:], env, nil
}

// EmulatorRequest is what stage 2 tells the supervisor.
type EmulatorRequest struct {
	QEMU string   `json:"qemu"` // the real QEMU's absolute path
	Argv []string `json:"argv"` // QEMU's argv, argv[0] included
	Env  []string `json:"env"`  // QEMU's environment (data for the policy, not the supervisor's own)
	Cwd  string   `json:"cwd"`
	PID  int      `json:"pid"` // stage 2, soon QEMU
	// Setup is the caller's own settings for the supervisor
	// (EmulatorSupervisorMain's setup function reads them).
	Setup json.RawMessage `json:"setup"`
	// Monitors are the VM's QMP monitors the supervisor serves for the
	// caller; the listening socket of Monitors[i] is its fd
	// supervisorMonitorFD+i.
	Monitors []qmpproxy.Monitor `json:"monitors,omitempty"`
	// Private says the supervisor's fd supervisorPrivateFD is kfv's end
	// of its private monitor; DirLocked that supervisorDirLockFD holds
	// the lock of the VM's runtime directory.
	Private   bool `json:"private,omitempty"`
	DirLocked bool `json:"dir_locked,omitempty"`
}

// emulatorStatus is the supervisor's answer to stage 2: the filter to
// load, or why there is none.
type emulatorStatus struct {
	Prog []byte `json:"prog,omitempty"`
	// Landlock is the wall the process builds around itself before it
	// loads the filter and execs QEMU; nil builds none.
	Landlock *landlockPlan `json:"landlock,omitempty"`
	Code     int           `json:"code,omitempty"`
	Msg      string        `json:"msg,omitempty"`
}

// Emulation is one QEMU started in the emulator model.
type Emulation struct {
	QEMU  string   // the real QEMU's absolute path
	Argv  []string // QEMU's argv, argv[0] included, as the caller gave it
	Env   []string // QEMU's environment, as the caller gave it
	Setup json.RawMessage
	// Launch is what kfv added to the line (Argv has it already): the
	// supervisor gets kfv's end of the private monitor, the caller's QMP
	// monitors it serves and the VM's runtime directory, and Emulate
	// closes stage 2's copies before QEMU runs.
	Launch *Launch
}

// Emulate is stage 2: it starts the supervisor detached, waits for the
// filter it compiles, lets it take the listener, loads the filter and
// execs QEMU in this process. Call it on the main thread (IsEmulatorStage
// processes are locked there by this package's init). It returns only on
// failure, before QEMU ran.
func Emulate(e *Emulation) *LaunchError {
	cwd, err := os.Getwd()
	if err != nil {
		return launchErr(exitLaunch, "current directory: %w", err)
	}
	r := &EmulatorRequest{QEMU: e.QEMU, Argv: e.Argv, Env: e.Env, Cwd: cwd, PID: os.Getpid(), Setup: e.Setup}
	var monFiles []*os.File
	defer func() {
		for _, f := range monFiles {
			f.Close()
		}
	}()
	l := e.Launch
	for _, m := range l.Monitors {
		f, err := listenerFile(m.Listener)
		if err != nil {
			return launchErr(exitLaunch, "monitor %s: %w", m.Monitor.Option, err)
		}
		monFiles = append(monFiles, f)
		r.Monitors = append(r.Monitors, m.Monitor)
	}
	r.Private, r.DirLocked = l.kfvEnd != nil, l.lock != nil
	req, err := json.Marshal(r)
	if err != nil {
		return launchErr(exitLaunch, "encode supervisor request: %w", err)
	}
	spid, status, lerr := startSupervisor(req, l.kfvEnd, l.lock, monFiles)
	// The supervisor has its copies (or failed): QEMU must hold none of
	// the manager's monitor sockets, nor kfv's end of its own.
	err = closeMonitors(l.Monitors, monFiles)
	for _, f := range []*os.File{l.kfvEnd, l.lock} {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	l.kfvEnd, l.lock = nil, nil
	if err != nil && lerr == nil {
		lerr = launchErr(exitLaunch, "%w", err)
	}
	monFiles = nil
	if lerr != nil {
		return lerr
	}
	var st emulatorStatus
	if err := json.Unmarshal(status, &st); err != nil || len(st.Prog) == 0 && st.Msg == "" {
		return launchErr(exitLaunch, "supervisor %d exited before it was ready (its errors are in the event stream)", spid)
	}
	if st.Msg != "" {
		code := st.Code
		if code == 0 {
			code = exitLaunch
		}
		return &LaunchError{Code: code, Err: errors.New(st.Msg)}
	}
	prog, err := seccompnotify.DecodeProg(st.Prog)
	if err != nil {
		return launchErr(exitLaunch, "supervisor's filter: %w", err)
	}
	// The supervisor is not our descendant, and pidfd_getfd needs ptrace
	// access to us: under Yama ptrace_scope=1 only declared tracers may
	// have it. Without Yama the call fails with EINVAL and is not needed.
	if err := unix.Prctl(unix.PR_SET_PTRACER, uintptr(spid), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return launchErr(exitLaunch, "allow the supervisor to take the listener: %w", os.NewSyscallError("prctl(PR_SET_PTRACER)", err))
	}
	if st.Landlock != nil {
		// Before the filter, on the thread that execs (LoadAndExec's
		// precondition: a locked thread).
		if err := st.Landlock.restrict(); err != nil {
			return launchErr(exitLaunch, "%w", err)
		}
	}
	if l.qemuEnd != nil {
		// QEMU's end of kfv's private monitor stays open across the
		// exec, at the number its command line names.
		if _, err := unix.FcntlInt(l.qemuEnd.Fd(), unix.F_SETFD, 0); err != nil {
			return launchErr(exitLaunch, "kfv's private monitor: %w", os.NewSyscallError("fcntl", err))
		}
	}
	err = seccompnotify.LoadAndExec(&seccompnotify.ExecSpec{Path: e.QEMU, Argv: e.Argv, Env: e.Env, Prog: prog})
	var ee *seccompnotify.ExecError
	if errors.As(err, &ee) {
		return &LaunchError{Code: execExitCode(ee.Err), Err: err}
	}
	return launchErr(exitLaunch, "%w", err)
}

// listenerFile returns a copy of a monitor listener's socket for the
// supervisor.
func listenerFile(ln net.Listener) (*os.File, error) {
	fl, ok := ln.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("listener %T has no file", ln)
	}
	return fl.File()
}

// closeMonitors closes stage 2's monitor listeners and the copies made
// for the supervisor, without removing a socket path from the file
// system: the supervisor serves it now.
func closeMonitors(ms []MonitorProxy, files []*os.File) error {
	var errs []error
	for _, m := range ms {
		if ul, ok := m.Listener.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
		if err := m.Listener.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close monitor %s: %w", m.Monitor.Option, err))
		}
	}
	for _, f := range files {
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close monitor copy: %w", err))
		}
	}
	return errors.Join(errs...)
}

// startSupervisor starts the supervisor detached and returns its pid and
// its status report. private (kfv's end of its monitor) and dirLock, when
// not nil, become its fds supervisorPrivateFD and supervisorDirLockFD,
// monitors its fds from supervisorMonitorFD on.
//
// Detached: CLONE_PARENT makes it a sibling of this process rather than a
// child of QEMU (QEMU reaps no children it does not know), setsid puts it
// in a session and process group of its own, so nothing aimed at the
// VM's group reaches it, and its stdio is /dev/null: it holds none of the
// caller's pipes (libvirt's log pipe) open. The caller's other fds are
// marked close-on-exec around the fork, because Go's ForkExec leaves
// unlisted fds alone, and restored before QEMU can need them.
func startSupervisor(req []byte, private, dirLock *os.File, monitors []*os.File) (int, []byte, *LaunchError) {
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return 0, nil, launchErr(exitLaunch, "create supervisor pipe: %w", err)
	}
	defer reqW.Close()
	stR, stW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		return 0, nil, launchErr(exitLaunch, "create supervisor status pipe: %w", err)
	}
	defer stR.Close()
	self, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		reqR.Close()
		stW.Close()
		return 0, nil, launchErr(exitLaunch, "pidfd_open self: %w", err)
	}
	pidfd := os.NewFile(uintptr(self), "pidfd")
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		reqR.Close()
		stW.Close()
		pidfd.Close()
		return 0, nil, launchErr(exitLaunch, "open %s: %w", os.DevNull, err)
	}
	restore, err := cloexecInherited()
	var spid int
	if err == nil {
		files := []uintptr{null.Fd(), null.Fd(), null.Fd(), reqR.Fd(), stW.Fd(), pidfd.Fd(), null.Fd(), null.Fd()}
		if private != nil {
			files[supervisorPrivateFD] = private.Fd()
		}
		if dirLock != nil {
			files[supervisorDirLockFD] = dirLock.Fd()
		}
		for _, f := range monitors {
			files = append(files, f.Fd())
		}
		spid, err = syscall.ForkExec("/proc/self/exe", []string{"kfv-supervisor", supervisorArg}, &syscall.ProcAttr{
			Env:   supervisorEnv,
			Files: files,
			Sys:   &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_PARENT},
		})
		err = errors.Join(err, restore())
	}
	err = errors.Join(err, reqR.Close(), stW.Close(), pidfd.Close(), null.Close())
	if err != nil {
		if spid > 0 {
			if kerr := unix.Kill(spid, unix.SIGKILL); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
				err = errors.Join(err, fmt.Errorf("kill supervisor %d: %w", spid, kerr))
			}
		}
		return 0, nil, launchErr(exitLaunch, "start supervisor: %w", err)
	}
	if _, err := reqW.Write(req); err != nil {
		return spid, nil, launchErr(exitLaunch, "send supervisor request: %w", err)
	}
	if err := reqW.Close(); err != nil {
		return spid, nil, launchErr(exitLaunch, "send supervisor request: %w", err)
	}
	if err := stR.SetReadDeadline(time.Now().Add(supervisorReadyTimeout)); err != nil {
		return spid, nil, launchErr(exitLaunch, "supervisor status pipe: %w", err)
	}
	b, err := io.ReadAll(stR)
	if err != nil {
		return spid, nil, launchErr(exitLaunch, "wait for supervisor %d: %w", spid, err)
	}
	return spid, b, nil
}

// cloexecInherited marks every fd above 2 that lacks FD_CLOEXEC (the
// caller's: libvirt's tap, monitor and log fds) close-on-exec, and returns
// a function that clears the flag on exactly those again.
func cloexecInherited() (func() error, error) {
	fds, err := openFDs()
	if err != nil {
		return nil, err
	}
	var marked []int
	restore := func() error {
		var errs []error
		for _, fd := range marked {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
				errs = append(errs, fmt.Errorf("restore fd %d: %w", fd, os.NewSyscallError("fcntl", err)))
			}
		}
		return errors.Join(errs...)
	}
	for _, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // closed meanwhile (the listing's own fd), or ours
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
			return nil, errors.Join(fmt.Errorf("mark fd %d close-on-exec: %w", fd, os.NewSyscallError("fcntl", err)), restore())
		}
		marked = append(marked, fd)
	}
	return restore, nil
}

// openFDs lists this process's fds above 2.
func openFDs() ([]int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list fds: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list fds: %w", err)
	}
	var fds []int
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd > 2 {
			fds = append(fds, fd)
		}
	}
	return fds, nil
}

// EmulatorSupervisorMain is the detached supervisor: it reads stage 2's
// request, builds its configuration with setup (profile, decider, event
// stream), compiles the filter and sends it to stage 2, takes the
// listener, and answers notifications until no process uses the filter
// any more: QEMU and everything it forked (-daemonize) have exited and
// been reaped. It returns the supervisor's exit status.
//
// Nobody waits for that status and its stdio is /dev/null: failures go
// to stage 2 (before QEMU runs) or to the event stream (after).
func EmulatorSupervisorMain(setup func(*EmulatorRequest) (*Config, func() error, error)) int {
	status := os.NewFile(supervisorStatusFD, "kfv-status")
	fail := func(code int, err error) int {
		b, merr := json.Marshal(emulatorStatus{Code: code, Msg: err.Error()})
		if merr == nil {
			_, merr = status.Write(b)
		}
		status.Close()
		if merr != nil {
			return exitLaunch
		}
		return code
	}
	reqF := os.NewFile(supervisorReqFD, "kfv-request")
	b, err := io.ReadAll(reqF)
	reqF.Close()
	if err != nil {
		return fail(exitLaunch, fmt.Errorf("supervisor: read request: %w", err))
	}
	var req EmulatorRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return fail(exitLaunch, fmt.Errorf("supervisor: decode request: %w", err))
	}
	pidfd := os.NewFile(supervisorPidFD, "pidfd")
	defer pidfd.Close()
	private := os.NewFile(supervisorPrivateFD, "kfv-monitor")
	if !req.Private {
		private.Close()
		private = nil
	}
	// The VM's runtime directory stays locked until this process ends
	// (closeCfg removes it first).
	dirLock := os.NewFile(supervisorDirLockFD, "kfv-vm-dir")
	defer dirLock.Close()
	cfg, closeCfg, err := setup(&req)
	if err != nil {
		var le *LaunchError
		if errors.As(err, &le) {
			return fail(le.Code, le)
		}
		return fail(exitLaunch, err)
	}
	cfg.MonitorConn = private
	code := superviseEmulated(cfg, &req, pidfd, status, fail)
	if err := closeCfg(); err != nil && code == 0 {
		code = exitLaunch
	}
	return code
}

// monitorListeners returns the VM's monitors as stage 2 handed them
// over (EmulatorRequest.Monitors).
func monitorListeners(req *EmulatorRequest) ([]MonitorProxy, error) {
	var out []MonitorProxy
	for i, m := range req.Monitors {
		f := os.NewFile(uintptr(supervisorMonitorFD+i), "monitor-"+m.ID)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, mp := range out {
				mp.Listener.Close()
			}
			return nil, fmt.Errorf("monitor %s: fd %d: %w", m.Option, supervisorMonitorFD+i, err)
		}
		if ul, ok := ln.(*net.UnixListener); ok && m.FD < 0 {
			// Stage 2 bound this path for the manager; when the proxy
			// stops, it goes, as QEMU removes the sockets it binds.
			// (A socket the manager handed over is the manager's.)
			ul.SetUnlinkOnClose(true)
		}
		out = append(out, MonitorProxy{Monitor: m, Listener: ln})
	}
	return out, nil
}

func superviseEmulated(cfg *Config, req *EmulatorRequest, pidfd, status *os.File, fail func(int, error) int) int {
	monitors, err := monitorListeners(req)
	if err != nil {
		return fail(exitLaunch, err)
	}
	s, lerr := newSession(cfg)
	if lerr != nil {
		return fail(lerr.Code, lerr)
	}
	s.plane.monConn = cfg.MonitorConn
	s.qemuPath, s.proc.pid, s.proc.pidfd = req.QEMU, req.PID, pidfd
	s.proc.started, s.proc.startedFD = req.PID, pidfd
	defer s.proc.closeAll()
	s.proc.emulator = true
	// The L3 hook: what the manager hands QEMU over its monitors is
	// admitted before QEMU opens it. The session is the only one: under
	// a manager a restart is a kill.
	var cur atomic.Pointer[session]
	cur.Store(s)
	stopProxies, err := serveMonitors(&cur, cfg.Policy.runtime, monitors, req.Cwd)
	if err != nil {
		return fail(exitLaunch, fmt.Errorf("serve the VM's monitors: %w", err))
	}
	defer stopProxies()
	if ctl, err := cfg.startControl(&cur); err != nil {
		s.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: err.Error() + ": kfv-run status and reload cannot reach this VM"})
	} else {
		defer ctl.close()
	}
	// The process that loads the filter becomes QEMU: its pid is known.
	prog, err := seccompnotify.PatchPID(s.filter.Prog, s.filter.PIDSlots, s.proc.pid)
	if err != nil {
		return fail(exitLaunch, err)
	}
	wall, werr := s.landlock(req.QEMU)
	if werr != nil {
		return fail(werr.Code, werr)
	}
	b, err := json.Marshal(emulatorStatus{Prog: seccompnotify.EncodeProg(prog), Landlock: wall})
	if err == nil {
		_, err = status.Write(b)
	}
	if cerr := status.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.emitErr(fmt.Errorf("send filter to process %d: %w", s.proc.pid, err))
		return exitLaunch
	}
	lf, err := seccompnotify.TakeListener(pidfd, s.proc.pid, takeListenerTimeout)
	if err != nil {
		s.emitErr(fmt.Errorf("take seccomp listener: %w", err))
		return exitLaunch
	}
	if err := s.attach(lf); err != nil {
		s.emitErr(err)
		return exitLaunch
	}
	// The process libvirt started is QEMU; with -daemonize it exits early
	// and its child goes on under the same filter. Say when it goes; the
	// loop itself ends only when the kernel reports that no task uses
	// the filter (POLLHUP), which happens once the last one is reaped.
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err == nil {
				s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: fmt.Sprintf("process %d (QEMU as started) exited", s.proc.started)})
			}
			return
		}
	}()
	go s.plane.run()
	settle := time.AfterFunc(settleAfter, debug.FreeOSMemory) // as in runOnce
	defer settle.Stop()
	loopErr := s.loop()
	s.plane.shutdown()
	s.dec.Close()
	if loopErr == nil {
		// The filter's last user is gone, so the process that loaded it
		// has exited and its pidfd is readable: the goroutine ends at
		// once. After a loop failure QEMU may live on (its inspected
		// calls now fail with ENOSYS): do not wait for it.
		<-exited
	}
	s.gate.Close()
	if err := s.listener.Close(); err != nil {
		loopErr = errors.Join(loopErr, fmt.Errorf("close listener: %w", err))
	}
	if loopErr != nil {
		s.emitErr(fmt.Errorf("supervisor loop: %w", loopErr))
		return exitLaunch
	}
	if s.proc.followed() {
		pid, _ := s.proc.current()
		s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: fmt.Sprintf("QEMU's daemon %d exited (-daemonize: it is not kfv's child, its exit status is its reaper's)", pid)})
	}
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "no process uses the filter any more: supervisor exits"})
	return 0
}
