package metrics

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"kfv/event"
)

func TestTextfile(t *testing.T) {
	dir := t.TempDir()
	m := New("vm/1", "v1.2.3")
	var written int64 = 7
	m.Stream(func() int64 { return written }, func() int64 { return 3 }, func() int64 { return 0 })
	m.Decision("openat", "deny", "deny", "", 40*time.Microsecond)
	m.Decision("openat", "allow", "allow", "ok", 20*time.Microsecond)
	m.Decision("connect", "allow", "allow", "ECONNREFUSED", 30*time.Microsecond)
	m.Event(&event.Event{Kind: event.KindFinding, Layer: "L2", Detector: "signature", Severity: "medium"})
	m.Event(&event.Event{Kind: event.KindReaction, Reaction: "link_down:all-nics", Outcome: event.OutcomeDone, EnforcedBy: event.ByOutside})
	m.Scan(2*time.Millisecond, 1)
	if err := m.Start(dir, 20*time.Millisecond, ""); err != nil {
		t.Fatal(err)
	}
	file := TextfileName(dir, "vm/1")
	if !strings.HasSuffix(file, "kfv-vm_1.prom") {
		t.Errorf("textfile %s", file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		`kfv_notifications_total{applied="deny",syscall="openat",verdict="deny",vm="vm/1"} 1`,
		`kfv_performed_calls_total{result="ECONNREFUSED",syscall="connect",vm="vm/1"} 1`,
		`kfv_performed_calls_total{result="ok",syscall="openat",vm="vm/1"} 1`,
		`kfv_findings_total{detector="signature",layer="L2",severity="medium",vm="vm/1"} 1`,
		`kfv_reactions_total{enforced="outside",kind="link_down",outcome="done",vm="vm/1"} 1`,
		`kfv_events_total{result="written",vm="vm/1"} 7`,
		`kfv_events_total{result="folded",vm="vm/1"} 3`,
		`kfv_decision_seconds_count{vm="vm/1"} 3`,
		`kfv_memwatch_scans_total{vm="vm/1"} 1`,
		`kfv_memwatch_tampers_total{vm="vm/1"} 1`,
		`kfv_build_info{goversion="go`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("textfile lacks %s", want)
		}
	}
	// A change is written within a period; no change, no write.
	written = 9
	m.Decision("openat", "deny", "deny", "", time.Microsecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), `kfv_events_total{result="written",vm="vm/1"} 9`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the textfile was not rewritten:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fi, _ := os.Stat(file)
	time.Sleep(100 * time.Millisecond)
	if fi2, _ := os.Stat(file); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("the textfile was rewritten with nothing changed")
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err == nil {
		t.Errorf("the textfile outlived the VM")
	}
}

func TestListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	m := New("vm1", "dev")
	m.Decision("openat", "deny", "deny", "", time.Microsecond)
	if err := m.Start("", time.Second, addr); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `kfv_notifications_total{applied="deny",syscall="openat",verdict="deny",vm="vm1"} 1`) {
		t.Errorf("scrape:\n%s", b)
	}
}

func TestNilVM(t *testing.T) {
	var m *VM
	m.Decision("openat", "deny", "deny", "", 0)
	m.Event(&event.Event{Kind: event.KindFinding})
	m.Scan(0, 0)
	if err := m.Start("", 0, ""); err != nil || m.Stop() != nil {
		t.Errorf("a nil VM must do nothing")
	}
}
