// Command bench measures what kfv costs, side by side with bare QEMU,
// QEMU's own -sandbox and the smallest possible seccomp supervisor, and
// writes the results as docs/BENCHMARKS.md and docs/BENCHMARKS.json:
//
//	go run ./bench -out docs          (make bench)
//
// Every section runs its configurations interleaved (A B C A B C…): one
// warm-up round that is thrown away, then -rounds measured rounds, so
// that a machine that gets busier or quieter during the run shifts every
// configuration alike. Results are medians with min–max over the rounds,
// and ratios of medians.
//
// Sections:
//
//  1. Notification round trip: a C target times getppid calls notified
//     to the C floor supervisor (bench/c/floor.c) and to kfv-run with the
//     bench profiles (bench/profiles), pinned to one CPU, across CPUs and
//     unpinned, with and without SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
//  2. Guest workloads: the Linux guest's boot, disk and net workloads
//     under bare QEMU, QEMU -sandbox, kfv-run enforce and kfv-run audit,
//     and the raw-code guest's start to exit under KVM.
//  3. Supervisor footprint: CPU share and RSS of the kfv-run process while
//     the guest idles and while it runs the disk workload, and the rate of
//     notifications it received.
//  4. Flood: the C target makes notified calls from several threads at
//     stepped offered rates, under the floor and under kfv-run.
//     4b. Containment: the target's threads make calls kfv denies as
//     fast as they can, and the ladder of bench/profiles/contain.toml
//     pauses it; event bytes, the time from the first denial to the
//     pause, and the CPU of kfv-run and of the held target after it.
//  5. memwatch: scan cost per MiB watched, detection latency of tampers
//     and the watcher's CPU on an idle VM (memwatchtest.Measure on a bare
//     QEMU); kfv-run's own CPU with memwatch on and off is in section 3.
//  6. Density: 1, 10, 25 and 50 (-density) idle raw-code VMs under KVM
//     at once, bare and under kfv-run with memwatch on and off: the
//     kfv-runs' CPU in all and per VM, their RSS, the QEMUs' CPU, and
//     the time until every VM runs.
//
// Targets are compared in every run and printed when missed; nothing
// here is a test, and nothing fails on a missed target.
//
// It needs root (kfv-run and KVM), gcc, taskset and the guests built by
// "make guests"; KFV_RUN and KFV_GUESTS name kfv-run and the guest cache
// as for the integration tests.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"kfv/guest"
)

// config is what every section needs.
type config struct {
	kfvRun string // kfv-run binary
	qemu   string // qemu-system-x86_64 measured (guest.QEMUBinary: KFV_QEMU, else PATH)
	guests string // guest cache directory
	work   string // scratch directory, removed at the end
	rounds int    // measured rounds, after one warm-up
	floor  string // C floor supervisor binary
	target string // C target binary
	allow  string // bench profile: getppid inspected and allowed
	deny   string // bench profile: getppid inspected and denied
	// openProf and connectProf inspect and allow opens and connects,
	// which kfv then emulates.
	openProf, connectProf string
	containProf           string // a flood of denied getppid calls, paused by the ladder
	linux                 *guest.Linux
	accel                 string // the Linux guest's accelerator
	rawPath               string // raw-code hello guest
	diskMiB               int
	netMiB                int
	idleSec               int
	calls                 int   // getppid calls per round-trip run
	densityNs             []int // numbers of idle VMs of the density section
	verbose               bool
}

