//go:build linux

package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/memwatch"
	"kfv/metrics"
	"kfv/seccompnotify"
)

// Mode is how decisions are applied.
type Mode string

const (
	// Enforce applies every verdict.
	Enforce Mode = "enforce"
	// Audit decides and logs every call but lets it through.
	Audit Mode = "audit"
)

// Config is one supervised QEMU.
type Config struct {
	QEMU   string   // the QEMU binary as the user named it
	Args   []string // QEMU's arguments, argv[0] excluded
	Policy *Policy
	Mode   Mode
	VM     string
	Events *event.Writer
	// Warn receives one-line warnings for the operator (stderr).
	Warn func(string)
	// MonitorFD is the fd QEMU's end of kfv's private QMP monitor has in
	// QEMU, as the caller added it to Args (Launch.MonitorFD); 0 runs
	// without one (no reactions that need QMP, no origin detector). Run
	// makes the socket pair for each QEMU it starts.
	MonitorFD int
	// MonitorConn is kfv's end of that pair when the caller made it (the
	// emulator model: QEMU already holds the other end).
	MonitorConn *os.File
	// HeldStart says the caller added -S to Args (Launch.HeldStart): kfv
	// resumes the guest once its monitor answers.
	HeldStart bool
	// Landlock is how hard kfv insists on QEMU's Landlock wall
	// (landlock_linux.go); "" is best-effort. Audit mode builds none.
	Landlock LandlockMode
	// CheckpointEvery is how often a clean checkpoint of the VM is taken
	// for the restart_checkpoint reaction; 0 takes none.
	CheckpointEvery time.Duration
	// Memwatch configures the watch over QEMU's memory (taken once the
	// private monitor answers); nil watches nothing.
	Memwatch *memwatch.Config
	// Monitors are the VM's QMP monitors kfv serves for its manager
	// (ProxyMonitors), and HideFDs the inherited fds they took over, which
	// QEMU must not get. Cwd is QEMU's working directory.
	Monitors []MonitorProxy
	HideFDs  []int
	Cwd      string
	// MaxRestarts bounds the restarts the VO may order (backoff 1 s, 2 s,
	// 4 s... up to 30 s between them); 0 allows none.
	MaxRestarts int
	// Detached is called once when QEMU's first process exits while the
	// daemon it forked (-daemonize) goes on under supervision, with the
	// first process's exit status: the caller tells its own caller, and
	// lets go of its stdio. nil: Run just goes on.
	Detached func(status int)
	// RunAs is who QEMU runs as (ResolveRunAs); nil keeps kfv-run's
	// own user. Standalone model only.
	RunAs *RunAs
	// ErrLog, when set, receives the text of every error event too: a
	// detached supervisor's log, since nobody reads its stderr.
	ErrLog func(string)
	// Hangup, when set, is what SIGHUP to kfv-run does instead of being
	// forwarded to QEMU: reopen the event file (logrotate).
	Hangup func() error
	// Metrics counts the VM's decisions, findings, reactions and scans;
	// nil counts nothing.
	Metrics *metrics.VM
	// Reload prepares the VM's policy anew from disk, as the caller
	// prepared Policy (the same profile and overlay, for the same command
	// line): kfv-run reload applies it to the running VM
	// (control_linux.go). nil: the policy cannot be reloaded.
	Reload func() (*Policy, error)
	// Version is kfv's version, for kfv-run status.
	Version string
	// Cgroup is QEMU's cgroup of its own, with its limits
	// (cgroup_linux.go); nil is best-effort with the default limits.
	// Standalone model only.
	Cgroup *Cgroup
}

// forwarded are the signals kfv-run passes on to QEMU. SIGURG is the Go
// runtime's own and never forwarded; SIGCHLD is ours.
var forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// takeListenerTimeout bounds the wait for the loader to load its filter.
const takeListenerTimeout = 10 * time.Second

