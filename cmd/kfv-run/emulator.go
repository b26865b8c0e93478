package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"kfv/event"
	"kfv/memwatch"
	"kfv/metrics"
	"kfv/supervisor"
)

// emulatorPrefix starts the names under which kfv is a QEMU binary: the
// link kfv-qemu-system-x86_64 wraps the real qemu-system-x86_64. Such a
// name takes no kfv flags; settings come from /etc/kfv/kfv.toml (see
// docs/libvirt.md).
const emulatorPrefix = "kfv-qemu-"

// defaultPath is searched for QEMU when the caller's environment has no
// PATH (libvirt passes a restricted environment).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// qemuName returns the QEMU binary kfv stands in for when invoked as
// argv0: "kfv-qemu-system-x86_64" → "qemu-system-x86_64", or QEMU's own
// name when kfv was put in QEMU's place (make install-divert:
// /usr/bin/qemu-system-x86_64, Proxmox's /usr/bin/kvm), which diverted
// says.
func qemuName(argv0 string) (name string, diverted, ok bool) {
	base := filepath.Base(argv0)
	switch {
	case strings.HasPrefix(base, emulatorPrefix):
		return strings.TrimPrefix(base, "kfv-"), false, true
	case strings.HasPrefix(base, "qemu-system-"), base == "qemu-kvm", base == "kvm":
		return base, true, true
	}
	return "", false, false
}

// divertedSuffix is what dpkg-divert appends to the path of the QEMU
// binary kfv took the place of (make install-divert).
const divertedSuffix = ".distrib"

