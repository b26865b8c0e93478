// Package event is kfv's event stream: one JSON object per line for every
// decision, reaction and lifecycle step. The schema is documented in
// docs/events.md and kept stable: fields are only ever added.
package event

import (
	"bufio"
	"encoding/json"

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
	Verdict string    `json:"verdict"`
	Errno   string    `json:"errno"`   // with verdict deny
	Applied string    `json:"applied"` // what kfv actually answered (differs from verdict in audit mode)
	Rule    string    `json:"rule"`
	Detail  string    `json:"detail"`
	// Detector and Severity describe a finding ("signature", "origin",
	// "behaviour", "rate", "memwatch"; "low" to "critical").
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	// Reaction is what a reaction event did ("pause", "link_down:all-nics"...).
	Reaction string `json:"reaction"`
	// Chain lists, for a reaction, the findings that caused it, oldest
	// first; empty otherwise.
	Chain []Link `json:"chain"`
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

// Writer writes events as JSON lines from its own goroutine, so that the
// caller (the notification loop, after it has answered QEMU) never waits on
// the disk. Emit blocks only when the queue is full: events are never
// dropped; a flood slows the loop instead.
type Writer struct {
	ch   chan *Event
	done chan struct{}

	mu  sync.Mutex
	err error // first write error
}

const queueLen = 8192

// NewWriter starts a writer to w. Close flushes and stops it.
func NewWriter(w io.Writer) *Writer {
	wr := &Writer{ch: make(chan *Event, queueLen), done: make(chan struct{})}
	go wr.run(w)
	return wr
}

func (wr *Writer) run(w io.Writer) {
	defer close(wr.done)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for e := range wr.ch {
		if err := enc.Encode(e); err != nil {
			wr.setErr(fmt.Errorf("write event: %w", err))
		}
		if len(wr.ch) == 0 {
			if err := bw.Flush(); err != nil {
				wr.setErr(fmt.Errorf("flush events: %w", err))
			}
		}
	}
	if err := bw.Flush(); err != nil {
		wr.setErr(fmt.Errorf("flush events: %w", err))
	}
}

func (wr *Writer) setErr(err error) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	if wr.err == nil {
		wr.err = err
	}
}

// Emit queues e. Time is set when zero.
func (wr *Writer) Emit(e *Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Chain == nil {
		e.Chain = []Link{} // "chain": [] on every line, never null
	}
	wr.ch <- e
}

// Err returns the first write error, if any.
func (wr *Writer) Err() error {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.err
}

// Close writes what is queued, flushes and returns the first write error.
// Emit must not be called after Close.
func (wr *Writer) Close() error {
	close(wr.ch)
	<-wr.done
	return wr.Err()
}