// Run starts QEMU under the profile's filter, supervises it until it exits
// and returns its exit status (128+N when killed by signal N). A
// *LaunchError means QEMU never ran. When the vertical orchestrator orders
// a restart, Run relaunches QEMU once the old one is reaped, with a
// backoff, at most MaxRestarts times.
func Run(cfg *Config) (int, error) {
	path, lerr := resolveQEMU(cfg.QEMU)
	if lerr != nil {
		return lerr.Code, lerr
	}
	sigCh := make(chan os.Signal, 16)
	signal.Notify(sigCh, forwarded...)
	defer signal.Stop(sigCh)

	if cfg.Policy.Daemonize {
		// The daemon QEMU forks is reparented here when its parent
		// exits, so that its exit can be waited on.
		if err := setSubreaper(); err != nil {
			return exitLaunch, launchErr(exitLaunch, "-daemonize: %w", err)
		}
	}
	maxRestarts := cfg.MaxRestarts
	var restore, ckpt *os.File
	defer func() {
		for _, f := range []*os.File{restore, ckpt} {
			if f != nil {
				f.Close()
			}
		}
	}()
	// One cgroup for every QEMU of this run: restarts reuse it.
	cg, cgDetail, err := newVMCgroup(cfg.VM, cfg.Cgroup)
	if err != nil {
		return exitLaunch, launchErr(exitLaunch, "%w", err)
	}
	defer func() {
		if err := cg.remove(); err != nil {
			cfg.warn(err.Error())
		}
	}()
	var cur atomic.Pointer[session]
	stopProxies := func() {}
	defer func() { stopProxies() }()
	for restarts := 0; ; restarts++ {
		s, lerr := newSession(cfg)
		if lerr != nil {
			return lerr.Code, lerr
		}
		s.cgroup, s.cgroupDetail = cg, cgDetail
		cur.Store(s)
		if restarts == 0 {
			stop, err := serveMonitors(&cur, cfg.Policy.runtime, cfg.Monitors, cfg.Cwd)
			if err != nil {
				return exitLaunch, launchErr(exitLaunch, "serve the VM's monitors: %w", err)
			}
			stopProxies = stop
			ctl, err := cfg.startControl(&cur)
			if err != nil {
				// kfv-run status and reload will not find this VM; it
				// is protected all the same.
				s.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: err.Error() + ": kfv-run status and reload cannot reach this VM"})
			}
			defer ctl.close()
		}
		s.plane.ckpt = ckpt
		if restore != nil {
			s.plane.restoreFrom = restore
			s.args = withIncomingDefer(cfg.Args)
		}
		status, err := s.runOnce(path, sigCh)
		req := s.proc.restart.get()
		ckpt = s.plane.latestCheckpoint()
		if req == nil || err != nil {
			return status, err
		}
		if restarts >= maxRestarts {
			s.emitErr(fmt.Errorf("restart ordered but %d restarts already made: QEMU stays down", restarts))
			return status, nil
		}
		backoff := time.Second << restarts
		if backoff > 30*time.Second {
			backoff = 30 * time.Second
		}
		if restore != nil {
			restore.Close()
			restore = nil
		}
		if req.fromCheckpoint != nil {
			// A file description of its own, read from the start: the
			// next QEMU's plane may replace the latest checkpoint while
			// it restores this one.
			if restore, err = reopenCheckpoint(req.fromCheckpoint); err != nil {
				s.emitErr(fmt.Errorf("restart from checkpoint: %w; restarting cold", err))
				restore = nil
			}
		}
		how := "cold, same command line"
		if restore != nil {
			how = "from the latest clean checkpoint"
		}
		s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: fmt.Sprintf("restarting QEMU (%s) in %v, restart %d of %d", how, backoff, restarts+1, maxRestarts)})
		select {
		case sig := <-sigCh:
			// Asked to stop while QEMU is down: stay down.
			s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "restart abandoned: kfv-run got " + unix.SignalName(sig.(syscall.Signal))})
			return 128 + int(sig.(syscall.Signal)), nil
		case <-time.After(backoff):
		}
	}
}