// divertedQEMU is the QEMU binary put aside for kfv when kfv was invoked
// in its place as argv0: ARGV0.distrib, with argv0 looked up in path when
// it is a bare name. "" when there is none.
func divertedQEMU(argv0, path string) string {
	p := argv0
	if !strings.Contains(p, "/") {
		if path == "" {
			path = defaultPath
		}
		p = ""
		for _, dir := range filepath.SplitList(path) {
			if c := filepath.Join(dir, argv0); filepath.IsAbs(dir) && fileExists(c) {
				p = c
				break
			}
		}
		if p == "" {
			return ""
		}
	}
	if !filepath.IsAbs(p) {
		return "" // relative to a working directory the caller chose: never for the emulator
	}
	if c := p + divertedSuffix; fileExists(c) {
		return c
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// emulatorSetup is what stage 2 sends the supervisor besides QEMU's
// command line.
type emulatorSetup struct {
	Profile string `json:"profile"`
	Overlay string `json:"overlay,omitempty"`
	// EventsMaxSize and EventsKeep rotate the event file (0: never).
	EventsMaxSize int64  `json:"events_max_size,omitempty"`
	EventsKeep    int    `json:"events_keep,omitempty"`
	MetricsDir    string `json:"metrics_dir,omitempty"`
	// MemwatchCache is kfv.toml's memwatch_cache, resolved by the
	// supervisor (its user chooses the default).
	MemwatchCache string `json:"memwatch_cache,omitempty"`
	Mode          string `json:"mode"`
	Landlock      string `json:"landlock,omitempty"`
	Events        string `json:"events"` // the file
	VM            string `json:"vm"`
	Config        string `json:"config"` // where the settings came from
	// MonitorDir is the VM's runtime directory, where QEMU listens for
	// the monitors the supervisor proxies ("" for none): the supervisor
	// removes it when it is done.
	MonitorDir string `json:"monitor_dir"`
	// HeldStart says stage 2 added -S: the supervisor resumes the guest
	// once its monitor answers.
	HeldStart bool `json:"held_start,omitempty"`
	// ServerSockets are the paths of the listening unix sockets QEMU
	// inherits (libvirt's chardevs passed as fds), read in stage 2, which
	// holds them: the supervisor does not.
	ServerSockets []string `json:"server_sockets,omitempty"`
	// Warnings are stage 2's, for the event stream (monitors kfv does
	// not proxy).
	Warnings []string `json:"warnings,omitempty"`
}

// emulatorMain is stage 1: invoked under a QEMU name by libvirt (or
// anyone). Probes go straight to the real QEMU; everything else
// re-executes kfv with a clean environment (stage 2).
func emulatorMain(name string, diverted bool) int {
	args := os.Args[1:]
	if isProbe(args) {
		cfg, err := findConfig(os.Getenv)
		if err != nil {
			return emulatorFail(125, err)
		}
		qemu, code, err := findQEMU(cfg, name, diverted, os.Args[0], os.Getenv("PATH"))
		if err != nil {
			return emulatorFail(code, err)
		}
		// The caller's argv and environment, untouched: libvirt's
		// capability cache then holds exactly what plain QEMU reports.
		err = syscall.Exec(qemu, os.Args, os.Environ())
		return emulatorFail(126, fmt.Errorf("exec %s: %w", qemu, err))
	}
	return emulatorFail(125, supervisor.Reexec(args))
}

// emulatorStageMain is stage 2: the caller's process, now with kfv's own
// environment. It becomes QEMU under the filter, or fails before QEMU
// ran.
func emulatorStageMain() int {
	argv0, args, env, err := supervisor.StageArgs()
	if err != nil {
		return emulatorFail(125, err)
	}
	name, diverted, ok := qemuName(argv0)
	if !ok {
		return emulatorFail(125, fmt.Errorf("emulator stage started as %q, not as kfv-qemu-* or a QEMU's name", argv0))
	}
	getenv := lookupIn(env)
	cfg, err := findConfig(getenv)
	if err != nil {
		return emulatorFail(125, err)
	}
	qemu, code, err := findQEMU(cfg, name, diverted, argv0, getenv("PATH"))
	if err != nil {
		return emulatorFail(code, err)
	}
	vm := vmName(args)
	// What kfv adds to QEMU's command line and the manager's monitors it
	// takes over (supervisor.Launch): the supervisor serves libvirt's
	// socket, which QEMU no longer holds.
	l, err := supervisor.NewLaunch(argv0, args, true)
	if err != nil {
		return emulatorFail(125, err)
	}
	setup, err := json.Marshal(&emulatorSetup{Profile: cfg.Profile, Overlay: cfg.ProfileOverlay, EventsMaxSize: cfg.eventsMaxSize, EventsKeep: cfg.EventsKeep, MetricsDir: cfg.MetricsDir, MemwatchCache: cfg.MemwatchCache, Mode: cfg.Mode, Landlock: cfg.Landlock, Events: cfg.eventsPath(vm), VM: vm, Config: cfg.Source, MonitorDir: l.MonitorDir(), HeldStart: l.HeldStart,
		ServerSockets: l.ServerSockets, Warnings: l.Warnings})
	if err != nil {
		l.Close()
		return emulatorFail(125, fmt.Errorf("encode settings: %w", err))
	}
	lerr := supervisor.Emulate(&supervisor.Emulation{QEMU: qemu, Argv: append([]string{argv0}, l.Args...), Env: env, Setup: setup, Launch: l})
	return emulatorFail(lerr.Code, lerr)
}

// emulatorSupervisorMain is the detached supervisor of the emulator
// model.
func emulatorSupervisorMain() int {
	return supervisor.EmulatorSupervisorMain(func(req *supervisor.EmulatorRequest) (*supervisor.Config, func() error, error) {
		var st emulatorSetup
		if err := json.Unmarshal(req.Setup, &st); err != nil {
			return nil, nil, fmt.Errorf("decode settings: %w", err)
		}
		mode := supervisor.Mode(st.Mode)
		if mode != supervisor.Enforce && mode != supervisor.Audit {
			return nil, nil, fmt.Errorf("%s: mode %q: want enforce or audit", st.Config, st.Mode)
		}
		pol, err := supervisor.NewPolicy(st.Profile, st.Overlay, req.QEMU, req.Argv[1:], req.Env, req.Cwd, st.ServerSockets)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", st.Config, err)
		}
		p := pol.Profile
		f, err := event.OpenRotating(st.Events, st.EventsMaxSize, st.EventsKeep)
		if err != nil {
			return nil, nil, fmt.Errorf("event stream (events in %s): %w; the directory must exist and be writable by the user QEMU runs as (uid %d): see docs/libvirt.md", st.Config, err, os.Getuid())
		}
		ev := event.NewWriterOptions(f, event.DefaultOptions)
		// SIGHUP (logrotate's postrotate) reopens the event file; it
		// must never end the supervisor, which QEMU's protection rests on.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		hupDone := make(chan struct{})
		go func() {
			defer close(hupDone)
			for range hup {
				if err := f.Reopen(); err != nil {
					ev.Emit(&event.Event{Kind: event.KindError, VM: st.VM, Mode: st.Mode, Source: "supervisor", Detail: "SIGHUP: reopen the event file: " + err.Error()})
					continue
				}
				ev.Emit(&event.Event{Kind: event.KindLifecycle, VM: st.VM, Mode: st.Mode, Source: "supervisor", Detail: "SIGHUP: event file reopened"})
			}
		}()
		// Under libvirt QEMU is not kfv's child and runs as another user:
		// memwatch's scrub needs ptrace over it, which the supervisor
		// (forked by QEMU's process) has.
		cfg := &supervisor.Config{QEMU: req.QEMU, Args: req.Argv[1:], Policy: pol, Mode: mode, VM: st.VM, Events: ev, HeldStart: st.HeldStart, Landlock: landlockMode(st.Landlock, p.Landlock), Memwatch: &memwatch.Config{Cache: supervisor.MemwatchCacheDir(st.MemwatchCache)}, Version: version,
			Reload: func() (*supervisor.Policy, error) {
				return supervisor.NewPolicy(st.Profile, st.Overlay, req.QEMU, req.Argv[1:], req.Env, req.Cwd, st.ServerSockets)
			}}
		for _, w := range p.Warnings {
			cfg.Events.Emit(&event.Event{Kind: event.KindWarning, VM: st.VM, Mode: st.Mode, Source: "supervisor", Detail: "profile " + p.Source + ": " + w})
		}
		if st.MetricsDir != "" {
			m := metrics.New(st.VM, version)
			m.Stream(ev.Written, ev.Folded, ev.Lost)
			if err := m.Start(st.MetricsDir, metricsPeriod, ""); err != nil {
				cfg.Events.Emit(&event.Event{Kind: event.KindWarning, VM: st.VM, Mode: st.Mode, Source: "supervisor", Detail: err.Error() + fmt.Sprintf(": the VM runs without metrics (metrics_dir in %s must be writable by uid %d, or \"\")", st.Config, os.Getuid())})
			} else {
				cfg.Metrics = m
			}
		}
		for _, w := range st.Warnings {
			cfg.Events.Emit(&event.Event{Kind: event.KindWarning, VM: st.VM, Mode: st.Mode, Source: "supervisor", Detail: w})
		}
		if mode == supervisor.Audit {
			cfg.Events.Emit(&event.Event{Kind: event.KindWarning, VM: st.VM, Mode: st.Mode, Source: "supervisor", Detail: "audit mode: every call is allowed; verdicts are only logged"})
		}
		return cfg, func() error {
			var rmErr error
			if st.MonitorDir != "" {
				rmErr = os.RemoveAll(st.MonitorDir)
			}
			signal.Stop(hup)
			close(hup)
			<-hupDone
			cfg.Metrics.Stop()
			return errors.Join(ev.Close(), f.Close(), rmErr)
		}, nil
	})
}

// emulatorFail reports a failure before QEMU ran on stderr (libvirt
// copies it into the domain's log and its error message) and returns
// the exit status.
func emulatorFail(code int, err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfv: "+err.Error())
	}
	if code == 0 {
		code = 125
	}
	return code
}

