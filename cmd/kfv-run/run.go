package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"kfv/event"
	"kfv/memwatch"
	"kfv/metrics"
	"kfv/supervisor"
)

var runFlags = []cli.Flag{
	&cli.StringFlag{Name: "profile", Value: "qemu", Usage: "built-in profile `NAME` or profile FILE (see 'kfv-run profile show')"},
	&cli.StringFlag{Name: "profile-overlay", Usage: "stack the overlay `FILE` on the profile: rules for what the profile does not know (written by 'kfv-run profile learn'; see docs/profiles.md)"},
	&cli.StringFlag{Name: "mode", Value: "enforce", Usage: "enforce: apply verdicts; audit: decide and log, but allow everything"},
	&cli.StringFlag{Name: "events", Value: "", Usage: "write the event stream (JSON lines) to `FILE`, appending; - for stdout (default: stderr; at a terminal, one readable line per denial, finding, reaction, warning and error instead)"},
	&cli.StringFlag{Name: "events-max-size", Value: defaultEventsMaxSize, Usage: "rotate the --events FILE past `SIZE` (FILE.1, FILE.2...; 0: never); SIGHUP to kfv-run reopens it (logrotate)"},
	&cli.IntFlag{Name: "events-keep", Value: defaultEventsKeep, Usage: "rotated event files kept (`N`)"},
	&cli.StringFlag{Name: "metrics-dir", Usage: "write the VM's Prometheus metrics to `DIR`/kfv-VM.prom for node_exporter's textfile collector, removed when the VM ends; \"\" for none (default: " + defaultMetricsDir + " when it exists, as make install makes it)"},
	&cli.StringFlag{Name: "metrics-listen", Usage: "also serve the metrics on http://`ADDR`/metrics"},
	&cli.StringFlag{Name: "vm", Value: "", Usage: "VM `NAME` in events (default: QEMU's -name, else \"qemu\")"},
	&cli.DurationFlag{Name: "checkpoint-every", Usage: "keep a clean checkpoint of the VM, taken every `DURATION`, for the restart_checkpoint reaction (each one pauses the guest briefly; RAM and device state only, not the disks: see docs/profiles.md; default: none)"},
	&cli.IntFlag{Name: "max-restarts", Value: 3, Usage: "at most `N` restarts ordered by the orchestrator, with backoff"},
	&cli.BoolFlag{Name: "memwatch", Value: true, Usage: "watch QEMU's code and read-only data for tampering (memwatch); --memwatch=false turns it off"},
	&cli.StringFlag{Name: "landlock", Usage: "QEMU's Landlock wall: `required` (refuse to start on a kernel that cannot build all of it), best-effort (what the kernel offers, and a warning naming the rest) or off (default: the profile's [defaults] landlock, else best-effort)"},
	&cli.StringFlag{Name: "run-as", Usage: "run QEMU as `USER` when kfv-run is root: its groups, gid and uid, no capabilities; root keeps QEMU root (with a warning); not root, QEMU runs as the caller (default: run_as in " + configPath + ", else " + supervisor.DefaultRunAs + ")"},
	&cli.DurationFlag{Name: "memwatch-period", Value: memwatch.DefaultPeriod, Usage: "memwatch scan `PERIOD`: a tamper is found within about one period (cost: about 1.8% of a core at 80ms, docs/BENCHMARKS.md)"},
}

