package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kfv/event"
)

const (
	containThreads = 4
	// containHold is the window after the reaction over which the CPU
	// of kfv-run and of the held target is measured: 400 clock ticks,
	// so one tick is 0.25% of one core.
	containHold = 4 * time.Second
	// containBound ends a target nobody ends (a bench that died).
	containBound = 60 * time.Second
	// containRule is the ladder rule of bench/profiles/contain.toml.
	containRule = "bench-repeated-denials"
	// containTarget is the containment target: from the first denial
	// to the reaction that holds the flood.
	containTarget = 100.0 // ms
	// slotSize is one thread's counters in the target's shared file
	// (bench/c/target.c, contain mode).
	slotSize = 64
)

// containResult is the containment section: a flood of denied calls,
// paused by the ladder, over the measured rounds.
type containResult struct {
	Threads int     `json:"threads"`
	HoldS   float64 `json:"hold_window_s"`
	// Latency is from the first denial's event to the event of the
	// ladder's pause (written once the pause was carried out).
	Latency *series `json:"first_denial_to_reaction_ms"`
	// EventBytes is the event file's size at the end of the round
	// (rotated files included), start-up lines included; HeldBytes what
	// was written during the hold window.
	EventBytes *series `json:"event_bytes"`
	HeldBytes  *series `json:"event_bytes_while_held"`
	// KfvCPU and TargetCPU are utime+stime over the hold window, in %
	// of one core, of kfv-run (every thread) and of the held target.
	KfvCPU    *series `json:"kfv_cpu_pct"`
	TargetCPU *series `json:"target_cpu_pct"`
	// Denials counts the denied calls in the event stream (folded lines
	// by their count); TargetDenials the failures the target's threads
	// counted themselves before they were held.
	Denials       *series `json:"denials_logged"`
	TargetDenials *series `json:"target_denials"`
	// DenialsAfter counts the denials decided after the pause's event
	// (a folded line by its last one): calls that got through the hold.
	DenialsAfter *series `json:"denials_after_pause"`
	// Enforced is how the last measured round's pause was carried out
	// (the reaction event's enforced field).
	Enforced string `json:"enforced"`
}

// containRound is what one round measured.
type containRound struct {
	latencyMS, kfvCPU, targetCPU float64
	bytes, heldBytes             int64
	denials, targetDenials       int64
	denialsAfter                 int64
	enforced                     string
}

// containment runs the flood that kfv must contain: the C target's
// threads call getppid back to back, bench/profiles/contain.toml denies
// every call and its ladder pauses the target at the third denial.
func (c *config) containment() (*containResult, error) {
	res := &containResult{
		Threads: containThreads, HoldS: containHold.Seconds(),
		Latency: newSeries("ms"), EventBytes: newSeries("bytes"), HeldBytes: newSeries("bytes"),
		KfvCPU: newSeries("% of one core"), TargetCPU: newSeries("% of one core"),
		Denials: newSeries("calls"), TargetDenials: newSeries("calls"), DenialsAfter: newSeries("calls"),
	}
	all := []*series{res.Latency, res.EventBytes, res.HeldBytes, res.KfvCPU, res.TargetCPU, res.Denials, res.TargetDenials, res.DenialsAfter}
	for round := 0; round <= c.rounds; round++ {
		m, err := c.containOnce()
		if round == 0 {
			if err != nil {
				logf("  warm-up containment: %v", err)
			}
			continue
		}
		if err != nil {
			for _, s := range all {
				s.fail("round %d: %v", round, err)
			}
			logf("  containment round %d: %v", round, err)
			continue
		}
		res.Latency.add(m.latencyMS)
		res.EventBytes.add(float64(m.bytes))
		res.HeldBytes.add(float64(m.heldBytes))
		res.KfvCPU.add(m.kfvCPU)
		res.TargetCPU.add(m.targetCPU)
		res.Denials.add(float64(m.denials))
		res.TargetDenials.add(float64(m.targetDenials))
		res.DenialsAfter.add(float64(m.denialsAfter))
		res.Enforced = m.enforced
		if c.verbose {
			logf("  containment round %d: %.2f ms to the pause, %d denials (%d counted by the target, %d after the pause), %d event bytes (%d while held), kfv CPU %.2f%%, target CPU %.2f%%",
				round, m.latencyMS, m.denials, m.targetDenials, m.denialsAfter, m.bytes, m.heldBytes, m.kfvCPU, m.targetCPU)
		}
	}
	for _, s := range all {
		s.finish()
	}
	return res, nil
}

