package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) events(t *testing.T) []Event {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		out = append(out, e)
	}
	return out
}

func denied(path string) *Event {
	return &Event{Kind: KindDecision, VM: "vm1", Layer: "L2", HRSC: "block-worker", Syscall: "openat", Source: "seccomp",
		Args: `path="` + path + `"`, Verdict: "deny", Errno: "EACCES", Applied: "deny", Rule: "default", Thread: "worker"}
}

// TestFoldFlood: a flood of identical denials writes the first ones in
// full and folds the rest into one line with their count; a finding in
// the middle of it is written, and a distinct decision's first one too.
func TestFoldFlood(t *testing.T) {
	var out syncBuf
	w := NewWriterOptions(&out, Options{PerDecision: 10, BytesPerSecond: 1 << 20})
	const n = 5000
	for i := range n {
		w.Emit(denied("/etc/f" + string(rune('a'+i%26))))
		if i == n/2 {
			w.Emit(&Event{Kind: KindFinding, Detector: "rate", Severity: "high", Detail: "open flood"})
			w.Emit(&Event{Kind: KindDecision, VM: "vm1", Syscall: "connect", Verdict: "deny", Rule: "no-host-local-inet"})
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs := out.events(t)
	full, folded, findings, connects := 0, 0, 0, 0
	for _, e := range evs {
		switch {
		case e.Kind == KindDecision && e.Syscall == "openat":
			full++
		case e.Kind == KindDecision && e.Syscall == "connect":
			connects++
		case e.Kind == KindFolded:
			folded += e.Count
			if e.Syscall != "openat" || e.Rule != "default" || e.First == "" || e.Last == "" || e.Args != "" {
				t.Errorf("folded line: %+v", e)
			}
		case e.Kind == KindFinding:
			findings++
		}
	}
	if full+folded != n || full < 10 || full > 10*4 {
		t.Errorf("%d written in full, %d folded, want %d in all with about 10 a second in full", full, folded, n)
	}
	if findings != 1 || connects != 1 {
		t.Errorf("findings %d, distinct decision %d: want both written", findings, connects)
	}
	if got := w.Folded(); got != int64(folded) {
		t.Errorf("Folded() = %d, lines say %d", got, folded)
	}
	if len(out.b.String()) > 64<<10 {
		t.Errorf("%d bytes for a folded flood", len(out.b.String()))
	}
}

// TestFoldBytes: decisions that all differ still stop at the stream's
// byte budget; other events go on being written.
func TestFoldBytes(t *testing.T) {
	var out syncBuf
	w := NewWriterOptions(&out, Options{BytesPerSecond: 8 << 10})
	for i := range 2000 {
		e := denied("/x")
		e.Rule = "r" + strings.Repeat("x", i%50) // distinct decisions
		e.Args = strings.Repeat("a", 200)
		w.Emit(e)
	}
	w.Emit(&Event{Kind: KindReaction, Reaction: "pause", Outcome: OutcomeDone})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var fullBytes, folded, reactions int
	for _, e := range out.events(t) {
		switch e.Kind {
		case KindDecision:
			fullBytes += len(e.AppendJSON(nil)) + 1
		case KindFolded:
			folded += e.Count
		case KindReaction:
			reactions++
		}
	}
	if fullBytes > 8<<10+1024 || folded == 0 || reactions != 1 {
		t.Errorf("%d bytes of decisions in full, %d folded, %d reactions: want about 8 KiB, the rest folded, the reaction written", fullBytes, folded, reactions)
	}
}

// TestFoldedLineAtSecondsEnd: the folded line comes at the end of its
// second without another event to carry it.
func TestFoldedLineAtSecondsEnd(t *testing.T) {
	var out syncBuf
	w := NewWriterOptions(&out, Options{PerDecision: 1})
	defer w.Close()
	for range 5 {
		w.Emit(denied("/etc/shadow"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := out.events(t)
		if len(evs) == 2 && evs[1].Kind == KindFolded && evs[1].Count == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no folded line after the second: %+v", evs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNoFoldByDefault: NewWriter writes every decision.
func TestNoFoldByDefault(t *testing.T) {
	var out syncBuf
	w := NewWriter(&out)
	for range 1000 {
		w.Emit(denied("/etc/shadow"))
	}
	w.Close()
	if n := len(out.events(t)); n != 1000 {
		t.Errorf("%d lines, want 1000", n)
	}
}