// runAction supervises QEMU: kfv-run [flags] -- QEMU [ARGS...].
func runAction(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return cli.Exit("no QEMU command given\nusage: kfv-run [flags] -- QEMU [ARGS...]", 125)
	}
	mode := supervisor.Mode(c.String("mode"))
	if mode != supervisor.Enforce && mode != supervisor.Audit {
		return cli.Exit(fmt.Sprintf("--mode %q: want enforce or audit", c.String("mode")), 125)
	}
	if _, err := supervisor.ParseLandlockMode(c.String("landlock")); err != nil {
		return cli.Exit("--"+err.Error(), 125)
	}
	runAs, err := resolveRunAs(c.String("run-as"), args[1:])
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	if mode == supervisor.Audit && c.String("run-as") == "" && runAs != nil && runAs.QEMUDrops == "" {
		runAs = supervisor.AuditRunAs()
	}
	cgroup, err := cgroupSetting()
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	mwCache, err := memwatchCacheSetting()
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return cli.Exit(fmt.Sprintf("current directory: %v", err), 125)
	}
	if !supervisor.IsDetached() && daemonizes(args, cwd) {
		// -daemonize: this process waits for QEMU's first process and
		// exits as it does; a detached kfv-run supervises (detach.go).
		if status := runForeground(); status != 0 {
			return cli.Exit("", status)
		}
		return nil
	}
	// What kfv adds to QEMU's command line and the manager's monitors it
	// takes over (supervisor.Launch), then the policy for that line.
	l, err := supervisor.NewLaunch(args[0], args[1:], false)
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	defer l.Close()
	qemu := ""
	if l.IsQEMU {
		qemu = args[0]
	}
	pol, err := supervisor.NewPolicy(c.String("profile"), c.String("profile-overlay"), qemu, l.Args, os.Environ(), cwd, l.ServerSockets)
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	p := pol.Profile
	p.Warnings = append(p.Warnings, l.Warnings...)
	maxSize, err := parseSize(c.String("events-max-size"))
	if err != nil {
		return cli.Exit("--events-max-size: "+err.Error(), 125)
	}
	if c.Int("events-keep") < 1 {
		return cli.Exit("--events-keep: want at least 1", 125)
	}
	out, closeOut, reopen, err := openEvents(c.String("events"), maxSize, c.Int("events-keep"))
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	vm := c.String("vm")
	if vm == "" {
		vm = vmName(args[1:])
	}
	var detached *detachedOutput
	if supervisor.IsDetached() {
		detached = newDetachedOutput(out)
		out = detached
	}
	ev := event.NewWriterOptions(out, event.DefaultOptions)
	var stderr io.Writer = os.Stderr
	if detached != nil {
		stderr = detached
	}
	warn := func(s string) { fmt.Fprintln(stderr, "kfv-run: warning: "+s) }
	if detached != nil && detached.log == nil && (c.String("events") == "" || c.String("events") == "-") {
		warn("-daemonize without --events FILE and no system log (" + "/dev/log" + "): events and errors after QEMU is ready are lost; give --events FILE")
	}
	var onDetach func(int)
	var errLog func(string)
	if detached != nil {
		toLog := c.String("events") == "" || c.String("events") == "-"
		onDetach = func(status int) {
			err := supervisor.Detached(status)
			if derr := detached.detach(toLog); derr != nil {
				err = errors.Join(err, derr)
			}
			if err != nil {
				ev.Emit(&event.Event{Kind: event.KindError, VM: vm, Mode: string(mode), Source: "supervisor", Detail: "detach from the caller: " + err.Error()})
				detached.logErr("VM " + vm + ": detach from the caller: " + err.Error())
			}
		}
		errLog = detached.logErr
	}
	for _, w := range p.Warnings {
		warn("profile " + p.Source + ": " + w)
	}
	if mode == supervisor.Audit {
		warn("audit mode: every call is allowed; verdicts are only logged")
	}
	met, err := startMetrics(c, vm, ev, warn)
	if err != nil {
		ev.Close()
		closeOut()
		return cli.Exit(err.Error(), 125)
	}
	defer func() {
		if err := met.Stop(); err != nil {
			warn("metrics: " + err.Error())
		}
	}()
	status, runErr := supervisor.Run(&supervisor.Config{
		QEMU:            args[0],
		Args:            l.Args,
		Policy:          pol,
		Mode:            mode,
		VM:              vm,
		Events:          ev,
		Warn:            warn,
		MonitorFD:       l.MonitorFD,
		HeldStart:       l.HeldStart,
		Landlock:        landlockMode(c.String("landlock"), p.Landlock),
		CheckpointEvery: c.Duration("checkpoint-every"),
		Memwatch:        memwatchConfig(l.IsQEMU && c.Bool("memwatch"), c.Duration("memwatch-period"), mwCache),
		MaxRestarts:     c.Int("max-restarts"),
		Monitors:        l.Monitors,
		HideFDs:         l.HideFDs,
		Cwd:             cwd,
		RunAs:           runAs,
		Detached:        onDetach,
		ErrLog:          errLog,
		Hangup:          reopen,
		Metrics:         met,
		Cgroup:          cgroup,
		Version:         version,
		Reload: func() (*supervisor.Policy, error) {
			return supervisor.NewPolicy(c.String("profile"), c.String("profile-overlay"), qemu, l.Args, os.Environ(), cwd, l.ServerSockets)
		},
	})
	if runErr != nil && detached != nil {
		// Nobody may read stderr any more: the event stream and the log.
		ev.Emit(&event.Event{Kind: event.KindError, VM: vm, Mode: string(mode), Source: "supervisor", Detail: runErr.Error()})
		detached.logErr("VM " + vm + ": " + runErr.Error())
	}
	evErr := ev.Close()
	if evErr == nil {
		evErr = closeOut()
	}
	if evErr != nil {
		fmt.Fprintln(os.Stderr, "kfv-run: event stream: "+evErr.Error())
	}
	if runErr != nil {
		var le *supervisor.LaunchError
		if errors.As(runErr, &le) {
			return cli.Exit(le.Error(), le.Code)
		}
		fmt.Fprintln(os.Stderr, "kfv-run: "+runErr.Error())
	}
	if status != 0 {
		return cli.Exit("", status)
	}
	if evErr != nil {
		// QEMU succeeded but the record of what happened is incomplete.
		return cli.Exit("", 125)
	}
	return nil
}

