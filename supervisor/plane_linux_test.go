//go:build linux

package supervisor

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/profiles"
)

// syncBuffer is an io.Writer the test reads while the plane writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKillDoesNotWaitForTheMonitor: a pause waits for QEMU's monitor,
// which here never comes up; a kill ordered after it must not wait
// behind it. The process killed is a sleep standing in for QEMU.
func TestKillDoesNotWaitForTheMonitor(t *testing.T) {
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	events := &syncBuffer{}
	ew := event.NewWriter(events)
	cfg := &Config{Mode: Enforce, Events: ew}
	proc := &process{pid: cmd.Process.Pid, pidfd: pidfd}
	p := &plane{cfg: cfg, em: emitter{cfg: cfg, proc: proc}, proc: proc, stop: make(chan struct{}), done: make(chan struct{}), monReady: make(chan struct{}),
		reactions: newQueue[orch.Reaction](planeQueue), reactDone: make(chan struct{})}
	go p.reactor()
	defer func() { close(p.stop); p.reactions.close(); <-p.reactDone }()

	p.order(orch.Reaction{Kind: profiles.ReactPause, Rule: "test-pause"})
	p.order(orch.Reaction{Kind: profiles.ReactKill, Rule: "test-kill"})
	select {
	case <-exited:
	case <-time.After(monitorTimeout / 2):
		t.Fatalf("the kill waited behind the pause; events:\n%s", events)
	}
	if !waitUntil(5*time.Second, func() bool { return strings.Contains(events.String(), `"rule":"test-kill"`) }) {
		t.Errorf("no reaction event for the kill:\n%s", events)
	}
}

func waitUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
