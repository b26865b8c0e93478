package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"kfv/event"
	"kfv/guest"
)

// QEMU's own sandbox, every option on: the strictest QEMU offers.
const sandboxOpt = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// The configurations every guest workload runs under, in this order.
const (
	cfgBare    = "bare QEMU"
	cfgSandbox = "QEMU -sandbox"
	cfgEnforce = "kfv enforce"
	cfgAudit   = "kfv audit"
	// Footprint only: enforce with --memwatch=false, beside enforce
	// (memwatch on, kfv-run's default), on the idle guest.
	cfgEnforceNoMW = "kfv enforce, memwatch off"
)

var guestConfigs = []string{cfgBare, cfgSandbox, cfgEnforce, cfgAudit}

// wlRow is one measured quantity of a guest workload under every
// configuration.
type wlRow struct {
	Workload string    `json:"workload"`
	Metric   string    `json:"metric"`
	Cells    []*wlCell `json:"cells"`
}

// wlCell is one configuration's series and its ratio to bare QEMU.
type wlCell struct {
	Config string  `json:"config"`
	S      *series `json:"series"`
	Ratio  float64 `json:"ratio_to_bare"`
}

func newRow(workload, metric, unit string) *wlRow {
	r := &wlRow{Workload: workload, Metric: metric}
	for _, cfg := range guestConfigs {
		r.Cells = append(r.Cells, &wlCell{Config: cfg, S: newSeries(unit)})
	}
	return r
}

func (r *wlRow) cell(cfg string) *wlCell {
	for _, c := range r.Cells {
		if c.Config == cfg {
			return c
		}
	}
	panic("bench: unknown configuration " + cfg)
}

func (r *wlRow) finish() {
	for _, c := range r.Cells {
		c.S.finish()
	}
	bare := r.cell(cfgBare).S
	for _, c := range r.Cells {
		c.Ratio = ratio(c.S, bare)
	}
}

// fpRow is the footprint of kfv-run in one mode during one workload.
type fpRow struct {
	Workload  string  `json:"workload"`
	Mode      string  `json:"mode"`
	CPU       *series `json:"cpu_percent"`     // utime+stime over wall time, % of one core
	RSS       *series `json:"vmrss_max_mib"`   // largest VmRSS sampled during the run
	HWM       *series `json:"vmhwm_mib"`       // VmHWM when the workload ended
	NotifRate *series `json:"notif_per_s"`     // decisions during the workload / its duration
	Decisions *series `json:"decisions_total"` // decisions in the whole run, start-up included
	WindowS   *series `json:"window_s"`        // the measured window
}

// denialRow counts the denials kfv logged for one configuration and
// workload over the measured rounds.
type denialRow struct {
	Config   string         `json:"config"`
	Workload string         `json:"workload"`
	Runs     int            `json:"runs"`
	Denials  int            `json:"denials"`
	Calls    map[string]int `json:"calls"` // `syscall "path" (rule)` → count
}

// guestRun is what one Linux or raw guest run measured.
type guestRun struct {
	markers   guest.Markers
	elapsed   time.Duration
	cpuPct    float64
	rssMiB    float64
	hwmMiB    float64
	window    time.Duration
	notifRate float64
	decisions int
	denials   []event.Event
}

