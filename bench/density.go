package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kfv/event"
	"kfv/guest"
)

const (
	// densityWindow is the measured window of every density run: 300
	// clock ticks of one process, so for one VM one tick is 0.33% of
	// one core; per VM, the sums over N processes are finer. memwatch
	// scans every 80 ms, so the window holds many scans. Three seconds
	// keep the section near six minutes at -rounds 5 on two cores,
	// where starting 50 supervised VMs takes most of the rest.
	densityWindow = 3 * time.Second
	// densitySettle is waited once every VM runs (and, memwatch on, has
	// its baseline) before the window opens.
	densitySettle = 500 * time.Millisecond
	// densityStartBound is how long N VMs may take to run.
	densityStartBound = 2 * time.Minute
	// densityStopBound is how long a VM may take to end after SIGTERM
	// before it is killed (and the run fails).
	densityStopBound = 30 * time.Second
	// densityTicksPerLine makes the idle VM print a tick line every 255
	// PIT interrupts (14 s): it halts between the timer's interrupts and
	// hardly talks.
	densityTicksPerLine = 255
	// densityCPUTarget is the target for 50 idle VMs, kfv-run's CPU in
	// all with memwatch on, % of one core; densityRSSTarget the target
	// for the RSS of one kfv-run, MiB.
	densityCPUTarget = 5.0
	densityRSSTarget = 10.0
	densityTargetN   = 50
)

// defaultDensity is the numbers of VMs of the density section.
const defaultDensity = "1,10,25,50"

// densityConfigs are the configurations of the density section, in the
// order every round runs them.
var densityConfigs = []string{cfgBare, cfgEnforce, cfgEnforceNoMW}

// densityRow is N idle VMs under one configuration over the measured
// rounds. The kfv-run fields are nil for bare QEMU.
type densityRow struct {
	VMs    int    `json:"vms"`
	Config string `json:"config"`
	// Start is from starting the first VM to the last VM's first serial
	// line (every QEMU runs its guest).
	Start *series `json:"start_to_all_running_s"`
	// KfvCPU is utime+stime of every kfv-run (every thread) over the
	// window, summed, in % of one core; KfvCPUPerVM the same over N.
	KfvCPU      *series `json:"kfv_cpu_pct,omitempty"`
	KfvCPUPerVM *series `json:"kfv_cpu_per_vm_pct,omitempty"`
	// QemuCPU and QemuCPUPerVM are the same for the QEMUs (their vCPUs'
	// guest time included).
	QemuCPU      *series `json:"qemu_cpu_pct"`
	QemuCPUPerVM *series `json:"qemu_cpu_per_vm_pct"`
	// RSS is the mean VmRSS of the kfv-run processes at the window's
	// end, RSSMax the largest; PSS the mean Pss (smaps_rollup: pages
	// shared between the kfv-runs, such as kfv-run's text, divided
	// between them).
	RSS    *series `json:"kfv_vmrss_mean_mib,omitempty"`
	RSSMax *series `json:"kfv_vmrss_max_mib,omitempty"`
	PSS    *series `json:"kfv_pss_mean_mib,omitempty"`
	// Ratio is (kfv-runs' CPU + QEMUs' CPU) over bare QEMUs' CPU, for
	// the same N, medians.
	Ratio float64 `json:"cpu_ratio_to_bare"`
	// Denials and Reactions count, over every measured run, the denials
	// and reactions in the VMs' event streams, except the built-in
	// profile's refusal of the signal sender's command line, which
	// QEMU asks for once when it is stopped with SIGTERM.
	Denials   int            `json:"denials"`
	Reactions int            `json:"reactions"`
	Calls     map[string]int `json:"calls,omitempty"` // `syscall (rule)` or `reaction (rule)` → count
}

// densityResult is the density section.
type densityResult struct {
	VMs     []int         `json:"vms"`
	WindowS float64       `json:"window_s"`
	Rows    []*densityRow `json:"rows"`
}

func (d *densityResult) row(n int, cfg string) *densityRow {
	for _, r := range d.Rows {
		if r.VMs == n && r.Config == cfg {
			return r
		}
	}
	return nil
}

// densityRun is what one run of N VMs measured.
type densityRun struct {
	startS           float64
	kfvTicks, qTicks int64
	window           float64 // s
	rssMean, rssMax  float64 // MiB
	pssMean          float64 // MiB
	denials          []string
	reactions        []string
}

// parseDensity parses the -density list.
func parseDensity(s string) ([]int, error) {
	var ns []int
	for _, f := range splitComma(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-density %q: %q is not a number of VMs (at least 1)", s, f)
		}
		ns = append(ns, n)
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("-density %q: no number of VMs", s)
	}
	return ns, nil
}