// runOnce runs one QEMU to its end.
func (s *session) runOnce(path string, sigCh chan os.Signal) (int, error) {
	if err := s.start(path); err != nil {
		return exitLaunch, err
	}
	go s.plane.run()
	loopDone := make(chan error, 1)
	go func() { loopDone <- s.loop() }()
	// Start-up (the profile, the command line's resources, memwatch's
	// baseline) leaves freed heap the runtime would give back only
	// slowly: one VM's supervisor among tens on a host returns it once
	// QEMU has settled (about 2 MiB of RSS). A one-shot, not a tick.
	settle := time.AfterFunc(settleAfter, debug.FreeOSMemory)
	defer settle.Stop()

	var status int
	var exitErr error
	first := true
	for done := false; !done; {
		select {
		case sig := <-sigCh:
			s.forward(sig.(syscall.Signal))
		case ws := <-s.exited:
			status, exitErr = s.exitStatus(ws)
			if first && exitErr == nil && s.proc.followed() {
				// QEMU's first process is gone; its daemon goes on.
				first = false
				s.firstExited(status)
				go s.waitDaemon()
				continue
			}
			done = true
		}
	}
	s.listener.Shutdown()
	loopErr := <-loopDone
	s.plane.shutdown()
	s.dec.Close()
	if err := s.listener.Close(); err != nil {
		loopErr = errors.Join(loopErr, fmt.Errorf("close listener: %w", err))
	}
	s.gate.Close()
	pid, _ := s.proc.current()
	s.proc.closeAll()
	s.proc.pidfd.Close()
	if exitErr != nil {
		return status, exitErr
	}
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", PID: pid, Detail: fmt.Sprintf("qemu exited with status %d", status)})
	if loopErr != nil {
		return status, fmt.Errorf("supervisor loop: %w", loopErr)
	}
	return status, nil
}

// startControl serves the VM's control socket (control_linux.go) for the
// sessions cur points to.
func (cfg *Config) startControl(cur *atomic.Pointer[session]) (*control, error) {
	qemu := func() int {
		if s := cur.Load(); s != nil {
			pid, _ := s.proc.current()
			return pid
		}
		return 0
	}
	return startControl(cfg.VM, cfg.Version, qemu, func() string { return cfg.Policy.profile().Source }, func() (string, error) { return reloadPolicy(cfg, cur) })
}

// settleAfter is how long after QEMU's start the supervisor gives its
// start-up's freed memory back to the kernel.
const settleAfter = 5 * time.Second

func (c *Config) warn(s string) {
	if c.Warn != nil {
		c.Warn(s)
	}
	if c.Events != nil {
		c.Events.Emit(&event.Event{Kind: event.KindWarning, VM: c.VM, Mode: string(c.Mode), Source: "supervisor", Detail: s})
	}
}

// resolveQEMU finds the QEMU binary as a shell would, with the shell's
// exit codes for "not found" and "not executable".
func resolveQEMU(name string) (string, *LaunchError) {
	if name == "" {
		return "", launchErr(exitLaunch, "no QEMU command given (usage: kfv-run [flags] -- QEMU [ARGS...])")
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return "", launchErr(exitNotFound, "%s: QEMU binary not found", name)
		}
		if errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
			return "", launchErr(exitNotExec, "%s: QEMU binary is not executable", name)
		}
		return "", launchErr(exitNotExec, "%s: %v", name, err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", launchErr(exitLaunch, "%s: %v", name, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", launchErr(exitNotFound, "%s: %v", name, err)
	}
	if fi.IsDir() {
		return "", launchErr(exitNotExec, "%s: is a directory", name)
	}
	return abs, nil
}