// workloads runs the Linux guest's workloads under every configuration
// and, from kfv's runs, measures kfv-run's footprint.
func (c *config) workloads(measure, footprint bool) ([]*wlRow, []*fpRow, []*denialRow, error) {
	type job struct {
		workload string
		cfg      string
	}
	var jobs []job
	if measure {
		for _, w := range []string{guest.WorkloadBoot, guest.WorkloadDisk, guest.WorkloadNet} {
			for _, cfg := range guestConfigs {
				jobs = append(jobs, job{w, cfg})
			}
		}
	}
	if footprint {
		// Idle only in enforce mode: audit runs the same loop and only
		// answers differently, and an idle run is the longest job.
		jobs = append(jobs, job{guest.WorkloadIdle, cfgEnforce}, job{guest.WorkloadIdle, cfgEnforceNoMW})
		if !measure {
			for _, cfg := range []string{cfgEnforce, cfgAudit} {
				jobs = append(jobs, job{guest.WorkloadDisk, cfg})
			}
		}
	}
	rows := map[string][]*wlRow{
		guest.WorkloadBoot: {newRow("boot", "kernel start to /init", "ms"), newRow("boot", "QEMU start to exit", "ms")},
		guest.WorkloadDisk: {newRow("disk", fmt.Sprintf("write %d MiB, O_DIRECT", c.diskMiB), "ms"), newRow("disk", fmt.Sprintf("read %d MiB, O_DIRECT", c.diskMiB), "ms")},
		guest.WorkloadNet:  {newRow("net", fmt.Sprintf("TCP send %d MiB", c.netMiB), "ms")},
	}
	fps := make(map[string]*fpRow)
	var fpList []*fpRow
	for _, w := range []string{guest.WorkloadIdle, guest.WorkloadDisk} {
		for _, cfg := range []string{cfgEnforce, cfgEnforceNoMW, cfgAudit} {
			if w == guest.WorkloadIdle && cfg == cfgAudit || w != guest.WorkloadIdle && cfg == cfgEnforceNoMW {
				continue
			}
			f := &fpRow{Workload: w, Mode: strings.TrimPrefix(cfg, "kfv "), CPU: newSeries("%"), RSS: newSeries("MiB"), HWM: newSeries("MiB"), NotifRate: newSeries("/s"), Decisions: newSeries("calls"), WindowS: newSeries("s")}
			fps[w+"/"+cfg] = f
			fpList = append(fpList, f)
		}
	}
	den := newDenials()
	for round := 0; round <= c.rounds; round++ {
		for _, j := range jobs {
			g, err := c.linuxOnce(j.workload, j.cfg)
			tag := fmt.Sprintf("%s %s round %d", j.workload, j.cfg, round)
			if err != nil {
				logf("  %s: %v", tag, err)
			} else if c.verbose {
				logf("  %s: %v, %v", tag, g.elapsed.Round(time.Millisecond), g.markers.Result)
			}
			if round == 0 {
				continue
			}
			if isKfv(j.cfg) && err == nil {
				den.add(j.cfg, j.workload, g.denials)
			}
			rs := rows[j.workload]
			if j.workload == guest.WorkloadIdle {
				rs = nil
			}
			vals := []float64{}
			if err == nil {
				switch j.workload {
				case guest.WorkloadBoot:
					vals = []float64{float64(g.markers.BootedMS), float64(g.elapsed.Milliseconds())}
				case guest.WorkloadDisk:
					vals = []float64{resultMS(g.markers, "write_ms"), resultMS(g.markers, "read_ms")}
				case guest.WorkloadNet:
					vals = []float64{resultMS(g.markers, "ms")}
				}
			}
			for i, r := range rs {
				if err != nil {
					r.cell(j.cfg).S.fail("round %d: %v", round, err)
					continue
				}
				r.cell(j.cfg).S.add(vals[i])
			}
			if f := fps[j.workload+"/"+j.cfg]; f != nil && footprint {
				if err != nil {
					f.CPU.fail("round %d: %v", round, err)
					continue
				}
				f.CPU.add(g.cpuPct)
				f.RSS.add(g.rssMiB)
				f.HWM.add(g.hwmMiB)
				f.NotifRate.add(g.notifRate)
				f.Decisions.add(float64(g.decisions))
				f.WindowS.add(g.window.Seconds())
			}
		}
	}
	var out []*wlRow
	if measure {
		for _, w := range []string{guest.WorkloadBoot, guest.WorkloadDisk, guest.WorkloadNet} {
			for _, r := range rows[w] {
				r.finish()
				out = append(out, r)
			}
		}
	}
	if !footprint {
		fpList = nil
	}
	for _, f := range fpList {
		for _, s := range []*series{f.CPU, f.RSS, f.HWM, f.NotifRate, f.Decisions, f.WindowS} {
			s.finish()
		}
	}
	return out, fpList, den.rows(), nil
}

func isKfv(cfg string) bool { return cfg == cfgEnforce || cfg == cfgAudit || cfg == cfgEnforceNoMW }