// density starts N idle raw-code VMs under KVM at once, for every N and
// configuration, and measures kfv-run's CPU and memory and the QEMUs'
// CPU while they idle. It returns the reason instead when KVM is not
// usable here.
func (c *config) density() (*densityResult, string, error) {
	if p := kvmProblem(); p != "" {
		logf("  skipped: %s", p)
		return nil, p, nil
	}
	img, err := guest.BuildRaw(c.guests, guest.RawOptions{Loop: true, TicksPerLine: densityTicksPerLine})
	if err != nil {
		return nil, "", fmt.Errorf("raw loop guest: %w", err)
	}
	res := &densityResult{VMs: c.densityNs, WindowS: densityWindow.Seconds()}
	for _, n := range c.densityNs {
		for _, cfg := range densityConfigs {
			r := &densityRow{VMs: n, Config: cfg, Start: newSeries("s"), QemuCPU: newSeries("%"), QemuCPUPerVM: newSeries("%")}
			if isKfv(cfg) {
				r.KfvCPU, r.KfvCPUPerVM = newSeries("%"), newSeries("%")
				r.RSS, r.RSSMax, r.PSS = newSeries("MiB"), newSeries("MiB"), newSeries("MiB")
				r.Calls = make(map[string]int)
			}
			res.Rows = append(res.Rows, r)
		}
	}
	for round := 0; round <= c.rounds; round++ {
		for _, n := range c.densityNs {
			// The warm-up round only runs the smallest N: it warms
			// the page cache and KVM, and the section stays short.
			if round == 0 && n != c.densityNs[0] {
				continue
			}
			for _, cfg := range densityConfigs {
				m, err := c.densityOnce(img, n, cfg)
				tag := fmt.Sprintf("density %d VMs, %s, round %d", n, cfg, round)
				if err != nil {
					logf("  %s: %v", tag, err)
				} else if c.verbose {
					logf("  %s: all running in %.2f s, kfv-run CPU %.2f%%, QEMU CPU %.2f%%, kfv-run VmRSS %.1f MiB (largest %.1f), Pss %.1f MiB, %d denials, %d reactions",
						tag, m.startS, pct(m.kfvTicks, m.window), pct(m.qTicks, m.window), m.rssMean, m.rssMax, m.pssMean, len(m.denials), len(m.reactions))
				}
				if round == 0 {
					continue
				}
				r := res.row(n, cfg)
				if err != nil {
					r.Start.fail("round %d: %v", round, err)
					continue
				}
				r.Start.add(m.startS)
				r.QemuCPU.add(pct(m.qTicks, m.window))
				r.QemuCPUPerVM.add(pct(m.qTicks, m.window) / float64(n))
				if isKfv(cfg) {
					r.KfvCPU.add(pct(m.kfvTicks, m.window))
					r.KfvCPUPerVM.add(pct(m.kfvTicks, m.window) / float64(n))
					r.RSS.add(m.rssMean)
					r.RSSMax.add(m.rssMax)
					r.PSS.add(m.pssMean)
					r.Denials += len(m.denials)
					r.Reactions += len(m.reactions)
					for _, k := range append(m.denials, m.reactions...) {
						r.Calls[k]++
					}
				}
			}
		}
	}
	for _, r := range res.Rows {
		for _, s := range []*series{r.Start, r.KfvCPU, r.KfvCPUPerVM, r.QemuCPU, r.QemuCPUPerVM, r.RSS, r.RSSMax, r.PSS} {
			if s != nil {
				s.finish()
			}
		}
	}
	for _, r := range res.Rows {
		bare := res.row(r.VMs, cfgBare)
		if r.Config == cfgBare || !bare.QemuCPU.ok() || bare.QemuCPU.Median == 0 || !r.KfvCPU.ok() {
			continue
		}
		r.Ratio = (r.KfvCPU.Median + r.QemuCPU.Median) / bare.QemuCPU.Median
	}
	return res, "", nil
}

// pct is ticks over window seconds in % of one core.
func pct(ticks int64, window float64) float64 {
	if window <= 0 {
		return 0
	}
	return 100 * float64(ticks) / userHZ / window
}

// densityVM is one VM of a density run.
type densityVM struct {
	cmd     *exec.Cmd
	pid     int // kfv-run, or QEMU when bare
	qemu    int // QEMU's pid
	events  string
	running chan struct{} // closed at the first serial line
	exited  chan error
	stderr  *lockedBuffer
}