// containOnce runs one round: start the flood under kfv-run, wait for
// the ladder's pause, measure the hold window, end kfv-run and the
// target and check that neither is left.
func (c *config) containOnce() (m containRound, err error) {
	events := filepath.Join(c.work, "contain-events.jsonl")
	if err := removeEvents(events); err != nil {
		return m, err
	}
	defer func() {
		if rerr := removeEvents(events); rerr != nil && err == nil {
			err = rerr
		}
	}()
	// The target's threads count into this file, on its stdin: readable
	// while the target is held stopped.
	ctrPath := filepath.Join(c.work, "contain-counters")
	ctr, err := os.OpenFile(ctrPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return m, fmt.Errorf("create counter file: %w", err)
	}
	defer os.Remove(ctrPath)
	defer ctr.Close()
	if err := ctr.Truncate(containThreads * slotSize); err != nil {
		return m, fmt.Errorf("size counter file: %w", err)
	}

	argv := c.kfvCmd(c.containProf, "enforce", events, c.target, "contain", strconv.Itoa(containThreads), strconv.Itoa(int(containBound.Seconds())))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = ctr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return m, fmt.Errorf("stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return m, fmt.Errorf("start kfv-run: %w", err)
	}
	kfvPid := cmd.Process.Pid
	started := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f, ok := kfvbFields(sc.Text(), "contain"); ok {
				started <- int(f["pid"])
			}
		}
		close(started)
	}()
	exited := make(chan error, 1)
	targetPid := 0
	waited := false
	// Every way out ends kfv-run and the target and checks that both
	// are gone.
	defer func() {
		if eerr := endContain(cmd, kfvPid, targetPid, exited, waited); eerr != nil && err == nil {
			err = eerr
		}
	}()

	select {
	case pid, ok := <-started:
		if !ok {
			go func() { exited <- cmd.Wait() }()
			return m, fmt.Errorf("the target never started: %s", tail(stderr.Bytes(), 300))
		}
		targetPid = pid
	case <-time.After(20 * time.Second):
		go func() { exited <- cmd.Wait() }()
		return m, fmt.Errorf("the target did not start within 20 s: %s", tail(stderr.Bytes(), 300))
	}
	go func() { exited <- cmd.Wait() }()

	// The pause is waited for in the event stream, as an operator sees
	// it; reading every 2 ms adds at most that to nothing measured (the
	// latency comes from the events' own times).
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := readEventsSoFar(events)
		if err != nil {
			return m, err
		}
		if containReaction(evs) != nil {
			break
		}
		select {
		case werr := <-exited:
			waited = true
			return m, fmt.Errorf("kfv-run ended before the pause (%v): %s", werr, tail(stderr.Bytes(), 300))
		default:
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("no %s pause within 10 s of the start", containRule)
		}
		time.Sleep(2 * time.Millisecond)
	}

	// The hold window.
	k0, err := procTicks(kfvPid)
	if err != nil {
		return m, fmt.Errorf("kfv-run: %w", err)
	}
	t0, err := procTicks(targetPid)
	if err != nil {
		return m, fmt.Errorf("target: %w", err)
	}
	b0, err := eventBytes(events)
	if err != nil {
		return m, err
	}
	w0 := time.Now()
	time.Sleep(containHold)
	k1, err := procTicks(kfvPid)
	if err != nil {
		return m, fmt.Errorf("kfv-run: %w", err)
	}
	t1, err := procTicks(targetPid)
	if err != nil {
		return m, fmt.Errorf("target: %w", err)
	}
	window := time.Since(w0).Seconds()
	b1, err := eventBytes(events)
	if err != nil {
		return m, err
	}
	if st, err := procState(targetPid); err != nil || st != "T" && !cgroupFrozen(targetPid) {
		return m, fmt.Errorf("the target is not held after the pause: state %q (%v), and its cgroup is not frozen", st, err)
	}
	counts, err := os.ReadFile(ctrPath)
	if err != nil {
		return m, fmt.Errorf("read counter file: %w", err)
	}
	for i := 0; i+slotSize <= len(counts); i += slotSize {
		m.targetDenials += int64(binary.LittleEndian.Uint64(counts[i+8:]))
	}
	m.kfvCPU = 100 * float64(k1-k0) / userHZ / window
	m.targetCPU = 100 * float64(t1-t0) / userHZ / window
	m.heldBytes = b1 - b0

	// The end: kfv-run, asked to stop, kills the target it holds.
	err = endContain(cmd, kfvPid, targetPid, exited, false)
	waited = true
	if err != nil {
		return m, err
	}
	if m.bytes, err = eventBytes(events); err != nil {
		return m, err
	}
	evs, err := readEventsSoFar(events)
	if err != nil {
		return m, err
	}
	r := containReaction(evs)
	if r == nil {
		return m, fmt.Errorf("no pause in the events after the round")
	}
	var first *event.Event
	for i := range evs {
		e := &evs[i]
		switch {
		case e.Kind == event.KindDecision && e.Syscall == "getppid" && e.Verdict == "deny":
			m.denials++
			if first == nil || e.Time.Before(first.Time) {
				first = e
			}
			if e.Time.After(r.Time) {
				m.denialsAfter++
			}
		case e.Kind == event.KindFolded && e.Detector == "" && e.Syscall == "getppid" && e.Verdict == "deny":
			m.denials += int64(e.Count)
			last, err := time.Parse(time.RFC3339Nano, e.Last)
			if err != nil {
				return m, fmt.Errorf("folded line's last %q: %w", e.Last, err)
			}
			if last.After(r.Time) {
				// Some of the folded calls may be older: counted
				// as after, the worst case.
				m.denialsAfter += int64(e.Count)
			}
		case e.Kind == event.KindDecision && e.Verdict == "deny":
			return m, fmt.Errorf("a denial of %s, which the flood does not make", e.Syscall)
		}
	}
	if first == nil {
		return m, fmt.Errorf("no denial in the events after the round")
	}
	if r.ReactionOutcome() != event.OutcomeDone {
		return m, fmt.Errorf("the pause %s: %s", r.ReactionOutcome(), r.Detail)
	}
	m.latencyMS = ms(r.Time.Sub(first.Time))
	m.enforced = r.Enforced
	return m, nil
}

