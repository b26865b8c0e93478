// Package event is kfv's event stream: one JSON object per line for every
// decision, reaction and lifecycle step. The schema is documented in
// docs/events.md and kept stable: fields are only ever added.
package event

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Kinds of events.
const (
	KindDecision  = "decision"  // a verdict on one notified syscall
	KindFinding   = "finding"   // what a detector concluded (input of the vertical orchestrator)
	KindReaction  = "reaction"  // a reaction the vertical orchestrator ordered, and how it went
	KindLifecycle = "lifecycle" // QEMU started, exited, signal forwarded...
	KindWarning   = "warning"   // something an operator should know
	KindError     = "error"     // kfv failed at something
	// KindFolded stands for Count decisions, or findings of low or
	// medium severity, identical to it (same VM, layer, resource,
	// syscall, source, rule, verdict, errno and answer; same detector and
	// severity) made between First and Last that were not written one by
	// one: past the writer's budget (Options). Its other fields are the
	// last one's; a folded finding has a detector.
	KindFolded = "folded"
)

// Event is one line of the stream. Every field is always present, so
// consumers can rely on the keys; empty strings and zeros mean "does not
// apply".
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	VM      string    `json:"vm"`
	Mode    string    `json:"mode"`   // enforce or audit
	PID     int       `json:"pid"`    // QEMU's process (thread group) id
	TID     int       `json:"tid"`    // the calling thread
	Thread  string    `json:"thread"` // its name
	Layer   string    `json:"layer"`  // L1, L2, L3
	HRSC    string    `json:"hrsc"`   // hypervisor resource
	Syscall string    `json:"syscall"`
	Source  string    `json:"source"` // what produced the event: "seccomp", "supervisor"...
	Args    string    `json:"args"`   // a readable summary of the arguments
	// Verdict is what was decided on a call: allow or deny (Applied
	// says what kfv answered). A reaction's outcome is in Outcome.
	Verdict string `json:"verdict"`
	Errno   string `json:"errno"`   // with verdict deny
	Applied string `json:"applied"` // what kfv actually answered (differs from verdict in audit mode)
	Rule    string `json:"rule"`
	Detail  string `json:"detail"`
	// Detector and Severity describe a finding ("signature", "origin",
	// "behaviour", "rate", "memwatch"; "low" to "critical").
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	// Reaction is what a reaction event did ("pause", "link_down:all-nics"...).
	Reaction string `json:"reaction"`
	// Outcome is, for a reaction, how it went: OutcomeDone,
	// OutcomeFailed (the error in Detail) or OutcomeAudit. It is "" on
	// other lines.
	Outcome string `json:"outcome"`
	// Enforced says, for a reaction kfv enforces outside QEMU (pause,
	// continue, link_down, link_up), how it was carried out and what kfv
	// saw from outside: "qmp stop + SIGSTOP: 9 of 9 threads stopped",
	// "outside only (kfv's monitor is gone): SIGSTOP: 9 of 9 threads
	// stopped". "" on other lines.
	Enforced string `json:"enforced"`
	// EnforcedBy says, for a reaction, by which path it took effect:
	// ByQMPAndOutside, ByOutside (kfv alone, without QEMU's cooperation:
	// its monitor was gone or did not answer, or the reaction is kfv's,
	// like kill) or ByQMP (device_del); "" in audit mode and on other
	// lines. A bounded value, for alerts and the metrics' label.
	EnforcedBy string `json:"enforced_by"`
	// Chain lists, for a reaction, the findings that caused it, oldest
	// first; empty otherwise.
	Chain []Link `json:"chain"`
	// Count, First and Last say, on a folded line, how many decisions it
	// stands for and when the first and the last of them were made
	// (RFC 3339); 0 and "" on other lines.
	Count int    `json:"count"`
	First string `json:"first"`
	Last  string `json:"last"`
}

// Outcomes of a reaction, in Event.Outcome.
const (
	OutcomeDone   = "done"                   // carried out
	OutcomeFailed = "failed"                 // tried and failed; the error is in Detail
	OutcomeAudit  = "audit: not carried out" // audit mode: ordered, not carried out
)

// The paths of a reaction (EnforcedBy).
const (
	ByQMPAndOutside = "qmp+outside" // QEMU answered the QMP command, and kfv enforced it outside QEMU
	ByOutside       = "outside"     // kfv alone, outside QEMU
	ByQMP           = "qmp"         // through QEMU's monitor only
)

// ReactionOutcome returns the outcome of a reaction event. Streams
// written before the outcome field existed carried it in verdict, so
// when Outcome is empty it returns Verdict.
func (e *Event) ReactionOutcome() string {
	if e.Outcome == "" {
		return e.Verdict
	}
	return e.Outcome
}

