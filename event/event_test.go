package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSchemaStable pins the keys of an event line: docs/events.md
// promises them on every line.
func TestSchemaStable(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Emit(&Event{Kind: KindLifecycle, VM: "vm1", Detail: "started"})
	w.Emit(&Event{Kind: KindDecision, VM: "vm1", PID: 10, TID: 11, Thread: "CPU 0/KVM", Layer: "L2", HRSC: "vcpu0",
		Syscall: "openat", Source: "seccomp", Args: `path="/etc/shadow"`, Verdict: "deny", Errno: "EACCES", Applied: "deny", Rule: "r", Detail: "why"})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	want := []string{"time", "kind", "vm", "mode", "pid", "tid", "thread", "layer", "hrsc", "syscall", "source", "args", "verdict", "errno", "applied", "rule", "detail", "detector", "severity", "reaction", "outcome", "enforced", "enforced_by", "chain", "count", "first", "last"}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		for _, k := range want {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d lacks %q: %s", i, k, l)
			}
		}
		if len(m) != len(want) {
			t.Errorf("line %d has %d keys, want %d (update docs/events.md when adding one): %s", i, len(m), len(want), l)
		}
		ts, _ := m["time"].(string)
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("line %d time %q: %v", i, ts, err)
		}
	}
	var e Event
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil {
		t.Fatal(err)
	}
	if e.Syscall != "openat" || e.Errno != "EACCES" || e.Thread != "CPU 0/KVM" || e.Args != `path="/etc/shadow"` {
		t.Errorf("round trip: %+v", e)
	}
}

// TestNoEventLost floods the writer well past its queue: every event
// arrives, in order.
func TestNoEventLost(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	const n = 3 * (maxBuf / 200) // well past the bound at which Emit waits
	for i := 0; i < n; i++ {
		w.Emit(&Event{Kind: KindDecision, PID: i})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&buf)
	for i := 0; i < n; i++ {
		var e Event
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if e.PID != i {
			t.Fatalf("event %d has pid %d: out of order", i, e.PID)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorReported(t *testing.T) {
	w := NewWriter(failWriter{})
	w.Emit(&Event{Kind: KindWarning})
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close = %v, want the write error", err)
	}
}

func TestOpenFileEndsTornLine(t *testing.T) {
	path := t.TempDir() + "/events.jsonl"
	whole := `{"kind":"lifecycle"}` + "\n"
	for _, c := range []struct{ before, want string }{
		{"", "A\n"},
		{whole, whole + "A\n"},
		{whole + `{"kind":"deci`, whole + `{"kind":"deci` + "\nA\n"},
	} {
		if err := os.WriteFile(path, []byte(c.before), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("A\n"); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, _ := os.ReadFile(path)
		if string(got) != c.want {
			t.Errorf("after %q: file holds %q, want %q", c.before, got, c.want)
		}
	}
}

// TestOpenFileFIFO: a FIFO is opened write-only, as before: OpenFile
// waits for its reader and reads nothing from it.
func TestOpenFileFIFO(t *testing.T) {
	path := t.TempDir() + "/events.fifo"
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip(err)
	}
	got := make(chan string, 1)
	go func() {
		b, _ := os.ReadFile(path)
		got <- string(b)
	}()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("A\n")
	f.Close()
	if s := <-got; s != "A\n" {
		t.Errorf("the FIFO's reader got %q, want %q", s, "A\n")
	}
}