// newSession checks cfg and compiles its profile into a filter.
func newSession(cfg *Config) (*session, *LaunchError) {
	if cfg.Mode != Enforce && cfg.Mode != Audit {
		return nil, launchErr(exitLaunch, "mode %q: want enforce or audit", cfg.Mode)
	}
	prof := cfg.Policy.profile()
	filter, err := seccompnotify.Compile(prof)
	if err != nil {
		return nil, launchErr(exitLaunch, "compile profile %s: %w", prof.Source, err)
	}
	for _, w := range filter.Warnings {
		cfg.warn("profile " + prof.Source + ": " + w)
	}
	proc := &process{}
	s := &session{cfg: cfg, args: cfg.Args, filter: filter, dec: &seccompnotify.Decoder{Names: filter.Names}, proc: proc, injected: &injected{}}
	p, err := newPlane(cfg, emitter{cfg: cfg, proc: proc}, proc, s.injected)
	if err != nil {
		return nil, launchErr(exitLaunch, "profile %s: %w", prof.Source, err)
	}
	s.plane = p
	p.ram = s.dec
	s.memHold = &memHold{s: s}
	s.dec.HoldOthers = s.memHold.hold
	if ts, ok := cfg.Policy.Decider.(textSetter); ok {
		// A new QEMU maps its code elsewhere: origin is not judged until
		// its monitor answers and its code ranges are known.
		ts.ResetText()
	}
	if dr, ok := cfg.Policy.Decider.(daemonizeResetter); ok {
		dr.ResetDaemonize() // a new QEMU daemonizes anew
	}
	return s, nil
}

// session is one run of QEMU: the process, the listener and the loop
// that answers it, and the plane beside it.
type session struct {
	cfg    *Config
	args   []string // QEMU's arguments for this launch
	filter *seccompnotify.Filter
	dec    *seccompnotify.Decoder
	plane  *plane
	proc   *process
	// injected are the syscalls a memwatch scrub is making QEMU issue;
	// the plane expects them, the loop recognises them.
	injected *injected

	qemuPath string
	listener *seccompnotify.Listener
	gate     *seccompnotify.Gate
	// memHold holds QEMU's other threads still around a memory-slot,
	// executable mmap or mprotect call after start-up (memhold_linux.go).
	memHold *memHold
	exited  chan unix.WaitStatus
	// execDone is set by the loop once it has let the loader's execve of
	// QEMU through; every execve after that is QEMU's own. Only the loop
	// goroutine touches it.
	execDone bool
	// loaderFailed carries the loader's own failure report, if any.
	loaderFailed chan *loaderStatus
	// cgroup is QEMU's cgroup (nil: QEMU stays in kfv-run's), and
	// cgroupDetail what the lifecycle event says of it.
	cgroup       *vmCgroup
	cgroupDetail string

	// What the loop knows of QEMU's -daemonize (daemonize_linux.go):
	// the forks it let run, QEMU's process now, and those it was before.
	forks    int
	curPID   int
	leftPIDs []int
}

// landlock works out QEMU's Landlock wall for this exec and says in a
// lifecycle event what it enforces and what the kernel cannot; nil in
// audit mode or with landlock = "off". With "required" a kernel that
// falls short is a launch error: nothing starts.
func (s *session) landlock(path string) (*landlockPlan, *LaunchError) {
	mode, err := ParseLandlockMode(string(s.cfg.Landlock))
	if err != nil {
		return nil, launchErr(exitLaunch, "%w", err)
	}
	if s.cfg.Mode == Audit {
		if mode != LandlockOff {
			s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "audit mode: QEMU runs without a Landlock wall, so that every call it makes reaches kfv's decisions"})
		}
		return nil, nil
	}
	plan, missing, err := planLandlock(mode, landlockABI(), path)
	if err != nil {
		return nil, launchErr(exitLaunch, "%w", err)
	}
	prof := s.cfg.Policy.profile()
	kernelOpens(plan, prof)
	if why := landlockConflicts(plan, prof); len(why) > 0 {
		s.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: fmt.Sprintf("the profile %s lets QEMU make calls itself that its Landlock wall refuses: %s; if QEMU needs them, say landlock = \"off\" in the profile's [defaults]", prof.Source, strings.Join(why, ", "))})
	}
	switch {
	case mode == LandlockOff:
		s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "landlock = off: QEMU runs without a Landlock wall"})
	case plan == nil:
		s.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: "no Landlock wall: the kernel cannot enforce " + strings.Join(missing, ", ")})
	default:
		kind := event.KindLifecycle
		if len(missing) > 0 {
			kind = event.KindWarning
		}
		s.emit(&event.Event{Kind: kind, Source: "supervisor", Detail: "QEMU's Landlock wall: " + plan.describe(missing)})
	}
	return plan, nil
}