// Link is one finding in a reaction's chain.
type Link struct {
	Time     time.Time `json:"time"`
	Layer    string    `json:"layer"`
	HRSC     string    `json:"hrsc"`
	Detector string    `json:"detector"`
	Severity string    `json:"severity"`
	Syscall  string    `json:"syscall"`
	TID      int       `json:"tid"`
	Rule     string    `json:"rule"`
	Detail   string    `json:"detail"`
}

// Writer writes events as JSON lines. Emit encodes the event in the
// caller's goroutine and appends it to a buffer; the writer's own goroutine
// writes the buffer out FlushEvery after the first event buffered (or at
// once past a size), so the notification loop never waits on the disk and
// pays no goroutine hand-off per event, and an idle writer sleeps. Past a
// bound, Emit waits for the disk rather than drop an event. A process
// killed with SIGKILL loses at most the events of its last FlushEvery;
// Close writes everything.
//
// Decisions and low and medium findings are bounded (Options): past a
// budget per second for each distinct one, and past a budget of bytes per
// second for the whole stream, they are folded into one KindFolded line
// per distinct one and second, with their count. High and critical
// findings, reactions, lifecycle steps, warnings and errors are never
// folded, and the first ones of each kind in a second are always written
// in full.
type Writer struct {
	w    io.Writer
	opts Options

	mu     sync.Mutex
	buf    []byte     // encoded, not yet written
	spare  []byte     // the buffer being written, reused
	room   *sync.Cond // signalled when buf was written out
	closed bool
	err    error // first write error
	kick   chan struct{}
	done   chan struct{}

	// The current second of the budgets: when it began, the bytes
	// written in it, and each distinct decision's state.
	window      time.Time
	windowBytes int
	folds       map[foldKey]*fold
	pending     int // distinct decisions with folded ones this second
	folded      int64
	written     int64 // events written in full (buffered or out)
	lost        int64 // events in writes that failed
	lines       int   // lines in buf
}

// Options bound what a Writer writes.
type Options struct {
	// PerDecision is how many identical decisions a second are written
	// in full; 0 writes every one.
	PerDecision int
	// BytesPerSecond caps the bytes of decisions written in full in a
	// second (the rest are folded); 0 sets no cap. Other events always
	// count, and are always written.
	BytesPerSecond int
}

// DefaultOptions are the bounds of kfv-run's event streams: a flood of
// denied calls writes at most about this much a second, whatever its
// rate (docs/events.md).
var DefaultOptions = Options{PerDecision: 200, BytesPerSecond: 1 << 20}

type foldKey struct {
	kind, vm, layer, hrsc, syscall, source, rule, verdict, errno, applied, detector, severity string
}

// foldable says which events a budget may fold: decisions, and findings
// of low and medium severity (a denied call's signature finding, one per
// call of a flood). High and critical findings, reactions, lifecycle
// steps, warnings and errors are always written.
func foldable(e *Event) bool {
	return e.Kind == KindDecision || e.Kind == KindFinding && (e.Severity == "low" || e.Severity == "medium")
}

type fold struct {
	full        int // written in full this second
	count       int // folded this second
	first, last time.Time
	tmpl        Event // the last one folded
}

// FlushEvery is how long an event may wait in memory before it is written.
const FlushEvery = 10 * time.Millisecond

const (
	flushAt = 64 << 10 // write at once past this many buffered bytes
	maxBuf  = 4 << 20  // Emit waits past this many
)

// NewWriter starts a writer to w that writes every event in full. Close
// flushes and stops it.
func NewWriter(w io.Writer) *Writer { return NewWriterOptions(w, Options{}) }

// NewWriterOptions starts a writer to w with the bounds of opts.
func NewWriterOptions(w io.Writer, opts Options) *Writer {
	wr := &Writer{w: w, opts: opts, kick: make(chan struct{}, 1), done: make(chan struct{}), folds: map[foldKey]*fold{}}
	wr.room = sync.NewCond(&wr.mu)
	go wr.run()
	return wr
}

func (wr *Writer) wake() {
	select {
	case wr.kick <- struct{}{}:
	default:
	}
}

// run writes the buffer FlushEvery after it got its first event, and
// closes a second of folded decisions once it is over. With nothing
// buffered and nothing folded it blocks.
func (wr *Writer) run() {
	defer close(wr.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		wr.mu.Lock()
		var wait time.Duration = -1
		if len(wr.buf) > 0 || wr.closed {
			wait = FlushEvery
		}
		if wr.pending > 0 {
			if d := time.Until(wr.window.Add(time.Second)); wait < 0 || d < wait {
				wait = max(d, 0)
			}
		}
		closed := wr.closed
		wr.mu.Unlock()
		switch {
		case closed:
		case wait < 0:
			<-wr.kick
			continue // something arrived: wait for its batch
		default:
			t.Reset(wait)
			select {
			case <-t.C:
			case <-wr.kick:
				if !t.Stop() {
					<-t.C
				}
				wr.mu.Lock()
				big := len(wr.buf) >= flushAt || wr.closed
				wr.mu.Unlock()
				if !big {
					continue
				}
			}
		}
		wr.mu.Lock()
		wr.roll(time.Now())
		wr.mu.Unlock()
		if last := wr.flush(); last {
			return
		}
	}
}