// containReaction returns the ladder's pause in evs, when every finding
// of its chain is a denial of the flood's call; nil when there is none.
func containReaction(evs []event.Event) *event.Event {
	for i := range evs {
		e := &evs[i]
		if e.Kind != event.KindReaction || e.Rule != containRule || e.Reaction != "pause" || len(e.Chain) == 0 {
			continue
		}
		ok := true
		for _, l := range e.Chain {
			ok = ok && l.Detector == "signature" && l.Syscall == "getppid"
		}
		if ok {
			return e
		}
	}
	return nil
}

// endContain ends a containment round: SIGTERM to kfv-run (which kills a
// target it holds stopped), SIGKILL to both after 30 s, then it checks
// that the target is gone. It is safe to call again once it returned.
func endContain(cmd *exec.Cmd, kfvPid, targetPid int, exited <-chan error, waited bool) error {
	if !waited {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal kfv-run: %w", err)
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			if targetPid > 0 {
				syscall.Kill(targetPid, syscall.SIGKILL)
			}
			<-exited
			return fmt.Errorf("kfv-run (pid %d) did not end within 30 s of SIGTERM: killed", kfvPid)
		}
	}
	if targetPid <= 0 {
		return nil
	}
	// The target was kfv-run's child: once kfv-run is gone, init reaps
	// it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", targetPid)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			syscall.Kill(targetPid, syscall.SIGKILL)
			return fmt.Errorf("the target (pid %d) outlived kfv-run by 5 s: killed", targetPid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readEventsSoFar reads an event file that kfv-run may still be
// writing: a last line without its newline is left for later.
func readEventsSoFar(path string) ([]event.Event, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var evs []event.Event
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var e event.Event
		if err := dec.Decode(&e); err == io.EOF {
			return evs, nil
		} else if err != nil {
			return nil, fmt.Errorf("events %s: %w", path, err)
		}
		evs = append(evs, e)
	}
}

// eventBytes is the size of an event file and its rotated files
// (FILE.1, FILE.2...).
func eventBytes(path string) (int64, error) {
	var n int64
	for i := 0; ; i++ {
		p := path
		if i > 0 {
			p = path + "." + strconv.Itoa(i)
		}
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && i > 0 {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("event file size: %w", err)
		}
		n += fi.Size()
	}
}

// removeEvents removes an event file and its rotated files.
func removeEvents(path string) error {
	for i := 0; ; i++ {
		p := path
		if i > 0 {
			p = path + "." + strconv.Itoa(i)
		}
		err := os.Remove(p)
		if errors.Is(err, os.ErrNotExist) {
			if i > 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("remove events: %w", err)
		}
	}
}

// procState is the state letter of /proc/PID/stat ("T": stopped).
// cgroupFrozen reports whether pid's cgroup v2 is frozen (kfv-run's
// pause freezes the target's cgroup of its own where it made one; its
// tasks then sleep, state S, rather than stop).
func cgroupFrozen(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		path, ok := strings.CutPrefix(l, "0::")
		if !ok {
			continue
		}
		for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
			ev, err := os.ReadFile(root + path + "/cgroup.events")
			if err == nil {
				return strings.Contains(string(ev), "frozen 1")
			}
		}
	}
	return false
}

func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", fmt.Errorf("read stat: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return s[i+2 : i+3], nil
}
