package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"kfv/event"
	"kfv/memwatch"
	"kfv/orch"
	"kfv/profiles"
	"kfv/resources"
	"kfv/supervisor"
)

var runFlags = []cli.Flag{
	&cli.StringFlag{Name: "profile", Value: "qemu", Usage: "built-in profile `NAME` or profile FILE (see 'kfv-run profile show')"},
	&cli.StringFlag{Name: "mode", Value: "enforce", Usage: "enforce: apply verdicts; audit: decide and log, but allow everything"},
	&cli.StringFlag{Name: "events", Value: "", Usage: "write the event stream (JSON lines) to `FILE`, appending; - for stdout (default: stderr)"},
	&cli.StringFlag{Name: "vm", Value: "", Usage: "VM `NAME` in events (default: QEMU's -name, else \"qemu\")"},
	&cli.DurationFlag{Name: "checkpoint-every", Usage: "keep a clean checkpoint of the VM, taken every `DURATION`, for the restart_checkpoint reaction (each one pauses the guest briefly; RAM and device state only, not the disks: see docs/profiles.md; default: none)"},
	&cli.IntFlag{Name: "max-restarts", Value: 3, Usage: "at most `N` restarts ordered by the orchestrator, with backoff"},
	&cli.BoolFlag{Name: "memwatch", Value: true, Usage: "watch QEMU's code and read-only data for tampering (memwatch); --memwatch=false turns it off"},
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
	cwd, err := os.Getwd()
	if err != nil {
		return cli.Exit(fmt.Sprintf("current directory: %v", err), 125)
	}
	qemuArgs, monSock := args[1:], ""
	var monitors []supervisor.MonitorProxy
	var hideFDs []int
	var monWarnings []string
	isQEMU := supervisor.IsQEMU(args[0])
	if isQEMU {
		// What kfv adds to QEMU's command line: thread names (for
		// attribution), kfv's place on the manager's QMP monitors (the
		// L3 hook: QEMU listens on private paths, kfv on the manager's)
		// and a private monitor of kfv's own (for reactions).
		monDir, sock, err := supervisor.PrivateMonitor()
		if err != nil {
			return cli.Exit(err.Error(), 125)
		}
		defer os.RemoveAll(monDir)
		monSock = sock
		qemuArgs, monitors, hideFDs, monWarnings, err = supervisor.ProxyMonitors(qemuArgs, monDir)
		if err != nil {
			return cli.Exit(fmt.Sprintf("QEMU's monitors: %v", err), 125)
		}
		defer func() {
			for _, m := range monitors {
				m.Listener.Close()
			}
		}()
		qemuArgs = supervisor.WithDebugThreads(supervisor.WithMonitor(qemuArgs, monSock))
	}
	p, dec, err := buildPolicy(c.String("profile"), isQEMU, qemuArgs, os.Environ(), cwd, supervisor.ListeningUnixPaths(withoutFDs(supervisor.InheritedFDs(), hideFDs)))
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	p.Warnings = append(p.Warnings, monWarnings...)
	out, closeOut, err := openEvents(c.String("events"))
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	vm := c.String("vm")
	if vm == "" {
		vm = vmName(args[1:])
	}
	ev := event.NewWriter(out)
	warn := func(s string) { fmt.Fprintln(os.Stderr, "kfv-run: warning: "+s) }
	for _, w := range p.Warnings {
		warn("profile " + p.Source + ": " + w)
	}
	if mode == supervisor.Audit {
		warn("audit mode: every call is allowed; verdicts are only logged")
	}
	status, runErr := supervisor.Run(&supervisor.Config{
		QEMU:            args[0],
		Args:            qemuArgs,
		Profile:         p,
		Decider:         dec,
		Mode:            mode,
		VM:              vm,
		Events:          ev,
		Warn:            warn,
		Monitor:         monSock,
		CheckpointEvery: c.Duration("checkpoint-every"),
		Memwatch:        memwatchConfig(isQEMU && c.Bool("memwatch"), c.Duration("memwatch-period")),
		MaxRestarts:     c.Int("max-restarts"),
		Monitors:        monitors,
		HideFDs:         hideFDs,
		Cwd:             cwd,
	})
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

// buildPolicy resolves a profile for one QEMU command line and
// environment (supervisor.PrepareProfile) and the engine that applies it.
// serverSockets are the paths of the listening unix sockets QEMU inherits
// (supervisor.ListeningUnixPaths), which it may remove.
func buildPolicy(profile string, isQEMU bool, qemuArgs, qemuEnv []string, cwd string, serverSockets []string) (*profiles.Profile, orch.Decider, error) {
	p, err := profiles.Resolve(profile)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %s:\n%w", profile, err)
	}
	if isQEMU {
		var warnings []string
		p, warnings, err = supervisor.PrepareProfile(p, qemuArgs, qemuEnv, cwd, resources.HostFS())
		if err != nil {
			return nil, nil, err
		}
		p = supervisor.WithServerSocketRule(p, serverSockets)
		p.Warnings = append(p.Warnings, warnings...)
	} else {
		p = supervisor.PrepareProgram(p, qemuEnv)
		p.Warnings = append(p.Warnings, "the program is not a QEMU system emulator: kfv adds nothing to its command line and derives no resources from it")
	}
	engine, err := orch.NewEngine(p, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %s: %w", p.Source, err)
	}
	// What the manager hands QEMU over the monitor at run time joins the
	// VM's resources (supervisor.DynamicDecider).
	return p, &supervisor.DynamicDecider{Decider: engine}, nil
}

// openEvents opens the event destination. Files are appended to, so a
// restart never erases earlier events.
func openEvents(dest string) (io.Writer, func() error, error) {
	switch dest {
	case "":
		return os.Stderr, func() error { return nil }, nil
	case "-":
		return os.Stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("--events: %w", err)
	}
	return f, f.Close, nil
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

// memwatchConfig is the watch over QEMU's memory, or nil for none.
func memwatchConfig(on bool, period time.Duration) *memwatch.Config {
	if !on {
		return nil
	}
	return &memwatch.Config{Period: period}
}

// withoutFDs returns fds less those in drop.
func withoutFDs(fds, drop []int) []int {
	var out []int
	for _, fd := range fds {
		if !slices.Contains(drop, fd) {
			out = append(out, fd)
		}
	}
	return out
}
