package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"kfv/memwatch"
)

// report is everything one run measured; it is written as
// BENCHMARKS.json as is and rendered as BENCHMARKS.md.
type report struct {
	Started    time.Time `json:"started"`
	Duration   string    `json:"duration"`
	Command    string    `json:"command"`
	Machine    machine   `json:"machine"`
	LoadBefore string    `json:"load_before"`
	LoadAfter  string    `json:"load_after"`
	Rounds     int       `json:"rounds"`
	Warmup     int       `json:"warmup_rounds"`
	Accel      string    `json:"linux_guest_accel"`
	RTTCalls   int       `json:"round_trip_calls"`
	IdleS      int       `json:"idle_seconds"`

	RTT        []*rttRow      `json:"round_trip,omitempty"`
	Workloads  []*wlRow       `json:"workloads,omitempty"`
	RawKVM     *wlRow         `json:"raw_kvm,omitempty"`
	RawKVMSkip string         `json:"raw_kvm_skipped,omitempty"`
	Footprint  []*fpRow       `json:"footprint,omitempty"`
	Denials    []*denialRow   `json:"denials,omitempty"`
	Flood      *floodResult   `json:"flood,omitempty"`
	Contain    *containResult `json:"containment,omitempty"`
	Memwatch   []*mwRow       `json:"memwatch,omitempty"`
	Density    *densityResult `json:"density,omitempty"`
	// DensitySkip says why the density section did not run.
	DensitySkip string   `json:"density_skipped,omitempty"`
	Targets     []target `json:"targets"`
}

// target is one of kfv's performance targets compared with this run.
type target struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Value  string `json:"value"`
	Met    string `json:"met"` // yes, no, or n/a (not measured)
}

func met(ok bool, measured bool) string {
	switch {
	case !measured:
		return "n/a"
	case ok:
		return "yes"
	}
	return "no"
}