// densityOnce starts n VMs under cfg at once, waits until every one
// runs, measures the window and stops them all, checking that each ended
// with status 0 and left no process behind.
func (c *config) densityOnce(img string, n int, cfg string) (m densityRun, err error) {
	vms := make([]*densityVM, 0, n)
	stopped := false
	defer func() {
		if !stopped {
			if serr := stopDensity(vms); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		for _, vm := range vms {
			if vm.events != "" {
				if rerr := removeEvents(vm.events); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}
	}()
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		vm := &densityVM{running: make(chan struct{}), exited: make(chan error, 1), stderr: &lockedBuffer{}}
		args := append(guest.RawArgs(img, "kvm"), "-name", fmt.Sprintf("d%d", i))
		if isKfv(cfg) {
			vm.events = filepath.Join(c.work, fmt.Sprintf("density-%d-events.jsonl", i))
			if err := removeEvents(vm.events); err != nil {
				return m, err
			}
		}
		argv := c.guestArgv(cfg, vm.events, args)
		vm.cmd = exec.Command(argv[0], argv[1:]...)
		vm.cmd.Stderr = vm.stderr
		stdout, err := vm.cmd.StdoutPipe()
		if err != nil {
			return m, fmt.Errorf("VM %d: stdout pipe: %w", i, err)
		}
		if err := vm.cmd.Start(); err != nil {
			return m, fmt.Errorf("VM %d: start %s: %w", i, filepath.Base(argv[0]), err)
		}
		vm.pid = vm.cmd.Process.Pid
		vms = append(vms, vm)
		go func() {
			sc := bufio.NewScanner(stdout)
			first := true
			for sc.Scan() {
				if first && strings.Contains(sc.Text(), strings.TrimSpace(guest.DefaultRawLoopMessage)) {
					close(vm.running)
					first = false
				}
			}
			// Drain what is left so that the VM never blocks on
			// its serial port, then reap it.
			io.Copy(io.Discard, stdout)
			vm.exited <- vm.cmd.Wait()
		}()
	}
	deadline := time.After(densityStartBound)
	for i, vm := range vms {
		select {
		case <-vm.running:
		case werr := <-vm.exited:
			vm.exited <- werr
			return m, fmt.Errorf("VM %d ended before it ran (%v): %s", i+1, werr, tail(vm.stderr.Bytes(), 300))
		case <-deadline:
			return m, fmt.Errorf("VM %d did not run within %v of the start", i+1, densityStartBound)
		}
	}
	m.startS = time.Since(t0).Seconds()
	// Every VM runs; under kfv, wait for memwatch's baseline too, so
	// that the window holds steady scans only.
	if cfg == cfgEnforce {
		for i, vm := range vms {
			for {
				evs, err := readEventsSoFar(vm.events)
				if err != nil {
					return m, err
				}
				if hasBaseline(evs) {
					break
				}
				select {
				case <-deadline:
					return m, fmt.Errorf("VM %d: no memwatch baseline within %v of the start", i+1, densityStartBound)
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
	for i, vm := range vms {
		if vm.qemu = vm.pid; isKfv(cfg) {
			if vm.qemu, err = qemuChild(vm.pid); err != nil {
				return m, fmt.Errorf("VM %d: %w", i+1, err)
			}
		}
	}
	time.Sleep(densitySettle)

	k0, q0, err := densityTicks(vms, isKfv(cfg))
	if err != nil {
		return m, err
	}
	w0 := time.Now()
	time.Sleep(densityWindow)
	k1, q1, err := densityTicks(vms, isKfv(cfg))
	if err != nil {
		return m, err
	}
	m.window = time.Since(w0).Seconds()
	m.kfvTicks, m.qTicks = k1-k0, q1-q0
	if isKfv(cfg) {
		for i, vm := range vms {
			st, err := procStatus(vm.pid)
			if err != nil {
				return m, fmt.Errorf("VM %d: kfv-run: %w", i+1, err)
			}
			pss, err := procPss(vm.pid)
			if err != nil {
				return m, fmt.Errorf("VM %d: kfv-run: %w", i+1, err)
			}
			m.rssMean += st["VmRSS"] / float64(n)
			m.pssMean += pss / float64(n)
			if st["VmRSS"] > m.rssMax {
				m.rssMax = st["VmRSS"]
			}
		}
	}

	err = stopDensity(vms)
	stopped = true
	if err != nil {
		return m, err
	}
	if isKfv(cfg) {
		for i, vm := range vms {
			d, r, err := densityEvents(vm.events)
			if err != nil {
				return m, fmt.Errorf("VM %d: %w", i+1, err)
			}
			m.denials = append(m.denials, d...)
			m.reactions = append(m.reactions, r...)
		}
	}
	return m, nil
}

// densityTicks sums utime+stime of the kfv-runs (with kfv) and of the
// QEMUs.
func densityTicks(vms []*densityVM, kfv bool) (k, q int64, err error) {
	for i, vm := range vms {
		if kfv {
			t, err := procTicks(vm.pid)
			if err != nil {
				return 0, 0, fmt.Errorf("VM %d: kfv-run: %w", i+1, err)
			}
			k += t
		}
		t, err := procTicks(vm.qemu)
		if err != nil {
			return 0, 0, fmt.Errorf("VM %d: QEMU: %w", i+1, err)
		}
		q += t
	}
	return k, q, nil
}

// stopDensity sends SIGTERM to every VM (kfv-run forwards it to QEMU),
// waits for each, kills what outlives densityStopBound, and checks that
// every one ended with status 0 and that no QEMU is left. It is called
// once per run.
func stopDensity(vms []*densityVM) error {
	var errs []error
	for i, vm := range vms {
		if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("VM %d: signal: %w", i+1, err))
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			select {
			case werr := <-vm.exited:
				if werr != nil {
					err = fmt.Errorf("VM %d ended with %v after SIGTERM: %s", i+1, werr, tail(vm.stderr.Bytes(), 300))
				}
			case <-time.After(densityStopBound):
				vm.cmd.Process.Kill()
				if vm.qemu > 0 && vm.qemu != vm.pid {
					syscall.Kill(vm.qemu, syscall.SIGKILL)
				}
				<-vm.exited
				err = fmt.Errorf("VM %d (pid %d) did not end within %v of SIGTERM: killed", i+1, vm.pid, densityStopBound)
			}
			if err == nil && vm.qemu > 0 && vm.qemu != vm.pid {
				// QEMU was kfv-run's child: once kfv-run is gone,
				// it is gone or init reaps it.
				for deadline := time.Now().Add(5 * time.Second); ; {
					if _, serr := os.Stat(fmt.Sprintf("/proc/%d", vm.qemu)); errors.Is(serr, os.ErrNotExist) {
						break
					}
					if time.Now().After(deadline) {
						syscall.Kill(vm.qemu, syscall.SIGKILL)
						err = fmt.Errorf("VM %d: QEMU (pid %d) outlived kfv-run by 5 s: killed", i+1, vm.qemu)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// densityEvents returns the denials and reactions in a VM's events, as
// `syscall (rule)` and `reaction (rule)`, without the refusal of the
// signal sender's command line that SIGTERM makes QEMU ask for.
func densityEvents(path string) (denied, reacted []string, err error) {
	evs, err := readEventsSoFar(path)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range evs {
		switch {
		case e.Kind == event.KindDecision && e.Verdict == "deny" && e.Rule != signalSenderRule:
			denied = append(denied, fmt.Sprintf("%s (%s)", e.Syscall, e.Rule))
		case e.Kind == event.KindFolded && e.Verdict == "deny" && e.Rule != signalSenderRule:
			for j := 0; j < e.Count; j++ {
				denied = append(denied, fmt.Sprintf("%s (%s)", e.Syscall, e.Rule))
			}
		case e.Kind == event.KindReaction:
			reacted = append(reacted, fmt.Sprintf("%s (%s)", e.Reaction, e.Rule))
		}
	}
	return denied, reacted, nil
}

// signalSenderRule is the built-in profile's refusal of
// /proc/PID/cmdline: QEMU reads the command line of the process that
// sent it SIGTERM, once, to name it in its log.
const signalSenderRule = "no-peek-signal-sender"

// hasBaseline says whether memwatch took its baseline.
func hasBaseline(evs []event.Event) bool {
	for _, e := range evs {
		if e.Kind == event.KindLifecycle && e.Source == "memwatch" && strings.HasPrefix(e.Detail, "memwatch baseline") {
			return true
		}
	}
	return false
}

// qemuChild is the pid of kfv-run's child that runs QEMU.
func qemuChild(kfvPid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", kfvPid))
	if err != nil {
		return 0, fmt.Errorf("kfv-run's threads: %w", err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", kfvPid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err == nil && strings.HasPrefix(string(comm), "qemu-system") {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("kfv-run (pid %d) has no QEMU child", kfvPid)
}

// procPss is the Pss of pid in MiB (/proc/PID/smaps_rollup).
func procPss(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, fmt.Errorf("read smaps_rollup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "Pss:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/smaps_rollup Pss %q: %w", pid, v, err)
		}
		return kb / 1024, nil
	}
	return 0, fmt.Errorf("no Pss in /proc/%d/smaps_rollup", pid)
}

// lockedBuffer is a stderr buffer written by exec's copier and read by
// error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b...)
}