// lookupIn is getenv over a saved environment: the first entry wins,
// as in glibc's getenv (what QEMU itself would see).
func lookupIn(env []string) func(string) string {
	return func(key string) string {
		for _, kv := range env {
			if k, v, ok := strings.Cut(kv, "="); ok && k == key {
				return v
			}
		}
		return ""
	}
}

// findQEMU returns the real QEMU: the configured binary, else the first
// name in path that is not kfv itself. Itself is told by device and
// inode, not by name: a link or copy named qemu-system-x86_64 earlier in
// PATH would otherwise make kfv exec itself forever.
func findQEMU(cfg *config, name string, diverted bool, argv0, path string) (string, int, error) {
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "", 125, fmt.Errorf("stat own binary: %w", err)
	}
	if cfg.QEMU != "" {
		fi, err := os.Stat(cfg.QEMU)
		switch {
		case err != nil:
			return "", 127, fmt.Errorf("qemu %s (in %s): %w", cfg.QEMU, cfg.Source, err)
		case os.SameFile(fi, self):
			return "", 125, fmt.Errorf("qemu %s (in %s) is kfv itself, not QEMU", cfg.QEMU, cfg.Source)
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			return "", 126, fmt.Errorf("qemu %s (in %s) is not an executable file", cfg.QEMU, cfg.Source)
		}
		return cfg.QEMU, 0, nil
	}
	if diverted {
		// In QEMU's place: the binary put aside for kfv is QEMU.
		if q := divertedQEMU(argv0, path); q != "" {
			fi, err := os.Stat(q)
			if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 && !os.SameFile(fi, self) {
				return q, 0, nil
			}
		}
	}
	if path == "" {
		path = defaultPath
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // a relative PATH entry depends on the cwd: never for the emulator
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 || os.SameFile(fi, self) {
			continue
		}
		return p, 0, nil
	}
	return "", 127, fmt.Errorf("%s not found in PATH %s (kfv itself excluded): install QEMU or set qemu = \"/path/to/%s\" in %s", name, path, name, cfg.Source)
}