func main() {
	out := flag.String("out", "docs", "`dir` for BENCHMARKS.md and BENCHMARKS.json")
	rounds := flag.Int("rounds", 5, "measured rounds after the warm-up (at least 5 for a published table)")
	kfvRun := flag.String("kfv-run", envOr("KFV_RUN", "bin/kfv-run"), "kfv-run `binary` to measure")
	guests := flag.String("guests", envOr("KFV_GUESTS", ".cache/guests"), "guest cache `dir` (make guests)")
	only := flag.String("only", "", "run only these sections, comma-separated (rtt,workloads,raw,footprint,flood,containment,memwatch,density); the document is still written")
	density := flag.String("density", defaultDensity, "numbers of idle VMs of the density section, comma-separated (a shorter list for a quick run)")
	verbose := flag.Bool("v", false, "print every run")
	render := flag.String("render", "", "only rewrite BENCHMARKS.md in -out from this BENCHMARKS.json `file`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if *render != "" {
		if err := rerender(*render, *out); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be at least 1")
		os.Exit(2)
	}
	ns, err := parseDensity(*density)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	if err := run(*out, *rounds, *kfvRun, *guests, *only, ns, *verbose); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(out string, rounds int, kfvRun, guests, only string, densityNs []int, verbose bool) (err error) {
	started := time.Now()
	sections, err := parseOnly(only)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (kfv-run loads filters for QEMU, and KVM): run 'sudo make bench'")
	}
	work, err := os.MkdirTemp("", "kfv-bench-")
	if err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(work); rerr != nil && err == nil {
			err = fmt.Errorf("remove scratch dir: %w", rerr)
		}
	}()
	c := &config{rounds: rounds, work: work, diskMiB: 16, netMiB: 8, idleSec: 8, calls: 20000, densityNs: densityNs, verbose: verbose}
	if c.kfvRun, err = filepath.Abs(kfvRun); err != nil {
		return fmt.Errorf("kfv-run path: %w", err)
	}
	if _, err := os.Stat(c.kfvRun); err != nil {
		return fmt.Errorf("kfv-run: %w (run 'make build')", err)
	}
	if c.guests, err = filepath.Abs(guests); err != nil {
		return fmt.Errorf("guest cache path: %w", err)
	}
	if err := c.prepare(); err != nil {
		return err
	}

	r := &report{Rounds: rounds, Warmup: 1, Command: "make bench", Accel: c.accel, RTTCalls: c.calls, IdleS: c.idleSec}
	if r.Machine, err = describeMachine(c.qemu); err != nil {
		return err
	}
	if r.Machine.KFV, err = kfvVersion(c.kfvRun); err != nil {
		return err
	}
	r.Started = started.UTC()
	r.LoadBefore = loadAvg()
	logf("machine: %s, %d cores, kernel %s, %s, %s; load %s", r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Machine.QEMU, r.Machine.KVM, r.LoadBefore)

	if sections["rtt"] {
		logf("1. notification round trip")
		if r.RTT, err = c.roundTrip(); err != nil {
			return fmt.Errorf("round trip: %w", err)
		}
	}
	if sections["workloads"] || sections["footprint"] {
		logf("2. guest workloads and 3. supervisor footprint (Linux guest under %s)", c.accel)
		if r.Workloads, r.Footprint, r.Denials, err = c.workloads(sections["workloads"], sections["footprint"]); err != nil {
			return fmt.Errorf("guest workloads: %w", err)
		}
	}
	if sections["raw"] {
		logf("2b. raw-code guest under KVM")
		var den []*denialRow
		if r.RawKVM, den, r.RawKVMSkip, err = c.rawKVM(); err != nil {
			return fmt.Errorf("raw guest under KVM: %w", err)
		}
		r.Denials = append(r.Denials, den...)
	}
	if sections["flood"] {
		logf("4. flood")
		if r.Flood, err = c.flood(); err != nil {
			return fmt.Errorf("flood: %w", err)
		}
	}
	if sections["containment"] {
		logf("4b. flood containment")
		if r.Contain, err = c.containment(); err != nil {
			return fmt.Errorf("containment: %w", err)
		}
	}
	if sections["memwatch"] {
		logf("5. memwatch")
		if r.Memwatch, err = c.memwatchCosts(); err != nil {
			return fmt.Errorf("memwatch: %w", err)
		}
	}
	if sections["density"] {
		logf("6. density: %v idle VMs under KVM", c.densityNs)
		if r.Density, r.DensitySkip, err = c.density(); err != nil {
			return fmt.Errorf("density: %w", err)
		}
	}
	r.LoadAfter = loadAvg()
	r.Duration = time.Since(started).Round(time.Second).String()
	r.evaluate()
	for _, t := range r.Targets {
		if t.Met == "no" {
			fmt.Printf("bench: target missed: %s: %s (target %s)\n", t.Name, t.Value, t.Target)
		}
	}
	if err := r.write(out); err != nil {
		return err
	}
	logf("wrote %s and %s in %s", filepath.Join(out, "BENCHMARKS.md"), filepath.Join(out, "BENCHMARKS.json"), r.Duration)
	return nil
}

func parseOnly(only string) (map[string]bool, error) {
	all := []string{"rtt", "workloads", "raw", "footprint", "flood", "containment", "memwatch", "density"}
	m := make(map[string]bool)
	if only == "" {
		for _, s := range all {
			m[s] = true
		}
		return m, nil
	}
	for _, s := range splitComma(only) {
		ok := false
		for _, a := range all {
			ok = ok || a == s
		}
		if !ok {
			return nil, fmt.Errorf("-only %q: unknown section %q (want %v)", only, s, all)
		}
		m[s] = true
	}
	return m, nil
}

func logf(format string, args ...any) {
	fmt.Printf("bench: "+format+"\n", args...)
}
