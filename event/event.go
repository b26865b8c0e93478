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
	// Chain lists, for a reaction, the findings that caused it, oldest
	// first; empty otherwise.
	Chain []Link `json:"chain"`
}

// Outcomes of a reaction, in Event.Outcome.
const (
	OutcomeDone   = "done"                   // carried out
	OutcomeFailed = "failed"                 // tried and failed; the error is in Detail
	OutcomeAudit  = "audit: not carried out" // audit mode: ordered, not carried out
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
// writes the buffer out every FlushEvery (or at once past a size), so the
// notification loop never waits on the disk and pays no goroutine hand-off
// per event. Events are never dropped: past a bound, Emit waits for the
// disk instead. A process killed with SIGKILL loses at most the events of
// its last FlushEvery; Close writes everything.
type Writer struct {
	w io.Writer

	mu     sync.Mutex
	buf    []byte     // encoded, not yet written
	spare  []byte     // the buffer being written, reused
	room   *sync.Cond // signalled when buf was written out
	closed bool
	err    error // first write error
	kick   chan struct{}
	done   chan struct{}
}

// FlushEvery is how long an event may wait in memory before it is written.
const FlushEvery = 10 * time.Millisecond

const (
	flushAt = 64 << 10 // write at once past this many buffered bytes
	maxBuf  = 4 << 20  // Emit waits past this many
)

// NewWriter starts a writer to w. Close flushes and stops it.
func NewWriter(w io.Writer) *Writer {
	wr := &Writer{w: w, kick: make(chan struct{}, 1), done: make(chan struct{})}
	wr.room = sync.NewCond(&wr.mu)
	go wr.run()
	return wr
}

func (wr *Writer) run() {
	defer close(wr.done)
	t := time.NewTicker(FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-wr.kick:
		}
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
	wr.buf = wr.spare[:0]
	closed := wr.closed
	wr.mu.Unlock()
	if len(b) > 0 {
		if _, err := wr.w.Write(b); err != nil {
			wr.setErr(fmt.Errorf("write events: %w", err))
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
	wr.buf = append(e.AppendJSON(wr.buf), '\n')
	if len(wr.buf) >= flushAt {
		select {
		case wr.kick <- struct{}{}:
		default:
		}
	}
}

// Err returns the first write error, if any.
func (wr *Writer) Err() error {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.err
}

// Close writes everything queued and returns the first write error.
// Emit must not be called after Close.
func (wr *Writer) Close() error {
	wr.mu.Lock()
	wr.closed = true
	wr.room.Broadcast()
	wr.mu.Unlock()
	select {
	case wr.kick <- struct{}{}:
	default:
	}
	<-wr.done
	// A last Emit may have raced with the final flush.
	wr.flush()
	return wr.Err()
}