// isProbe reports whether a QEMU command line only asks QEMU about
// itself, so kfv passes it through unsupervised: "-help" or "-version"
// alone, "-OPTION help" listings (after which QEMU exits, whatever else
// the line says), and "-machine none", a QEMU with no guest at all
// (libvirt's capability probe: -machine none,accel=kvm:tcg -qmp ...).
// With no guest there is no guest code to attack QEMU from, and
// supervising would only add start-up time and risk making libvirt's
// cached capabilities differ from plain QEMU's.
//
// "-help" and "-version" count only alone: elsewhere they could be the
// value of another option (-append -version) on a line that runs a VM.
func isProbe(args []string) bool {
	if len(args) == 1 {
		switch "-" + strings.TrimLeft(args[0], "-") {
		case "-help", "-h", "-version":
			return true
		}
	}
	for i := 0; i+1 < len(args); i++ {
		opt, val := "-"+strings.TrimLeft(args[i], "-"), args[i+1]
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		if helpOptions[opt] && (val == "help" || val == "?") {
			return true
		}
		if (opt == "-machine" || opt == "-M") && machineType(val) == "none" {
			return true
		}
	}
	return false
}

// helpOptions are the options whose value "help" makes QEMU 7.2 print a
// list and exit before any guest exists.
var helpOptions = map[string]bool{
	"-machine": true, "-M": true, "-cpu": true, "-device": true, "-accel": true,
	"-display": true, "-netdev": true, "-object": true, "-chardev": true, "-audiodev": true,
}

// machineType returns the machine type of a -machine value: the first
// element without "=", or type=.
func machineType(val string) string {
	for i, part := range strings.Split(val, ",") {
		if t, ok := strings.CutPrefix(part, "type="); ok {
			return t
		}
		if i == 0 && !strings.Contains(part, "=") {
			return part
		}
	}
	return ""
}