func resultMS(m guest.Markers, key string) float64 {
	v, err := strconv.ParseFloat(m.Result[key], 64)
	if err != nil {
		return 0
	}
	return v
}

// guestArgv wraps QEMU's arguments for a configuration.
func (c *config) guestArgv(cfg, events string, args []string) []string {
	qemu := append([]string{c.qemu}, args...)
	switch cfg {
	case cfgSandbox:
		return append(qemu, "-sandbox", sandboxOpt)
	case cfgEnforce:
		return c.kfvCmd("", "enforce", events, qemu...)
	case cfgAudit:
		return c.kfvCmd("", "audit", events, qemu...)
	case cfgEnforceNoMW:
		a := c.kfvCmd("", "enforce", events, qemu...)
		return append([]string{a[0], "--memwatch=false"}, a[1:]...)
	}
	return qemu
}

// linuxOnce boots the Linux guest with workload under cfg and checks
// that the workload succeeded. Under kfv it samples kfv-run's CPU time
// and memory between KFV-BOOTED and KFV-RESULT.
func (c *config) linuxOnce(workload, cfg string) (*guestRun, error) {
	var extra, cmdline []string
	var recv chan string
	switch workload {
	case guest.WorkloadDisk:
		img := filepath.Join(c.work, "disk.raw")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			return nil, fmt.Errorf("create disk image: %w", err)
		}
		defer os.Remove(img)
		if err := os.Truncate(img, int64(c.diskMiB)<<20); err != nil {
			return nil, fmt.Errorf("size disk image: %w", err)
		}
		extra = guest.DiskArgs(img, "raw")
		cmdline = []string{fmt.Sprintf("kfv.size=%d", c.diskMiB)}
	case guest.WorkloadNet:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen for the guest: %w", err)
		}
		defer ln.Close()
		recv = make(chan string, 1)
		go receive(ln, recv)
		extra = guest.NetArgs()
		cmdline = []string{fmt.Sprintf("kfv.size=%d", c.netMiB), fmt.Sprintf("kfv.port=%d", ln.Addr().(*net.TCPAddr).Port)}
	case guest.WorkloadIdle:
		cmdline = []string{fmt.Sprintf("kfv.seconds=%d", c.idleSec)}
	}
	args := append(guest.LinuxArgs(c.linux, c.accel, workload, cmdline...), extra...)
	events := filepath.Join(c.work, "guest-events.jsonl")
	defer os.Remove(events)
	var fp footprint
	opts := runOpts{timeout: 3 * time.Minute}
	if isKfv(cfg) {
		opts.sample = fp.sample
		opts.line = fp.line
	}
	p, err := runProc(c.guestArgv(cfg, events, args), opts)
	if err != nil {
		return nil, err
	}
	g := &guestRun{elapsed: p.elapsed}
	if g.markers, err = guest.ParseMarkers(p.stdout); err != nil {
		return nil, err
	}
	if p.status != 0 || !g.markers.Done || g.markers.Status != "ok" {
		return nil, fmt.Errorf("exit status %d, result %v, stderr %q", p.status, g.markers.Result, tail(p.stderr, 300))
	}
	if recv != nil {
		var got string
		select {
		case got = <-recv:
		case <-time.After(10 * time.Second):
			got = "nothing"
		}
		if want := fmt.Sprintf("%d %s", c.netMiB<<20, g.markers.Result["sha256"]); got != want {
			return nil, fmt.Errorf("host received %q, guest sent %q", got, want)
		}
	}
	if isKfv(cfg) {
		if err := fp.finish(g, events); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// receive accepts one connection and reports "BYTES SHA256" of what
// arrived.
func receive(ln net.Listener, out chan<- string) {
	conn, err := ln.Accept()
	if err != nil {
		out <- "accept: " + err.Error()
		return
	}
	defer conn.Close()
	h := sha256.New()
	n, err := io.Copy(h, conn)
	if err != nil {
		out <- "read: " + err.Error()
		return
	}
	out <- fmt.Sprintf("%d %s", n, hex.EncodeToString(h.Sum(nil)))
}

// footprint follows kfv-run during one guest run.
type footprint struct {
	mu         sync.Mutex
	rssMax     float64 // MiB
	hwm        float64 // MiB, at KFV-RESULT
	t0, t1     time.Time
	tick0      int64 // utime+stime at KFV-BOOTED
	tick1      int64 // at KFV-RESULT
	sampleErrs []string
}

func (f *footprint) sample(pid int) {
	st, err := procStatus(pid)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// The process may be gone between the last line and the
		// sampler's stop; only a run with no sample at all is wrong.
		f.sampleErrs = append(f.sampleErrs, err.Error())
		return
	}
	if st["VmRSS"] > f.rssMax {
		f.rssMax = st["VmRSS"]
	}
}

