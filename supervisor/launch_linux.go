//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"

	"kfv/orch"
	"kfv/policy"
	"kfv/profiles"
	"kfv/resources"
)

// Launch is the recipe both process models follow to put one QEMU
// command line under kfv: what kfv adds to the line (thread names for
// attribution, a private QMP monitor for reactions), the manager's QMP
// monitors it takes over (the L3 hook: QEMU listens on private paths,
// kfv on the manager's), and the server sockets QEMU inherits. A program
// that is not a QEMU system emulator gets nothing added.
type Launch struct {
	IsQEMU bool
	// Args are QEMU's arguments as it will get them.
	Args []string
	// MonitorFD is the fd that QEMU's end of kfv's private QMP monitor,
	// a connected socket (withMonitor), has in QEMU; 0 when none was
	// added.
	MonitorFD int
	// HeldStart says kfv added -S: the guest starts once kfv's monitor
	// answers (withHeldStart).
	HeldStart bool
	// Monitors are the VM's QMP monitors kfv serves for its manager, and
	// HideFDs the inherited fds they took over, which QEMU must not get.
	Monitors []MonitorProxy
	HideFDs  []int
	// ServerSockets are the paths of the listening unix sockets QEMU
	// inherits (libvirt's chardevs passed as fds), which it may remove.
	ServerSockets []string
	// Warnings are for the operator: monitors kfv does not proxy.
	Warnings []string

	// dir is the VM's directory under kfv's runtime directory, where
	// QEMU listens for the monitors kfv proxies ("" for none), and lock
	// its lock (rundir_linux.go).
	dir  string
	lock *os.File
	// kfvEnd and qemuEnd are the private monitor's socket pair, made
	// here for a QEMU that runs in this very process (the emulator
	// model); the standalone model makes one per QEMU it starts.
	kfvEnd, qemuEnd *os.File
}

// NewLaunch prepares QEMU's command line argv0 args (argv0 tells whether
// the program is QEMU). inPlace says this process becomes QEMU (the
// emulator model); otherwise QEMU is started as its child. Close releases
// what it made when QEMU is gone (or, in the emulator model, once the
// supervisor has its copies).
func NewLaunch(argv0 string, args []string, inPlace bool) (*Launch, error) {
	l := &Launch{IsQEMU: isQEMU(argv0), Args: args}
	if l.IsQEMU {
		dir, err := vmDirName()
		if err != nil {
			return nil, err
		}
		l.Args, l.Monitors, l.HideFDs, l.Warnings, err = proxyMonitors(args, dir)
		if err != nil {
			return nil, fmt.Errorf("QEMU's monitors: %w", err)
		}
		if len(l.Monitors) > 0 {
			// QEMU listens in dir for the monitors kfv proxies.
			if l.lock, err = makeVMDir(dir); err != nil {
				l.Close()
				return nil, err
			}
			l.dir = dir
		}
		if inPlace {
			if l.kfvEnd, l.qemuEnd, err = monitorPair(); err != nil {
				l.Close()
				return nil, err
			}
			l.MonitorFD = int(l.qemuEnd.Fd())
		} else {
			// The loader gets QEMU's end as its first fd after the
			// inherited ones (session.start).
			_, l.MonitorFD = childFiles(without(inheritedFDs, l.HideFDs))
		}
		l.Args, l.HeldStart = withHeldStart(withDebugThreads(withMonitor(l.Args, l.MonitorFD)))
	}
	l.ServerSockets = listeningUnixPaths(without(inheritedFDs, l.HideFDs))
	return l, nil
}

// MonitorDir is the VM's directory under kfv's runtime directory ("" for
// none): the private sockets of the monitors kfv proxies.
func (l *Launch) MonitorDir() string { return l.dir }

// Close closes the monitor listeners kfv still holds and the private
// monitor's sockets, and removes the VM's runtime directory.
func (l *Launch) Close() error {
	var errs []error
	for _, m := range l.Monitors {
		if err := m.Listener.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, f := range []*os.File{l.kfvEnd, l.qemuEnd} {
		if f != nil {
			f.Close()
		}
	}
	if l.dir != "" {
		errs = append(errs, os.RemoveAll(l.dir))
	}
	if l.lock != nil {
		l.lock.Close()
	}
	return errors.Join(errs...)
}

// Policy is what kfv enforces for one VM: the profile prepared for its
// command line, and the decider that applies it.
type Policy struct {
	// Profile is the profile in force; a reload (kfv-run reload) may
	// replace it while QEMU runs: read it with profile().
	Profile *profiles.Profile
	Decider orch.Decider
	mu      sync.Mutex // guards Profile once QEMU runs
	// runtime takes the resources a manager hands QEMU over its monitors
	// (nil: none are admitted).
	runtime *DynamicDecider
	// Daemonize says the command line has -daemonize: the profile admits
	// QEMU's daemonizing forks, and kfv follows the daemon.
	Daemonize bool
}

// profile returns the profile in force.
func (p *Policy) profile() *profiles.Profile {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Profile
}

// setProfile puts pr in force (reloadPolicy).
func (p *Policy) setProfile(pr *profiles.Profile) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Profile = pr
}

// NewPolicy resolves a profile (a built-in name or a file, with the
// overlay file stacked on it when overlay is not "") for one
// command line (qemu: the QEMU system emulator's binary, as named on the
// command line or found by the emulator, "" when the program is not QEMU;
// args as QEMU gets them) in QEMU's environment and working directory:
// the rules for the VM's own resources derived from the line (package
// policy), for the installation of that QEMU when it is not the system's,
// the server sockets it inherits, and the engine that applies them, which
// also admits what a manager hands QEMU at run time.
func NewPolicy(profile, overlay string, qemu string, args, env []string, cwd string, serverSockets []string) (*Policy, error) {
	p, err := profiles.ResolveWithOverlay(profile, overlay)
	if err != nil {
		if overlay != "" {
			return nil, fmt.Errorf("profile %s with overlay %s:\n%w", profile, overlay, err)
		}
		return nil, fmt.Errorf("profile %s:\n%w", profile, err)
	}
	if qemu != "" {
		var warnings []string
		p, warnings, err = policy.PrepareProfile(p, args, env, cwd, resources.HostFS())
		if err != nil {
			return nil, err
		}
		if bin, err := exec.LookPath(qemu); err == nil { // the launch reports a QEMU it cannot find
			p = policy.WithBundleRules(p, policy.QEMUBundle(bin))
		}
		p = policy.WithServerSocketRule(p, serverSockets)
		p.Warnings = append(p.Warnings, warnings...)
	} else {
		p = policy.PrepareProgram(p, env)
		p.Warnings = append(p.Warnings, "the program is not a QEMU system emulator: kfv adds nothing to its command line and derives no resources from it")
	}
	engine, err := orch.NewEngine(p, nil)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.Source, err)
	}
	dyn := NewDynamicDecider(engine)
	daemonize := slices.ContainsFunc(p.Rules, func(r profiles.VerdictRule) bool { return r.Daemonize })
	return &Policy{Profile: p, Decider: dyn, runtime: dyn, Daemonize: daemonize}, nil
}
