package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kfv/event"
)

// warmupCalls is how many calls the target makes before it times any
// (bench/c/target.c).
const warmupCalls = 2000

// Placements of the supervisor and the target. The target always runs
// on supervisedCPU when pinned; the supervisor shares it or takes the
// other one.
const (
	placeSame  = "same CPU"
	placeCross = "across CPUs"
	placeFree  = "unpinned"

	supervisedCPU = 1
	otherCPU      = 0
)

// noFilter is the row of the target without any filter: the cost of
// the call itself.
const noFilter = "no filter"

// rttRow is one line of the round-trip table.
type rttRow struct {
	Supervisor string `json:"supervisor"` // "C floor", "kfv allow", "kfv deny", "kfv emulated open"
	Placement  string `json:"placement"`
	Wake       string `json:"wake"` // "sync" or "default"
	NotYet     string `json:"not_yet,omitempty"`
	// Op is the timed call: "" (getppid), "open" or "connect".
	Op string `json:"op,omitempty"`
	// RatioNative is an emulated call's median over the same call made
	// without any filter.
	RatioNative float64 `json:"ratio_to_native,omitempty"`
	Mean        *series `json:"mean_us"` // mean µs per call in each run
	P99         *series `json:"p99_us"`  // the run's 99th percentile
	// Ratio is kfv's median over the floor's with the same placement
	// and wake mode; RatioDefault over the floor without sync wake-up.
	Ratio        float64 `json:"ratio_to_floor,omitempty"`
	RatioDefault float64 `json:"ratio_to_floor_default_wake,omitempty"`

	deny    bool
	arg     string // the open's path or the connect's address
	profile string // kfv profile for emulated rows
}

func (r *rttRow) kfv() bool { return strings.HasPrefix(r.Supervisor, "kfv") && r.Op == "" }

// roundTrip measures the notification round trip: the C floor against
// kfv's allow and deny paths, interleaved.
func (c *config) roundTrip() ([]*rttRow, error) {
	rows := []*rttRow{{Supervisor: noFilter, Placement: placeSame, Wake: "-"}}
	for _, pl := range []string{placeSame, placeCross, placeFree} {
		for _, wake := range []string{"default", "sync"} {
			rows = append(rows, &rttRow{Supervisor: "C floor", Placement: pl, Wake: wake})
		}
	}
	for _, pl := range []string{placeSame, placeCross, placeFree} {
		rows = append(rows,
			&rttRow{Supervisor: "kfv allow", Placement: pl, Wake: "sync"},
			&rttRow{Supervisor: "kfv deny", Placement: pl, Wake: "sync", deny: true})
	}
	for _, r := range rows {
		r.Mean, r.P99 = newSeries("µs"), newSeries("µs")
	}
	for round := 0; round <= c.rounds; round++ {
		for _, r := range rows {
			mean, p99, err := c.rttOnce(r)
			if round == 0 {
				if err != nil {
					logf("  warm-up %s %s %s: %v", r.Supervisor, r.Placement, r.Wake, err)
				}
				continue
			}
			if err != nil {
				r.Mean.fail("round %d: %v", round, err)
				r.P99.fail("round %d: %v", round, err)
				logf("  %s %s %s round %d: %v", r.Supervisor, r.Placement, r.Wake, round, err)
				continue
			}
			r.Mean.add(mean)
			r.P99.add(p99)
			if c.verbose {
				logf("  round %d %s %s %s: %.2f µs/call, p99 %.2f", round, r.Supervisor, r.Placement, r.Wake, mean, p99)
			}
		}
	}
	for _, r := range rows {
		r.Mean.finish()
		r.P99.finish()
	}
	for _, r := range rows {
		if !r.kfv() {
			continue
		}
		for _, f := range rows {
			if f.kfv() || f.Placement != r.Placement {
				continue
			}
			if f.Wake == r.Wake {
				r.Ratio = ratio(r.Mean, f.Mean)
			}
			if f.Wake == "default" {
				r.RatioDefault = ratio(r.Mean, f.Mean)
			}
		}
	}
	em, err := c.emulated()
	if err != nil {
		return nil, err
	}
	return append(rows, em...), nil
}