// flush writes what is buffered; it reports whether the writer is closed
// and drained.
func (wr *Writer) flush() bool {
	wr.mu.Lock()
	b := wr.buf
	lines := wr.lines
	wr.buf, wr.lines = wr.spare[:0], 0
	closed := wr.closed
	wr.mu.Unlock()
	if len(b) > 0 {
		if _, err := wr.w.Write(b); err != nil {
			wr.setErr(fmt.Errorf("write events: %w", err))
			wr.mu.Lock()
			wr.lost += int64(lines)
			wr.mu.Unlock()
		}
	}
	wr.mu.Lock()
	wr.spare = b[:0]
	wr.room.Broadcast()
	drained := closed && len(wr.buf) == 0
	wr.mu.Unlock()
	return drained
}

func (wr *Writer) setErr(err error) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	if wr.err == nil {
		wr.err = err
	}
}

// roll ends the budgets' second when now is past it: each distinct
// decision with folded ones gets its folded line. Called with mu held.
func (wr *Writer) roll(now time.Time) {
	if now.Sub(wr.window) < time.Second {
		return
	}
	wr.foldOut()
	wr.window, wr.windowBytes = now, 0
	clear(wr.folds)
}

// foldOut appends the folded lines of the current second. Called with mu
// held.
func (wr *Writer) foldOut() {
	if wr.pending == 0 {
		return
	}
	for _, f := range wr.folds {
		if f.count == 0 {
			continue
		}
		e := f.tmpl
		what := "decisions"
		if e.Kind == KindFinding {
			what = "findings"
		}
		e.Kind, e.Count = KindFolded, f.count
		e.First, e.Last = f.first.Format(time.RFC3339Nano), f.last.Format(time.RFC3339Nano)
		e.Args, e.Detail = "", fmt.Sprintf("%d more %s like this one, not written one by one (the last one's fields)", f.count, what)
		wr.buf = append(e.AppendJSON(wr.buf), '\n')
		wr.lines++
		f.count = 0
	}
	wr.pending = 0
}

// Emit encodes and queues e. Time is set when zero. Safe for concurrent
// use.
func (wr *Writer) Emit(e *Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Chain == nil {
		e.Chain = []Link{} // "chain": [] on every line, never null
	}
	wr.mu.Lock()
	defer wr.mu.Unlock()
	for len(wr.buf) >= maxBuf && !wr.closed {
		wr.room.Wait() // the disk is behind: wait rather than drop
	}
	was := len(wr.buf)
	if foldable(e) && (wr.opts.PerDecision > 0 || wr.opts.BytesPerSecond > 0) {
		wr.roll(time.Now())
		k := foldKey{e.Kind, e.VM, e.Layer, e.HRSC, e.Syscall, e.Source, e.Rule, e.Verdict, e.Errno, e.Applied, e.Detector, e.Severity}
		f := wr.folds[k]
		if f == nil {
			f = &fold{}
			wr.folds[k] = f
		}
		overKind := wr.opts.PerDecision > 0 && f.full >= wr.opts.PerDecision
		overBytes := wr.opts.BytesPerSecond > 0 && wr.windowBytes >= wr.opts.BytesPerSecond
		if overKind || overBytes {
			if f.count == 0 {
				f.first = e.Time
				wr.pending++
				if wr.pending == 1 {
					// The second's end needs the writer awake: it sets
					// its timer for it then. Later folds need nothing of
					// it (waking it on every one cost each folded call a
					// scheduler round trip).
					wr.wake()
				}
			}
			f.count++
			f.last = e.Time
			f.tmpl = *e
			wr.folded++
			return
		}
		f.full++
	}
	wr.buf = append(e.AppendJSON(wr.buf), '\n')
	wr.written++
	wr.lines++
	wr.windowBytes += len(wr.buf) - was
	if was == 0 || len(wr.buf) >= flushAt {
		wr.wake()
	}
}

// Folded returns how many events were folded so far.
func (wr *Writer) Folded() int64 {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.folded
}

// Written returns how many events were written in full so far (queued
// or out).
func (wr *Writer) Written() int64 {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.written
}

// Lost returns how many lines were in writes that failed.
func (wr *Writer) Lost() int64 {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.lost
}

// Err returns the first write error, if any.
func (wr *Writer) Err() error {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.err
}

// Close writes everything queued, the folded lines of the last second
// included, and returns the first write error. Emit must not be called
// after Close.
func (wr *Writer) Close() error {
	wr.mu.Lock()
	wr.closed = true
	wr.foldOut()
	wr.room.Broadcast()
	wr.mu.Unlock()
	wr.wake()
	<-wr.done
	// A last Emit may have raced with the final flush.
	wr.flush()
	return wr.Err()
}