// start re-executes kfv as the loader, hands it the filter and QEMU's
// command line, and takes the listener from it.
func (s *session) start(path string) error {
	// QEMU's end of kfv's private monitor goes to the loader as its
	// first fd after the inherited ones, the number QEMU's command line
	// names; kfv's end is the plane's.
	var kfvEnd, qemuEnd *os.File
	if s.cfg.MonitorFD > 0 {
		var err error
		if kfvEnd, qemuEnd, err = monitorPair(); err != nil {
			return launchErr(exitLaunch, "%w", err)
		}
		defer qemuEnd.Close()
		s.plane.monConn = kfvEnd // closed by the plane, or by abort
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return s.abort(launchErr(exitLaunch, "create loader pipe: %w", err))
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return s.abort(launchErr(exitLaunch, "create loader status pipe: %w", err))
	}
	extra := []uintptr{cfgR.Fd(), statusW.Fd()}
	if qemuEnd != nil {
		extra = append([]uintptr{qemuEnd.Fd()}, extra...)
	}
	files, first := childFiles(without(inheritedFDs, s.cfg.HideFDs), extra...)
	if qemuEnd != nil && first != s.cfg.MonitorFD {
		cfgR.Close()
		cfgW.Close()
		statusR.Close()
		statusW.Close()
		return s.abort(launchErr(exitLaunch, "kfv's private monitor: QEMU's end would be fd %d, its command line names fd %d", first, s.cfg.MonitorFD))
	}
	cfgFD := first + len(extra) - 2
	argv := []string{"kfv-run", loaderArg, strconv.Itoa(cfgFD), strconv.Itoa(cfgFD + 1)}
	env := append(os.Environ(), loaderEnv)
	qemuArgv := append([]string{s.cfg.QEMU}, s.args...)
	s.qemuPath = path
	wall, lerr := s.landlock(path)
	if lerr != nil {
		cfgR.Close()
		cfgW.Close()
		statusR.Close()
		statusW.Close()
		return lerr
	}

	sys := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if s.cgroup != nil {
		// clone3 CLONE_INTO_CGROUP: the loader, then QEMU, never run
		// outside their cgroup.
		sys.UseCgroupFD, sys.CgroupFD = true, int(s.cgroup.fd.Fd())
	}
	if s.cgroupDetail != "" {
		s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: s.cgroupDetail})
	}
	started := make(chan error, 1)
	s.exited = make(chan unix.WaitStatus, 1)
	var cgErr error // set before started is sent
	go func() {
		// PR_SET_PDEATHSIG fires when the *thread* that forked exits.
		// This goroutine keeps its thread locked until QEMU is reaped and
		// exits with it, so QEMU dies exactly when kfv-run does.
		runtime.LockOSThread()
		attr := &syscall.ProcAttr{Env: env, Files: files, Sys: sys}
		pid, err := syscall.ForkExec("/proc/self/exe", argv, attr)
		if err != nil && sys.UseCgroupFD && (s.cfg.Cgroup == nil || s.cfg.Cgroup.Mode != CgroupRequired) {
			// A cgroup kfv could make but not start a process in (the
			// delegation rules want write access to cgroup.procs of the
			// common ancestor): QEMU starts in kfv-run's, as without one.
			cgErr = err
			sys.UseCgroupFD = false
			pid, err = syscall.ForkExec("/proc/self/exe", argv, attr)
		}
		if err != nil {
			started <- err
			return
		}
		s.proc.pid, s.proc.started = pid, pid
		started <- nil
		var ws unix.WaitStatus
		for {
			// Only this pid: a wait for any child would take the ptrace
			// stops of QEMU's threads while memwatch scrubs.
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err == nil && (ws.Stopped() || ws.Continued()) {
				continue // a scrub freezing QEMU, not its end
			}
			if err != nil {
				ws = unix.WaitStatus(exitLaunch << 8)
			}
			break
		}
		s.exited <- ws
	}()
	err = <-started
	if cgErr != nil {
		s.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: fmt.Sprintf("QEMU could not be started in its cgroup %s (clone3 CLONE_INTO_CGROUP: %v): it runs in kfv-run's, without the cgroup's limits, and a pause is SIGSTOP", s.cgroup.name, cgErr)})
	}
	cfgR.Close()
	statusW.Close()
	if err != nil {
		cfgW.Close()
		statusR.Close()
		return launchErr(exitLaunch, "start loader: %w", err)
	}

	b, err := json.Marshal(loaderConfig{Path: path, Argv: qemuArgv, Env: os.Environ(), Prog: seccompnotify.EncodeProg(s.filter.Prog), PIDSlots: s.filter.PIDSlots, Landlock: wall, Drop: s.runAs()})
	if err == nil {
		_, err = cfgW.Write(b)
	}
	cfgW.Close()
	if err != nil {
		statusR.Close()
		return s.abort(launchErr(exitLaunch, "send loader configuration: %w", err))
	}
	s.loaderFailed = make(chan *loaderStatus, 1)
	go func() {
		defer statusR.Close()
		b, err := io.ReadAll(statusR)
		var st loaderStatus
		if err != nil || len(b) == 0 || json.Unmarshal(b, &st) != nil {
			s.loaderFailed <- nil
			return
		}
		s.loaderFailed <- &st
	}()

	pidfd, err := unix.PidfdOpen(s.proc.pid, 0)
	if err != nil {
		return s.abort(launchErr(exitLaunch, "pidfd_open %d: %w", s.proc.pid, err))
	}
	s.proc.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
	s.proc.startedFD = s.proc.pidfd
	lf, err := seccompnotify.TakeListener(s.proc.pidfd, s.proc.pid, takeListenerTimeout)
	if err != nil {
		if st := s.loaderStatus(); st != nil {
			return s.abort(&LaunchError{Code: st.Code, Err: errors.New(strings.TrimPrefix(st.Msg, "kfv-run: "))})
		}
		return s.abort(launchErr(exitLaunch, "take seccomp listener: %w", err))
	}
	if err := s.attach(lf); err != nil {
		return s.abort(launchErr(exitLaunch, "%w", err))
	}
	return nil
}