// evaluate compares the run with the targets.
func (r *report) evaluate() {
	rows := append([]*wlRow(nil), r.Workloads...)
	if r.RawKVM != nil {
		rows = append(rows, r.RawKVM)
	}
	for _, w := range rows {
		for _, cfg := range []string{cfgEnforce, cfgAudit} {
			c := w.cell(cfg)
			ok := c.Ratio != 0
			r.Targets = append(r.Targets, target{
				Name:   fmt.Sprintf("%s: %s, %s", w.Workload, w.Metric, cfg),
				Target: "≤ ×1.02 of bare QEMU",
				Value:  fmtRatio(c.Ratio),
				Met:    met(c.Ratio <= 1.02, ok),
			})
		}
	}
	for _, x := range r.RTT {
		if !x.kfv() || x.NotYet != "" {
			continue
		}
		ok := x.Ratio != 0
		r.Targets = append(r.Targets, target{
			Name:   fmt.Sprintf("round trip, %s, %s", x.Supervisor, x.Placement),
			Target: "≤ ×1.25 of the C floor, same wake mode",
			Value:  fmt.Sprintf("%s (%s µs against %s µs)", fmtRatio(x.Ratio), fmtNum(x.Mean.Median, 2), fmtNum(x.Mean.Median/x.Ratio, 2)),
			Met:    met(x.Ratio <= 1.25, ok),
		})
	}
	if x := r.Contain; x != nil {
		med, worst := "—", "—"
		if x.Latency.ok() {
			med, worst = fmtNum(x.Latency.Median, 1)+" ms", fmtNum(x.Latency.Max, 1)+" ms"
		}
		r.Targets = append(r.Targets, target{
			Name:   "flood containment: first denial to the ladder's pause, median",
			Target: "≤ 100 ms",
			Value:  med,
			Met:    met(x.Latency.Median <= containTarget, x.Latency.ok()),
		}, target{
			Name:   "flood containment: first denial to the ladder's pause, worst round",
			Target: "≤ 100 ms",
			Value:  worst,
			Met:    met(x.Latency.Max <= containTarget, x.Latency.ok()),
		})
	}
	for _, m := range r.Memwatch {
		if m.Skip != "" {
			continue
		}
		r.Targets = append(r.Targets, target{
			Name:   fmt.Sprintf("memwatch detection latency, %s (largest over the rounds' tampers)", m.Accel),
			Target: "≤ 100 ms",
			Value:  fmtNum(m.LatMax.Max, 1) + " ms",
			Met:    met(m.LatMax.Max <= 100, m.LatMax.ok()),
		}, target{
			Name:   fmt.Sprintf("memwatch CPU, idle VM, %s", m.Accel),
			Target: "< 1% of one core",
			Value:  fmtNum(m.CPU.Median, 2) + "%",
			Met:    met(m.CPU.Median < 1, m.CPU.ok()),
		})
	}
	if r.RawKVM != nil {
		// The density issue's bound for the raw guest's start-up,
		// from section 2's raw row (not measured again).
		c := r.RawKVM.cell(cfgEnforce)
		r.Targets = append(r.Targets, target{
			Name:   "raw KVM guest, QEMU start to exit, kfv enforce (memwatch on)",
			Target: "≤ ×1.10 of bare QEMU",
			Value:  fmtRatio(c.Ratio),
			Met:    met(c.Ratio <= 1.10, c.Ratio != 0),
		})
	}
	if d := r.Density; d != nil {
		x := d.row(densityTargetN, cfgEnforce)
		val, ok := "not measured (-density has no 50)", false
		if x != nil && x.KfvCPU.ok() {
			val, ok = fmtNum(x.KfvCPU.Median, 2)+"%", true
		}
		r.Targets = append(r.Targets, target{
			Name:   fmt.Sprintf("density: %d idle VMs, kfv-run CPU in all, memwatch on", densityTargetN),
			Target: fmt.Sprintf("≤ %.0f%% of one core", densityCPUTarget),
			Value:  val,
			Met:    met(ok && x.KfvCPU.Median <= densityCPUTarget, ok),
		})
		var worst *densityRow
		for _, x := range d.Rows {
			if x.RSS.ok() && (worst == nil || x.RSS.Median > worst.RSS.Median) {
				worst = x
			}
		}
		val = "—"
		if worst != nil {
			val = fmt.Sprintf("%s MiB (largest median, %d VMs, %s; Pss %s MiB)", fmtNum(worst.RSS.Median, 1), worst.VMs, worst.Config, fmtNum(worst.PSS.Median, 1))
		}
		r.Targets = append(r.Targets, target{
			Name:   "density: RSS per supervised VM (VmRSS of its kfv-run)",
			Target: fmt.Sprintf("≤ %.0f MiB", densityRSSTarget),
			Value:  val,
			Met:    met(worst != nil && worst.RSS.Median <= densityRSSTarget, worst != nil),
		})
	}
	for _, f := range r.Footprint {
		if f.Workload == "idle" {
			r.Targets = append(r.Targets, target{
				Name:   fmt.Sprintf("supervisor CPU, guest idle, %s", f.Mode),
				Target: "< 0.5% of one core",
				Value:  fmtNum(f.CPU.Median, 2) + "%",
				Met:    met(f.CPU.Median < 0.5, f.CPU.ok()),
			})
		}
		r.Targets = append(r.Targets, target{
			Name:   fmt.Sprintf("supervisor RSS (VmHWM), %s, %s", f.Workload, f.Mode),
			Target: "< 25 MiB",
			Value:  fmtNum(f.HWM.Max, 1) + " MiB (largest)",
			Met:    met(f.HWM.Max < 25, f.HWM.ok()),
		})
	}
}

func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || v == 0 {
		return "—"
	}
	return fmt.Sprintf("×%.3f", v)
}

// fmtSeries is "median (min–max)", with the failed rounds counted.
func fmtSeries(s *series, prec int) string {
	if s == nil {
		return "—"
	}
	out := "—"
	if s.ok() {
		out = fmt.Sprintf("%s (%s–%s)", fmtNum(s.Median, prec), fmtNum(s.Min, prec), fmtNum(s.Max, prec))
	}
	if n := len(s.Failures); n > 0 {
		out += fmt.Sprintf(" [%d failed]", n)
	}
	return out
}

