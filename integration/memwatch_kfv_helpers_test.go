package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kfv/event"
)

// mkRun is one kfv-run (enforce, memwatch on) under test, with a QMP
// monitor of the test's own.
type mkRun struct {
	t       *testing.T
	events  string
	sock    string
	p       *proc
	qemuPID int
	began   time.Time
}

// mkStart starts kfv-run in enforce mode with flags and QEMU with qargs
// plus the test's QMP monitor; env is added to kfv-run's environment
// (QEMU inherits it). The process is killed when the test ends.
func mkStart(t *testing.T, flags, qargs []string, env ...string) *mkRun {
	t.Helper()
	needKfv(t)
	qemu := needQEMU(t)
	dir := t.TempDir()
	r := &mkRun{t: t, events: filepath.Join(dir, "events.jsonl"), sock: filepath.Join(dir, "qmp.sock"), began: time.Now()}
	qargs = append(qargs, "-qmp", "unix:"+r.sock+",server=on,wait=off")
	argv := kfvArgs(r.events, append([]string{"--mode", "enforce"}, flags...), qemu, qargs...)
	r.p = startEnv(t, argv, env...)
	r.p.cmd.Dir = dir
	r.qemuPID = childPID(t, r.p.cmd.Process.Pid)
	return r
}

// eventsNow parses the complete lines of the event stream as it stands.
func (r *mkRun) eventsNow() []event.Event {
	r.t.Helper()
	b, err := os.ReadFile(r.events)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatalf("read events: %v", err)
	}
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		return nil
	}
	var evs []event.Event
	sc := bufio.NewScanner(bytes.NewReader(b[:i+1]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			r.t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitEvent waits for an event ok accepts and returns it, with the time
// the test saw it.
func (r *mkRun) waitEvent(what string, timeout time.Duration, ok func(*event.Event) bool) (event.Event, time.Time) {
	r.t.Helper()
	var got *event.Event
	waitFor(timeout, func() bool {
		evs := r.eventsNow()
		for i := range evs {
			if ok(&evs[i]) {
				got = &evs[i]
				return true
			}
		}
		return false
	})
	seen := time.Now()
	if got == nil {
		r.t.Fatalf("no %s in the event stream within %v\nevents:\n%s\nconsole:\n%s\nstderr:\n%s", what, timeout, mkDump(r.eventsNow()), lastLines(r.p.stdout.String(), 30), lastLines(r.p.stderr.String(), 30))
	}
	return *got, seen
}

// baseline waits for memwatch's baseline event and returns its detail.
func (r *mkRun) baseline() string {
	r.t.Helper()
	e, _ := r.waitEvent("memwatch baseline", 60*time.Second, func(e *event.Event) bool {
		return e.Kind == event.KindLifecycle && e.Source == "memwatch" && strings.HasPrefix(e.Detail, "memwatch baseline")
	})
	r.t.Logf("%s", e.Detail)
	return e.Detail
}

// memFinding waits for a memwatch finding whose rule is "memwatch:"+kind.
func (r *mkRun) memFinding(kind string, timeout time.Duration) event.Event {
	r.t.Helper()
	e, _ := r.waitEvent("memwatch finding "+kind, timeout, func(e *event.Event) bool {
		return e.Kind == event.KindFinding && e.Detector == "memwatch" && e.Rule == "memwatch:"+kind
	})
	r.t.Logf("finding %s %s/%s %s/%s: %s", e.Time.Format("15:04:05.000"), e.Layer, e.HRSC, e.Detector, e.Severity, e.Detail)
	if e.Layer != "L1" || e.HRSC != "memory" {
		r.t.Errorf("memwatch finding on %s/%s, want L1/memory", e.Layer, e.HRSC)
	}
	return e
}

// reaction waits for the reaction named name that follows finding f
// (same rule and time in its chain), and checks that it was carried
// out.
func (r *mkRun) reaction(name string, f event.Event, timeout time.Duration) event.Event {
	r.t.Helper()
	e, _ := r.waitEvent("reaction "+name+" to "+f.Rule, timeout, func(e *event.Event) bool {
		return e.Kind == event.KindReaction && e.Reaction == name && mkChainHas(e.Chain, f)
	})
	r.t.Logf("reaction %s rule=%s outcome=%s detail=%q chain=%s", e.Reaction, e.Rule, e.ReactionOutcome(), e.Detail, chainLinks(e.Chain))
	if e.ReactionOutcome() != event.OutcomeDone {
		r.t.Errorf("reaction %s: outcome %q (%s), want %s", name, e.ReactionOutcome(), e.Detail, event.OutcomeDone)
	}
	return e
}

// scrubReport returns the detail of the memwatch scrub event that
// follows t.
func (r *mkRun) scrubReport(after time.Time) string {
	r.t.Helper()
	e, _ := r.waitEvent("scrub report", 10*time.Second, func(e *event.Event) bool {
		return e.Kind == event.KindLifecycle && e.Source == "memwatch" && strings.HasPrefix(e.Detail, "scrub:") && !e.Time.Before(after)
	})
	return e.Detail
}

func mkChainHas(chain []event.Link, f event.Event) bool {
	for _, l := range chain {
		if l.Detector == f.Detector && l.Rule == f.Rule && l.Time.Equal(f.Time) {
			return true
		}
	}
	return false
}

func chainLinks(c []event.Link) string {
	var parts []string
	for _, l := range c {
		parts = append(parts, fmt.Sprintf("{%s %s %s/%s %s rule=%s}", l.Layer, l.HRSC, l.Detector, l.Severity, l.Syscall, l.Rule))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// mkDump lists the events other than allowed decisions.
func mkDump(evs []event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Kind == event.KindDecision && e.Verdict != "deny" {
			continue
		}
		fmt.Fprintf(&b, "  %s %s %s %s %s tid=%d %q %s/%s verdict=%s rule=%s reaction=%s outcome=%s detail=%s\n",
			e.Time.Format("15:04:05.000"), e.Kind, e.Layer, e.HRSC, e.Syscall, e.TID, e.Thread, e.Detector, e.Severity, e.Verdict, e.Rule, e.Reaction, e.Outcome, e.Detail)
	}
	return b.String()
}

// mkQuit quits QEMU through the test's monitor and checks that kfv-run
// exits 0 with QEMU.
func (r *mkRun) quit(q *qmp) {
	r.t.Helper()
	if _, err := q.exec("quit", nil); err != nil {
		r.t.Logf("quit: %v", err) // QEMU may close the socket before answering
	}
	if st := r.p.wait(r.t, 30*time.Second); st != 0 {
		r.t.Errorf("kfv-run exited %d after quit, want 0\nstderr:\n%s", st, lastLines(r.p.stderr.String(), 30))
	}
}

// errorsIn returns the error events of evs.
func errorsIn(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == event.KindError {
			out = append(out, e.Detail)
		}
	}
	return out
}