// attach makes lf, the listener taken from the loading process, the
// session's listener, with the gate that answers it, and says so in the
// event stream. Standalone and emulator sessions share it and everything
// after it (the loop, the gate, the plane).
func (s *session) attach(lf *os.File) error {
	l, err := seccompnotify.NewListener(lf)
	if err != nil {
		lf.Close()
		return err
	}
	s.listener = l
	s.dec.PID = s.proc.pid // the loop has not started: no race
	s.curPID = s.proc.pid
	s.gate = &seccompnotify.Gate{
		Listener: l,
		Pidfd:    s.proc.pidfd,
		PID:      s.proc.pid,
		Audit:    s.cfg.Mode == Audit,
		Decide:   s.cfg.Policy.Decider.Decide,
		Report:   s.report,
		Observe:  s.plane.observe,
		Workers:  seccompnotify.NewWorkers(currentUmask, s.emitErr),
		// kfv-run --run-as: kfv stands in for the root QEMU gave up.
		DroppedRoot: s.cfg.RunAs.drop() != nil,
		Answered:    s.memHold.answered,
	}
	// The plane answers held calls through the same gate; it starts
	// after this.
	s.plane.gate = s.gate
	sync := "on"
	if err := l.SetSyncWakeUp(); err != nil {
		sync = "off (" + err.Error() + ")"
	}
	s.emit(&event.Event{
		Kind:   event.KindLifecycle,
		Source: "supervisor",
		Detail: fmt.Sprintf("starting %s under profile %s (%d BPF instructions), sync wake-up %s", s.qemuPath, s.cfg.Policy.profile().Source, len(s.filter.Prog), sync),
	})
	return nil
}

// loaderStatus waits for the loader's status report: nil when the loader
// exec'd QEMU or died without a word.
func (s *session) loaderStatus() *loaderStatus {
	select {
	case st := <-s.loaderFailed:
		return st
	case <-time.After(5 * time.Second):
		return nil
	}
}