// openEvents opens the event destination. Files are appended to, so a
// restart never erases earlier events.
func openEvents(dest string, maxSize int64, keep int) (w io.Writer, closeOut, reopen func() error, err error) {
	none := func() error { return nil }
	switch dest {
	case "":
		if isTerminal(int(os.Stderr.Fd())) {
			return &terminalEvents{w: os.Stderr}, none, nil, nil
		}
		return os.Stderr, none, nil, nil
	case "-":
		return os.Stdout, none, nil, nil
	}
	f, err := event.OpenRotating(dest, maxSize, keep)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--events: %w", err)
	}
	return f, f.Close, f.Reopen, nil
}

// vmName takes the VM's name from QEMU's -name option: "-name foo",
// "-name guest=foo,debug-threads=on" or "-name foo,process=bar".
func vmName(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-name" && args[i] != "--name" {
			continue
		}
		for j, part := range strings.Split(args[i+1], ",") {
			if v, ok := strings.CutPrefix(part, "guest="); ok {
				return v
			}
			if j == 0 && !strings.Contains(part, "=") && part != "" {
				return part
			}
		}
	}
	return "qemu"
}

// memwatchConfig is the watch over QEMU's memory, or nil for none;
// cache is the baseline cache's directory ("" for none).
func memwatchConfig(on bool, period time.Duration, cache string) *memwatch.Config {
	if !on {
		return nil
	}
	return &memwatch.Config{Period: period, Cache: cache}
}

// memwatchCacheSetting is memwatch's baseline cache directory from
// memwatch_cache in the system configuration: "" when it is "off", the
// default when it is unset (or the file may not be read by a kfv-run
// that is not root).
func memwatchCacheSetting() (string, error) {
	cfg, err := findConfig(os.Getenv)
	if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
		return supervisor.MemwatchCacheDir(""), nil
	}
	if err != nil {
		return "", err
	}
	return supervisor.MemwatchCacheDir(cfg.MemwatchCache), nil
}

// landlockMode is the operator's setting when there is one, else the
// profile's ("" for neither: best-effort).
func landlockMode(operator, profile string) supervisor.LandlockMode {
	if operator != "" {
		return supervisor.LandlockMode(operator)
	}
	return supervisor.LandlockMode(profile)
}

// resolveRunAs is who QEMU runs as: --run-as, else run_as in the system
// configuration, else the default (supervisor.ResolveRunAs).
func resolveRunAs(flag string, qemuArgs []string) (*supervisor.RunAs, error) {
	if flag != "" || os.Geteuid() != 0 {
		return supervisor.ResolveRunAs(flag, qemuArgs)
	}
	cfg, err := findConfig(os.Getenv)
	if err != nil {
		return nil, err
	}
	r, err := supervisor.ResolveRunAs(cfg.RunAs, qemuArgs)
	if err != nil && cfg.RunAs != "" {
		return nil, fmt.Errorf("%s: run_as: %w", cfg.Source, err)
	}
	return r, err
}

// cgroupSetting is QEMU's cgroup setting: cgroup, cgroup_pids_max and
// cgroup_memory_max in the system configuration, else the defaults. A
// kfv-run that is not root and may not read the system file (root's
// alone) gets the defaults, as it gets its own user.
func cgroupSetting() (*supervisor.Cgroup, error) {
	cfg, err := findConfig(os.Getenv)
	if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
		return &supervisor.Cgroup{Mode: supervisor.CgroupBestEffort}, nil
	}
	if err != nil {
		return nil, err
	}
	if cfg.cgroup == nil { // the defaults, never validated
		return &supervisor.Cgroup{Mode: supervisor.CgroupBestEffort}, nil
	}
	return cfg.cgroup, nil
}

// defaultMetricsDir is where a root kfv-run writes its VMs' metrics by
// default, for node_exporter's textfile collector.
const defaultMetricsDir = "/var/lib/kfv/metrics"

// defaultMetrics is the metrics directory when none is configured:
// defaultMetricsDir when it exists (make install makes it), else none.
func defaultMetrics() string {
	if fi, err := os.Stat(defaultMetricsDir); err == nil && fi.IsDir() {
		return defaultMetricsDir
	}
	return ""
}

// metricsPeriod is how often a VM's metrics file is rewritten, when
// something changed (node_exporter is typically scraped every 15 s).
const metricsPeriod = 10 * time.Second

// startMetrics starts the VM's metrics as the flags say. A directory the
// user named that cannot be written is an error; the default one only a
// warning: metrics are not worth a VM that does not start.
func startMetrics(c *cli.Context, vm string, ev *event.Writer, warn func(string)) (*metrics.VM, error) {
	dir, listen := c.String("metrics-dir"), c.String("metrics-listen")
	asked := c.IsSet("metrics-dir")
	if !asked {
		dir = defaultMetrics()
	}
	if dir == "" && listen == "" {
		return nil, nil
	}
	m := metrics.New(vm, version)
	m.Stream(ev.Written, ev.Folded, ev.Lost)
	if err := m.Start(dir, metricsPeriod, listen); err != nil {
		m.Stop()
		if asked || listen != "" {
			return nil, fmt.Errorf("--metrics-dir/--metrics-listen: %w", err)
		}
		warn(err.Error() + ": the VM runs without metrics (--metrics-dir \"\" says so quietly)")
		return nil, nil
	}
	return m, nil
}