// emulated measures emulated calls next to the same calls without a
// filter: an open of a file (kfv resolves it for the caller, decides on the
// object reached, opens it and installs it with ADDFD) and a non-blocking
// connect to a local listener (made on a copy of the caller's socket).
// All on one CPU, as the same-CPU round trip.
func (c *config) emulated() ([]*rttRow, error) {
	file := filepath.Join(c.work, "emulated-open")
	if err := os.WriteFile(file, []byte("kfv\n"), 0o644); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("emulated connect listener: %w", err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	var rows []*rttRow
	for _, op := range []struct{ name, arg, profile string }{
		{"open", file, c.openProf},
		{"connect", l.Addr().String(), c.connectProf},
	} {
		native := &rttRow{Supervisor: noFilter + " (" + op.name + ")", Placement: placeSame, Wake: "-", Op: op.name, arg: op.arg}
		kfv := &rttRow{Supervisor: "kfv emulated " + op.name, Placement: placeSame, Wake: "sync", Op: op.name, arg: op.arg, profile: op.profile}
		rows = append(rows, native, kfv)
	}
	for _, r := range rows {
		r.Mean, r.P99 = newSeries("µs"), newSeries("µs")
	}
	for round := 0; round <= c.rounds; round++ {
		for _, r := range rows {
			mean, p99, err := c.emulatedOnce(r)
			if round == 0 {
				continue
			}
			if err != nil {
				r.Mean.fail("round %d: %v", round, err)
				r.P99.fail("round %d: %v", round, err)
				logf("  %s round %d: %v", r.Supervisor, round, err)
				continue
			}
			r.Mean.add(mean)
			r.P99.add(p99)
		}
	}
	for i, r := range rows {
		r.Mean.finish()
		r.P99.finish()
		if i%2 == 1 {
			r.RatioNative = ratio(r.Mean, rows[i-1].Mean)
		}
	}
	return rows, nil
}

// emulatedCalls is how many opens or connects one run times.
const emulatedCalls = 5000

func (c *config) emulatedOnce(r *rttRow) (mean, p99 float64, err error) {
	target := []string{c.target, r.Op, r.arg, strconv.Itoa(emulatedCalls), strconv.Itoa(supervisedCPU)}
	argv := target
	events := ""
	if r.profile != "" {
		events = filepath.Join(c.work, "emulated-events.jsonl")
		defer os.Remove(events)
		argv = append([]string{"taskset", "-c", strconv.Itoa(supervisedCPU)}, c.kfvCmd(r.profile, "enforce", events, target...)...)
	}
	p, err := runProc(argv, runOpts{timeout: time.Minute})
	if err != nil {
		return 0, 0, err
	}
	if p.status != 0 {
		return 0, 0, fmt.Errorf("exit status %d: %s", p.status, tail(p.stderr, 300))
	}
	var f map[string]float64
	sc := bufio.NewScanner(bytes.NewReader(p.stdout))
	for sc.Scan() {
		if m, ok := kfvbFields(sc.Text(), "rtt"); ok {
			f = m
		}
	}
	if f == nil {
		return 0, 0, fmt.Errorf("no result line in %q", tail(p.stdout, 300))
	}
	if f["fails"] != 0 {
		return 0, 0, fmt.Errorf("%v of %v calls failed, last errno %v", f["fails"], emulatedCalls, f["errno"])
	}
	if events != "" {
		evs, err := readEvents(events)
		if err != nil {
			return 0, 0, err
		}
		n := 0
		sys := map[string]string{"open": "openat", "connect": "connect"}[r.Op]
		for _, e := range evs {
			switch {
			case e.Kind == event.KindDecision && e.Syscall == sys && strings.Contains(e.Detail, "emulated"):
				n++
			case e.Kind == event.KindFolded && e.Detector == "" && e.Syscall == sys && e.Applied == "allow":
				// The stream folds identical decisions past 200 a
				// second: a folded line of allowed calls stands for its
				// count of them (emulated, as the ones written in full).
				n += e.Count
			}
		}
		if want := emulatedCalls + warmupCalls; n < want {
			return 0, 0, fmt.Errorf("%d emulated %s events, want at least %d: the calls were not emulated", n, r.Op, want)
		}
	}
	return f["mean_ns"] / 1000, f["p99_ns"] / 1000, nil
}

// rttOnce runs the target's rtt mode once under r's supervisor and
// returns the mean and p99 µs per call. It checks that every call got
// the answer the path should give, and for kfv that every call was
// logged.
func (c *config) rttOnce(r *rttRow) (mean, p99 float64, err error) {
	targetCPU := supervisedCPU
	supCPU := supervisedCPU
	switch r.Placement {
	case placeCross:
		supCPU = otherCPU
	case placeFree:
		targetCPU, supCPU = -1, -1
	}
	target := []string{c.target, "rtt", strconv.Itoa(c.calls), strconv.Itoa(targetCPU)}
	var argv []string
	events := ""
	if r.kfv() {
		events = filepath.Join(c.work, "rtt-events.jsonl")
		profile := c.allow
		if r.deny {
			profile = c.deny
		}
		argv = c.kfvCmd(profile, "enforce", events, target...)
		if supCPU >= 0 {
			// Every kfv-run thread on supCPU; the target moves itself.
			argv = append([]string{"taskset", "-c", strconv.Itoa(supCPU)}, argv...)
		}
		defer os.Remove(events)
	} else if r.Supervisor == noFilter {
		argv = target
	} else {
		sync := "0"
		if r.Wake == "sync" {
			sync = "1"
		}
		argv = append([]string{c.floor, sync, strconv.Itoa(supCPU)}, target...)
	}
	p, err := runProc(argv, runOpts{timeout: time.Minute})
	if err != nil {
		return 0, 0, err
	}
	if p.status != 0 {
		return 0, 0, fmt.Errorf("exit status %d: %s", p.status, tail(p.stderr, 300))
	}
	var f map[string]float64
	sc := bufio.NewScanner(bytes.NewReader(p.stdout))
	for sc.Scan() {
		if m, ok := kfvbFields(sc.Text(), "rtt"); ok {
			f = m
		}
	}
	if f == nil {
		return 0, 0, fmt.Errorf("no result line in %q", tail(p.stdout, 300))
	}
	calls := float64(c.calls)
	switch {
	case r.deny && (f["fails"] != calls || f["errno"] != 1):
		return 0, 0, fmt.Errorf("deny path: %v of %v calls failed, last errno %v; want all with EPERM", f["fails"], calls, f["errno"])
	case !r.deny && f["fails"] != 0:
		return 0, 0, fmt.Errorf("allow path: %v of %v calls failed, last errno %v", f["fails"], calls, f["errno"])
	}
	if events != "" {
		n, err := countDecisions(events, "getppid")
		if err != nil {
			return 0, 0, err
		}
		if want := c.calls + warmupCalls; n != want {
			return 0, 0, fmt.Errorf("%d getppid decisions logged, want %d (one per call)", n, want)
		}
	}
	return f["mean_ns"] / 1000, f["p99_ns"] / 1000, nil
}

// countDecisions counts the decisions on syscall in an event file,
// written in full or folded.
func countDecisions(path, syscall string) (int, error) {
	evs, err := readEvents(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range evs {
		switch {
		case e.Kind == event.KindDecision && e.Syscall == syscall:
			n++
		case e.Kind == event.KindFolded && e.Detector == "" && e.Syscall == syscall:
			n += e.Count // identical decisions folded past 200 a second
		}
	}
	return n, nil
}

func readEvents(path string) ([]event.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open events: %w", err)
	}
	defer f.Close()
	var evs []event.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("event line %q: %w", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return evs, nil
}

// floodRates are the offered rates (calls per second over all threads)
// the flood steps through; 0 is "as fast as the threads can".
var floodRates = []float64{1000, 2000, 5000, 10000, 20000, 50000, 100000, 0}

const (
	floodThreads = 4
	floodSeconds = 1.0
	floodP99     = 1000.0 // µs: the latency bound of the flood target
)

// floodRow is one offered rate under one supervisor.
type floodRow struct {
	Supervisor string  `json:"supervisor"`
	Offered    float64 `json:"offered_per_s"` // 0: unpaced
	Achieved   *series `json:"achieved_per_s"`
	P99        *series `json:"p99_us"`
}

// floodResult is the flood section.
type floodResult struct {
	Threads int         `json:"threads"`
	Seconds float64     `json:"seconds_per_step"`
	Rows    []*floodRow `json:"rows"`
	// Best is, per supervisor, the largest offered rate up to which
	// every step's median p99 stayed under 1 ms while the median
	// achieved rate kept up (at least 95% of the offered one); 0 when
	// even the first step missed.
	Best map[string]float64 `json:"best_per_s"`
}

// flood offers notified calls at stepped rates from several threads, to
// the floor and to kfv (allow path), interleaved.
func (c *config) flood() (*floodResult, error) {
	res := &floodResult{Threads: floodThreads, Seconds: floodSeconds, Best: make(map[string]float64)}
	sups := []string{"C floor", "kfv allow"}
	rows := make(map[string][]*floodRow)
	for _, s := range sups {
		for _, rate := range floodRates {
			r := &floodRow{Supervisor: s, Offered: rate, Achieved: newSeries("calls/s"), P99: newSeries("µs")}
			rows[s] = append(rows[s], r)
			res.Rows = append(res.Rows, r)
		}
	}
	var rates []string
	for _, r := range floodRates {
		rates = append(rates, strconv.FormatFloat(r, 'f', 0, 64))
	}
	target := []string{c.target, "flood", strconv.Itoa(floodThreads), strconv.FormatFloat(floodSeconds, 'f', -1, 64), strings.Join(rates, ",")}
	for round := 0; round <= c.rounds; round++ {
		for _, s := range sups {
			var argv []string
			events := filepath.Join(c.work, "flood-events.jsonl")
			if s == "C floor" {
				argv = append([]string{c.floor, "1", "-1"}, target...)
			} else {
				argv = c.kfvCmd(c.allow, "enforce", events, target...)
			}
			p, err := runProc(argv, runOpts{timeout: 2 * time.Minute})
			if rerr := os.Remove(events); rerr != nil && !os.IsNotExist(rerr) {
				return nil, fmt.Errorf("remove flood events: %w", rerr)
			}
			if err == nil && p.status != 0 {
				err = fmt.Errorf("exit status %d: %s", p.status, tail(p.stderr, 300))
			}
			got := make(map[float64]map[string]float64)
			if err == nil {
				sc := bufio.NewScanner(bytes.NewReader(p.stdout))
				for sc.Scan() {
					if m, ok := kfvbFields(sc.Text(), "flood"); ok {
						got[m["offered"]] = m
					}
				}
			}
			if round == 0 {
				continue
			}
			for _, r := range rows[s] {
				m, ok := got[r.Offered]
				switch {
				case err != nil:
					r.Achieved.fail("round %d: %v", round, err)
					r.P99.fail("round %d: %v", round, err)
				case !ok:
					r.Achieved.fail("round %d: no result line", round)
					r.P99.fail("round %d: no result line", round)
				case m["fails"] != 0:
					r.Achieved.fail("round %d: %v calls failed (errno %v)", round, m["fails"], m["errno"])
					r.P99.fail("round %d: %v calls failed", round, m["fails"])
				default:
					r.Achieved.add(m["achieved"])
					r.P99.add(m["p99_ns"] / 1000)
				}
			}
			if err != nil {
				logf("  flood %s round %d: %v", s, round, err)
			} else if c.verbose {
				logf("  flood %s round %d done", s, round)
			}
		}
	}
	for _, s := range sups {
		// Steps go up; the first one that misses ends the search, so a
		// lucky higher step does not count.
		for _, r := range rows[s] {
			r.Achieved.finish()
			r.P99.finish()
		}
		for _, r := range rows[s] {
			if r.Offered == 0 {
				continue
			}
			if !r.P99.ok() || r.P99.Median >= floodP99 || r.Achieved.Median < 0.95*r.Offered {
				break
			}
			res.Best[s] = math.Max(res.Best[s], r.Offered)
		}
	}
	return res, nil
}