func (f *footprint) line(s string, at time.Time, pid int) {
	switch {
	case strings.Contains(s, "KFV-BOOTED "):
		t, err := procTicks(pid)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			f.sampleErrs = append(f.sampleErrs, err.Error())
			return
		}
		f.t0, f.tick0 = at, t
	case strings.Contains(s, "KFV-RESULT "):
		t, err := procTicks(pid)
		st, serr := procStatus(pid)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil || serr != nil {
			f.sampleErrs = append(f.sampleErrs, fmt.Sprint(err, serr))
			return
		}
		f.t1, f.tick1, f.hwm = at, t, st["VmHWM"]
	}
}

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which the kernel fixes at 100 on x86_64 whatever its CONFIG_HZ.
const userHZ = 100

func (f *footprint) finish(g *guestRun, events string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.t0.IsZero() || f.t1.IsZero() || f.rssMax == 0 {
		return fmt.Errorf("kfv-run footprint not sampled: %v", f.sampleErrs)
	}
	g.window = f.t1.Sub(f.t0)
	g.cpuPct = 100 * float64(f.tick1-f.tick0) / userHZ / g.window.Seconds()
	g.rssMiB, g.hwmMiB = f.rssMax, f.hwm
	evs, err := readEvents(events)
	if err != nil {
		return err
	}
	inWindow := 0
	for _, e := range evs {
		if e.Kind != event.KindDecision {
			continue
		}
		g.decisions++
		if !e.Time.Before(f.t0) && !e.Time.After(f.t1) {
			inWindow++
		}
		if e.Verdict == "deny" {
			g.denials = append(g.denials, e)
		}
	}
	g.notifRate = float64(inWindow) / g.window.Seconds()
	return nil
}

// procTicks returns utime+stime of pid (every thread) in clock ticks.
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'. utime and stime are fields 14 and 15, that
	// is 12 and 13 after the state field (3).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse utime: %w", err)
	}
	st, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stime: %w", err)
	}
	return u + st, nil
}

// procStatus returns the kB fields of /proc/PID/status in MiB.
func procStatus(pid int) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	m := make(map[string]float64)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 64)
		if err != nil {
			continue
		}
		m[k] = n / 1024
	}
	return m, nil
}

// denials collects denial counts per configuration and workload.
type denials struct {
	m     map[string]*denialRow
	order []string
}

func newDenials() *denials { return &denials{m: make(map[string]*denialRow)} }

func (d *denials) add(cfg, workload string, evs []event.Event) {
	k := cfg + "/" + workload
	r := d.m[k]
	if r == nil {
		r = &denialRow{Config: cfg, Workload: workload, Calls: make(map[string]int)}
		d.m[k] = r
		d.order = append(d.order, k)
	}
	r.Runs++
	r.Denials += len(evs)
	for _, e := range evs {
		what := e.Syscall
		if rest, ok := strings.CutPrefix(e.Args, "path="); ok {
			if q, err := strconv.QuotedPrefix(rest); err == nil {
				what += " " + q
			}
		}
		r.Calls[fmt.Sprintf("%s (%s)", what, e.Rule)]++
	}
}

func (d *denials) rows() []*denialRow {
	keys := append([]string(nil), d.order...)
	sort.Strings(keys)
	var out []*denialRow
	for _, k := range keys {
		out = append(out, d.m[k])
	}
	return out
}