// abort kills a loader that could not be brought up and waits for it.
func (s *session) abort(err *LaunchError) *LaunchError {
	if s.plane.monConn != nil {
		s.plane.monConn.Close() // the plane never ran
	}
	if s.proc.pid > 0 {
		if err := unix.Kill(s.proc.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			s.cfg.warn(fmt.Sprintf("kill loader %d: %v", s.proc.pid, err))
		}
		<-s.exited
	}
	return err
}

// exitStatus turns QEMU's wait status into kfv-run's exit status. If the
// loader failed before exec, its report is the error.
func (s *session) exitStatus(ws unix.WaitStatus) (int, error) {
	if !s.execDone || ws.Exited() && ws.ExitStatus() >= exitLaunch {
		if st := s.loaderStatusNow(); st != nil {
			return st.Code, &LaunchError{Code: st.Code, Err: errors.New(strings.TrimPrefix(st.Msg, "kfv-run: "))}
		}
	}
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return exitLaunch, fmt.Errorf("qemu ended with wait status %#x", uint32(ws))
}

func (s *session) loaderStatusNow() *loaderStatus {
	select {
	case st := <-s.loaderFailed:
		return st
	case <-time.After(time.Second):
		return nil
	}
}

// gateTimeout bounds how long a termination signal waits for kfv's
// monitor commands in flight.
const gateTimeout = 5 * time.Second

// forward passes a signal on to QEMU through its pidfd, so a recycled pid
// can never receive it. Before a signal that makes QEMU exit, kfv's own
// monitor commands are drained and stopped (qmp.Gate): QEMU 7.2 can hang
// in its exit path when one arrives as it shuts down. When QEMU only
// stops the guest (pausesOnShutdown), kfv keeps its monitor.
func (s *session) forward(sig syscall.Signal) {
	if sig == unix.SIGHUP && s.cfg.Hangup != nil {
		if err := s.cfg.Hangup(); err != nil {
			s.emitErr(fmt.Errorf("SIGHUP: reopen the event file: %w", err))
			return
		}
		s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "SIGHUP: event file reopened (not forwarded to QEMU)"})
		return
	}
	detail := "forwarded " + unix.SignalName(sig) + " to qemu"
	if (sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGHUP) && s.plane != nil && s.plane.out.isPaused() && !pausesOnShutdown(s.args) {
		// kfv holds QEMU stopped (a security pause): the signal would
		// stay pending until something resumed the QEMU judged
		// subverted, and a clean shutdown needs that QEMU to run. The
		// operator asked the VM to end: it ends, by SIGKILL, without
		// letting QEMU run again. No command of kfv's can reach QEMU's
		// exit path, so the monitor's gate needs no wait.
		s.plane.monGate.Close(0)
		s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor",
			Detail: unix.SignalName(sig) + " while kfv holds QEMU paused: QEMU is killed (SIGKILL) rather than resumed to shut down"})
		if err := s.proc.kill(); err != nil {
			s.emitErr(err)
		}
		return
	}
	if (sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGHUP) && s.plane != nil && !pausesOnShutdown(s.args) {
		if !s.plane.monGate.Close(gateTimeout) {
			detail += fmt.Sprintf(" (a command of kfv's was still in flight after %v)", gateTimeout)
		}
	}
	_, pidfd := s.proc.current()
	err := unix.PidfdSendSignal(int(pidfd.Fd()), sig, nil, 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		detail += ": " + err.Error()
	}
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: detail})
}

// pausesOnShutdown reports whether QEMU's arguments make it stop the
// guest instead of exiting when asked to shut down: -no-shutdown, or
// -action shutdown=pause (QEMU 6.0 and later).
func pausesOnShutdown(args []string) bool {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		switch strings.TrimPrefix(a[1:], "-") {
		case "no-shutdown":
			return true
		case "action":
			if i+1 < len(args) {
				for _, kv := range strings.Split(args[i+1], ",") {
					if kv == "shutdown=pause" {
						return true
					}
				}
			}
		}
	}
	return false
}