func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "BENCHMARKS.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write BENCHMARKS.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "BENCHMARKS.md"), r.markdown(), 0o644); err != nil {
		return fmt.Errorf("write BENCHMARKS.md: %w", err)
	}
	return nil
}

func (r *report) markdown() []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# kfv benchmarks")
	p("")
	p("Written by `%s` (`go run ./bench -out docs`, sources in `bench/`); do not edit by hand.", r.Command)
	p("Every section runs its configurations interleaved (A B C A B C…): %d warm-up round, thrown away, then %d measured rounds.", r.Warmup, r.Rounds)
	p("Cells are the median over the rounds with min–max in parentheses; ratios are ratios of medians. `[N failed]` counts rounds that gave no value (the JSON says why).")
	p("")
	p("| | |")
	p("|---|---|")
	p("| date | %s (took %s) |", r.Started.Format("2006-01-02 15:04 MST"), r.Duration)
	p("| CPU | %s, %d cores |", r.Machine.CPU, r.Machine.Cores)
	p("| kernel | %s |", r.Machine.Kernel)
	p("| QEMU | %s |", r.Machine.QEMU)
	p("| KVM | %s |", r.Machine.KVM)
	p("| Linux guest accelerator | %s (KFV_LINUX_ACCEL) |", r.Accel)
	p("| kfv | %s, built with %s |", r.Machine.KFV, r.Machine.Go)
	p("| load average (1, 5, 15 min) | %s before, %s after |", r.LoadBefore, r.LoadAfter)
	p("")
	p("Reproduce with `make bench` (as root, after the README's setup). The numbers are only comparable within one run: the machine's load moves all of them.")
	p("")

	p("## Targets")
	p("")
	p("| what | target | this run | met |")
	p("|---|---|---|---|")
	for _, t := range r.Targets {
		p("| %s | %s | %s | %s |", t.Name, t.Target, t.Value, t.Met)
	}
	p("")

	if len(r.RTT) > 0 {
		p("## 1. Notification round trip")
		p("")
		p("A C program (`bench/c/target.c`) times %d `getppid` calls, each one notified to a supervisor, after %d untimed ones; a cell is the mean µs per call of one run. The *C floor* (`bench/c/floor.c`) answers with `SECCOMP_USER_NOTIF_FLAG_CONTINUE` and nothing else. *kfv allow* and *kfv deny* run the same target under `kfv-run --profile bench/profiles/allow.toml` (or `deny.toml`): receive, decode, decision by orch, answer (CONTINUE or EPERM) and one JSON event written to a file; the bench checks that every call got the expected answer and was logged. kfv sets `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` when the kernel has it, so its ratio is to the floor with sync wake-up; the ratio to the floor with the default wake-up is beside it. *Same CPU*: supervisor and target pinned to CPU %d; *across CPUs*: supervisor on CPU %d; *unpinned*: the scheduler decides. *No filter* is the call itself, without seccomp.", r.RTTCalls, warmupCalls, supervisedCPU, otherCPU)
		p("")
		p("| supervisor | placement | wake-up | µs per call | p99 µs | kfv/floor (sync) | kfv/floor (default) |")
		p("|---|---|---|---|---|---|---|")
		for _, x := range r.RTT {
			if x.NotYet != "" {
				p("| %s | — | — | %s | — | — | — |", x.Supervisor, x.NotYet)
				continue
			}
			if x.Op != "" {
				continue // the emulated calls have a table of their own
			}
			ratio, rd := "", ""
			if x.kfv() {
				ratio, rd = fmtRatio(x.Ratio), fmtRatio(x.RatioDefault)
			}
			p("| %s | %s | %s | %s | %s | %s | %s |", x.Supervisor, x.Placement, x.Wake, fmtSeries(x.Mean, 2), fmtSeries(x.P99, 1), ratio, rd)
		}
		p("")
		p("Emulated calls: an allowed open or connect is not answered with CONTINUE (another QEMU thread could rewrite its path or address between kfv's check and the kernel's read) but performed by kfv: an open is resolved for the caller with openat2, decided on the object reached, opened by kfv and installed in the caller with `SECCOMP_IOCTL_NOTIF_ADDFD`; a connect is made on a copy of the caller's socket (pidfd_getfd) with the address bytes that were decided on. The target times %d calls of each, natively and under `kfv-run --profile bench/profiles/open.toml` (or `connect.toml`), both on CPU %d; the connect is non-blocking and waits for completion with poll, as QEMU's slirp does. The bench checks that every call was emulated.", emulatedCalls, supervisedCPU)
		p("")
		p("| call | µs per call | p99 µs | ratio to the native call |")
		p("|---|---|---|---|")
		for _, x := range r.RTT {
			if x.Op == "" {
				continue
			}
			rn := ""
			if x.RatioNative != 0 {
				rn = fmtRatio(x.RatioNative)
			}
			p("| %s | %s | %s | %s |", x.Supervisor, fmtSeries(x.Mean, 2), fmtSeries(x.P99, 1), rn)
		}
		p("")
	}

	if len(r.Workloads) > 0 || r.RawKVM != nil || r.RawKVMSkip != "" {
		p("## 2. Guest workloads")
		p("")
		p("The project's Linux guest (`kfv/guest`, q35, 1 vCPU, 256 MiB) under %s, started four ways with the same QEMU arguments: bare, with `-sandbox %s`, under `kfv-run` with the built-in `qemu` profile in enforce mode, and in audit mode. *kernel start to /init* is the guest kernel's uptime when /init starts (10 ms resolution); *QEMU start to exit* is wall time on the host, from starting QEMU (or kfv-run) to its exit, with QEMU's own start-up and the guest's power-off. The disk workload writes and reads a raw image on virtio-blk with `dd oflag=direct` / `iflag=direct` (the guest's own timing, which includes generating and hashing the data); the net workload sends a stream with `nc` over virtio-net and QEMU's user networking to a listener on the host, which checks the byte count and hash. The raw-code guest (`BuildRaw`, prints a line and exits through isa-debug-exit) is timed from QEMU's start to its exit under KVM, over three times as many rounds (each takes a fraction of a second). Lower is better; the ratio is to bare QEMU.", r.Accel, sandboxOpt)
		p("")
		p("| workload | measure | %s |", strings.Join(guestConfigs, " | "))
		p("|---|---|%s", strings.Repeat("---|", len(guestConfigs)))
		rows := append([]*wlRow(nil), r.Workloads...)
		if r.RawKVM != nil {
			rows = append(rows, r.RawKVM)
		}
		for _, w := range rows {
			var cells []string
			for _, c := range w.Cells {
				s := fmtSeries(c.S, 0) + " " + c.S.Unit
				if w.Workload == "raw (KVM)" {
					s = fmtSeries(c.S, 1) + " " + c.S.Unit
				}
				if c.Config != cfgBare {
					s += " " + fmtRatio(c.Ratio)
				}
				cells = append(cells, s)
			}
			p("| %s | %s | %s |", w.Workload, w.Metric, strings.Join(cells, " | "))
		}
		if r.RawKVMSkip != "" {
			p("| raw (KVM) | QEMU start to exit | skipped: %s |%s", r.RawKVMSkip, strings.Repeat(" |", len(guestConfigs)-1))
		}
		p("")
		p("### Denials seen")
		p("")
		p("Decision events with verdict `deny` that kfv logged during the measured rounds (in audit mode they were logged and let through). A benign workload should have none: each one is a call the built-in profile does not yet admit.")
		p("")
		if len(r.Denials) == 0 {
			p("None measured.")
		} else {
			p("| configuration | workload | runs | denials | calls (rule that denied) |")
			p("|---|---|---|---|---|")
			for _, d := range r.Denials {
				p("| %s | %s | %d | %d | %s |", d.Config, d.Workload, d.Runs, d.Denials, fmtCalls(d.Calls))
			}
		}
		p("")
	}

	if len(r.Footprint) > 0 {
		p("## 3. Supervisor footprint")
		p("")
		p("The kfv-run process (every thread; QEMU is a separate process) during the Linux guest's runs, measured from the guest's KFV-BOOTED line to its KFV-RESULT line: the idle workload sleeps %d s, the disk workload is the one above. *CPU* is utime+stime from `/proc/PID/stat` over wall time, in %% of one core (clock ticks of 10 ms: ±%.2f%% over the idle window). *VmRSS* is the largest of samples taken every %v from `/proc/PID/status`, *VmHWM* the peak there when the workload ended. *Notifications/s* counts decision events in the window; *per run* counts every decision of the run, QEMU's start-up included. *enforce* runs with memwatch on (kfv-run's default, scanning every %v); *enforce, memwatch off* with `--memwatch=false`: the difference on the idle guest is memwatch's cost inside kfv-run.", r.IdleS, 100*0.01/float64(r.IdleS), sampleEvery, memwatch.DefaultPeriod)
		p("")
		p("| workload | mode | window s | CPU %% of one core | VmRSS max MiB | VmHWM MiB | notifications/s | notifications per run |")
		p("|---|---|---|---|---|---|---|---|")
		for _, f := range r.Footprint {
			p("| %s | %s | %s | %s | %s | %s | %s | %s |", f.Workload, f.Mode, fmtNum(f.WindowS.Median, 1), fmtSeries(f.CPU, 2), fmtSeries(f.RSS, 1), fmtSeries(f.HWM, 1), fmtSeries(f.NotifRate, 1), fmtSeries(f.Decisions, 0))
		}
		p("")
	}

	if r.Flood != nil {
		fl := r.Flood
		p("## 4. Throughput under a flood")
		p("")
		p("The C target calls `getppid` from %d threads on a fixed schedule for %.0f s per step, stepping the offered rate up (calls per second over all threads; *max* is unpaced, each thread calling back to back). A call's latency counts from its scheduled time when its thread is behind, so a supervisor that falls behind shows as latency, not as a quietly lower rate. Neither side is pinned. kfv runs the allow path (bench/profiles/allow.toml), the floor answers with sync wake-up.", fl.Threads, fl.Seconds)
		p("")
		var sups []string
		for s := range fl.Best {
			sups = append(sups, s)
		}
		sort.Strings(sups)
		p("| offered /s | C floor achieved /s | C floor p99 µs | kfv achieved /s | kfv p99 µs |")
		p("|---|---|---|---|---|")
		by := make(map[float64]map[string]*floodRow)
		var rates []float64
		for _, x := range fl.Rows {
			if by[x.Offered] == nil {
				by[x.Offered] = make(map[string]*floodRow)
				rates = append(rates, x.Offered)
			}
			by[x.Offered][x.Supervisor] = x
		}
		for _, rate := range rates {
			name := fmtNum(rate, 0)
			if rate == 0 {
				name = "max"
			}
			f, k := by[rate]["C floor"], by[rate]["kfv allow"]
			p("| %s | %s | %s | %s | %s |", name, fmtSeries(f.Achieved, 0), fmtSeries(f.P99, 0), fmtSeries(k.Achieved, 0), fmtSeries(k.P99, 0))
		}
		p("")
		p("Largest offered rate answered with a median p99 under 1 ms at that step and every step below it: C floor %s, kfv %s.", fmtBest(fl.Best["C floor"]), fmtBest(fl.Best["kfv allow"]))
		p("")
	}
	if x := r.Contain; x != nil {
		p("## 4b. Flood containment")
		p("")
		p("The C target's %d threads call `getppid` back to back under `kfv-run --profile bench/profiles/contain.toml` in enforce mode: every call is denied (EPERM, a finding of medium severity), and the profile's ladder, the built-in `repeated-denials` rule without its `link_down`, pauses the target at the third denial within ten seconds (`pause` of a program that is not QEMU is kfv's outside stop: SIGSTOP or the cgroup freezer, verified). *To the pause* runs from the first denial's event time to the time of the ladder's `pause` event, which kfv writes once the pause is carried out; the bench checks that its chain is the flood's denials. The flood is then held for %.0f s: *CPU* is utime+stime from `/proc/PID/stat` over that window, in %% of one core (clock ticks of 10 ms: ±%.2f%%), of kfv-run (every thread; memwatch, which watches QEMU only, does not run) and of the held target. *Event bytes* is the event file at the end of the round (rotated files included, start-up lines included), *while held* what was written during the window (the folded lines of the denials before the pause, written at the end of their second, and nothing else when the hold holds). *Denials* counts the denied calls in the stream (folded lines by their count), *after the pause* those decided after the pause's event (a folded line counts whole when its last call was), *counted by the target* the failures its threads counted in a file they map, read while they are held (up to one call a thread fewer: answered, but stopped before it counted). Each round ends with SIGTERM to kfv-run, which kills the target it holds; the bench checks that neither is left.", x.Threads, x.HoldS, 100*0.01/x.HoldS)
		p("")
		p("| first denial to the pause ms | event bytes | event bytes while held | kfv-run CPU %% of one core | target CPU %% of one core | denials | after the pause | counted by the target |")
		p("|---|---|---|---|---|---|---|---|")
		p("| %s | %s | %s | %s | %s | %s | %s | %s |", fmtSeries(x.Latency, 2), fmtSeries(x.EventBytes, 0), fmtSeries(x.HeldBytes, 0), fmtSeries(x.KfvCPU, 2), fmtSeries(x.TargetCPU, 2), fmtSeries(x.Denials, 0), fmtSeries(x.DenialsAfter, 0), fmtSeries(x.TargetDenials, 0))
		p("")
		if x.Enforced != "" {
			p("The pause, as the last round's reaction event says it was carried out: %s.", x.Enforced)
			p("")
		}
	}
	if len(r.Memwatch) > 0 {
		p("## 5. memwatch")
		p("")
		p("memwatch (`memwatchtest.Measure`) watching a bare QEMU that runs the raw-code loop guest (an idle VM), started afresh for each round; the watcher is the bench process itself, with kfv-run's defaults (period, tracking, sweep). *Watched* is what the baseline covers: the text, read-only data and RELRO of QEMU and its libraries. *Full scan* reads and hashes every watched page, per MiB watched; a *steady scan* is what runs every period (maps, pagemap, the pages that have a private copy, the sweep's slice). *CPU* is the bench process's CPU time over %v with the watcher running less the same without it, in %% of one core. *Detection* is the time from a write of one byte of QEMU's text (its entry point, through /proc/PID/mem, from outside) to the finding, over %d tampers a round spread over the scan's phase, each scrubbed before the next; *frozen* is how long a scrub kept QEMU stopped (median of the round). kfv-run's own CPU with memwatch on and off, on the idle Linux guest, is in section 3.", memwatchIdle, memwatchTampers)
		p("")
		p("| accelerator | tracking, period | watched MiB | full scan µs/MiB | steady scan µs | CPU %% of one core | detection median ms | detection max ms | scrub frozen ms |")
		p("|---|---|---|---|---|---|---|---|---|")
		for _, m := range r.Memwatch {
			if m.Skip != "" {
				p("| %s | skipped: %s | | | | | | | |", m.Accel, m.Skip)
				continue
			}
			p("| %s | %s, %s | %s | %s | %s | %s | %s | %s | %s |", m.Accel, m.Tracking, m.Period, fmtSeries(m.WatchedMiB, 1), fmtSeries(m.FullScan, 0), fmtSeries(m.Scan, 0), fmtSeries(m.CPU, 2), fmtSeries(m.LatMedian, 1), fmtSeries(m.LatMax, 1), fmtSeries(m.Frozen, 1))
		}
		p("")
	}
	if d := r.Density; d != nil || r.DensitySkip != "" {
		p("## 6. Density")
		p("")
		if d == nil {
			p("Skipped: %s.", r.DensitySkip)
			p("")
		}
	}
	if d := r.Density; d != nil {
		p("N idle VMs at once (N = %s), each the raw-code loop guest under KVM (`BuildRaw` with `Loop`, 16 MiB: it halts between the PIT's interrupts, about 18 a second, and prints a line every %d of them), started together: bare, under `kfv-run` in enforce mode with memwatch on (kfv-run's default) and with `--memwatch=false`, interleaved per round (the warm-up round runs the smallest N only). *All running* is from starting the first VM to the last one's first serial line. Once every VM runs (and, memwatch on, every kfv-run has written its memwatch baseline) and %v more, *CPU* is utime+stime from `/proc/PID/stat` over %.0f s, summed over the kfv-run processes (every thread) or over the QEMUs (their vCPUs' guest time included), in %% of one core; *per VM* divides by N (clock ticks of 10 ms: ±%.2f%% of one core for one process). *VmRSS* is kfv-run's at the window's end, mean over the N kfv-runs and the largest; *Pss* (`smaps_rollup`) divides the pages the kfv-runs share, such as kfv-run's text, between them. *Ratio* is the kfv-runs' and QEMUs' CPU over the bare QEMUs' CPU for the same N. Every run ends with SIGTERM to every VM; the bench checks that each ended with status 0 and that no QEMU was left. *Denials* and *reactions* count those in the event streams over the measured runs, without the built-in profile's refusal of the signal sender's command line, which QEMU asks for once when SIGTERM stops it.", joinInts(d.VMs), densityTicksPerLine, densitySettle, d.WindowS, 100*0.01/d.WindowS)
		p("")
		p("| VMs | configuration | all running s | kfv-run CPU %% in all | kfv-run CPU %% per VM | QEMU CPU %% in all | QEMU CPU %% per VM | kfv-run VmRSS MiB mean | VmRSS MiB largest | Pss MiB mean | CPU ratio to bare | denials | reactions |")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, x := range d.Rows {
			if x.Config == cfgBare {
				p("| %d | %s | %s | | | %s | %s | | | | | | |", x.VMs, x.Config, fmtSeries(x.Start, 2), fmtSeries(x.QemuCPU, 2), fmtSeries(x.QemuCPUPerVM, 2))
				continue
			}
			den := fmt.Sprintf("%d", x.Denials)
			if x.Denials+x.Reactions > 0 {
				den += " (" + fmtCalls(x.Calls) + ")"
			}
			p("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |", x.VMs, x.Config, fmtSeries(x.Start, 2), fmtSeries(x.KfvCPU, 2), fmtSeries(x.KfvCPUPerVM, 3), fmtSeries(x.QemuCPU, 2), fmtSeries(x.QemuCPUPerVM, 2), fmtSeries(x.RSS, 1), fmtSeries(x.RSSMax, 1), fmtSeries(x.PSS, 1), fmtRatio(x.Ratio), den, x.Reactions)
		}
		p("")
	}
	return b.Bytes()
}

func joinInts(v []int) string {
	var s []string
	for _, n := range v {
		s = append(s, fmt.Sprint(n))
	}
	return strings.Join(s, ", ")
}

func fmtBest(v float64) string {
	if v == 0 {
		return "none of the steps"
	}
	return fmtNum(v, 0) + "/s"
}

func fmtCalls(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// rerender writes BENCHMARKS.md in dir again from a BENCHMARKS.json, for
// changes to the rendering that need no new measurements.
func rerender(jsonPath, dir string) error {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return fmt.Errorf("read results: %w", err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("decode %s: %w", jsonPath, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "BENCHMARKS.md"), r.markdown(), 0o644); err != nil {
		return fmt.Errorf("write BENCHMARKS.md: %w", err)
	}
	return nil
}
