package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// qmpMon is a QMP client that keeps the asynchronous events (which the
// benign tests wait for: DEVICE_DELETED, MIGRATION...) and can hand QEMU
// a file descriptor with SCM_RIGHTS, as libvirt does for getfd.
type qmpMon struct {
	c       *net.UnixConn
	replies chan qmpMsg

	mu     sync.Mutex
	events []qmpMsg
	err    error // why the reader stopped
}

type qmpMsg struct {
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// dialMon connects to QEMU's QMP socket at path, waiting for it to appear,
// and negotiates capabilities.
func dialMon(t *testing.T, path string, timeout time.Duration) *qmpMon {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var c net.Conn
	for {
		var err error
		c, err = net.Dial("unix", path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to QMP at %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := &qmpMon{c: c.(*net.UnixConn), replies: make(chan qmpMsg, 1)}
	t.Cleanup(func() { c.Close() })
	rd := bufio.NewReader(c)
	if _, err := rd.ReadBytes('\n'); err != nil { // greeting
		t.Fatalf("qmp greeting: %v", err)
	}
	go m.read(rd)
	if _, err := m.exec("qmp_capabilities", nil); err != nil {
		t.Fatalf("qmp_capabilities: %v", err)
	}
	return m
}

func (m *qmpMon) read(rd *bufio.Reader) {
	defer close(m.replies)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			return
		}
		var msg qmpMsg
		if err := json.Unmarshal(line, &msg); err != nil {
			m.mu.Lock()
			m.err = fmt.Errorf("qmp: %q: %w", line, err)
			m.mu.Unlock()
			return
		}
		if msg.Event != "" {
			m.mu.Lock()
			m.events = append(m.events, msg)
			m.mu.Unlock()
			continue
		}
		m.replies <- msg
	}
}

// exec runs cmd and returns its "return" value; a QMP error is an error.
func (m *qmpMon) exec(cmd string, args any) (json.RawMessage, error) {
	return m.execFile(cmd, args, nil)
}

// execFile runs cmd with f's descriptor attached (SCM_RIGHTS), as getfd
// and add-fd want it. f may be nil.
func (m *qmpMon) execFile(cmd string, args any, f *os.File) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	var oob []byte
	if f != nil {
		oob = syscall.UnixRights(int(f.Fd()))
	}
	if err := m.c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	if _, _, err := m.c.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
		return nil, fmt.Errorf("qmp %s: send: %w", cmd, err)
	}
	select {
	case r, ok := <-m.replies:
		if !ok {
			m.mu.Lock()
			defer m.mu.Unlock()
			return nil, fmt.Errorf("qmp %s: connection closed: %w", cmd, m.err)
		}
		if r.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, r.Error.Class, r.Error.Desc)
		}
		return r.Return, nil
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("qmp %s: no reply within 60s", cmd)
	}
}

// hmp runs a human monitor command. HMP reports failures as text in its
// return value, so any non-empty output is an error here: savevm and
// loadvm print nothing when they succeed.
func (m *qmpMon) hmp(line string) error {
	r, err := m.exec("human-monitor-command", map[string]any{"command-line": line})
	if err != nil {
		return err
	}
	var out string
	if err := json.Unmarshal(r, &out); err != nil {
		return fmt.Errorf("hmp %q: %w", line, err)
	}
	if out != "" {
		return fmt.Errorf("hmp %q: %s", line, out)
	}
	return nil
}

// waitEvent waits for an event named name whose data satisfies match
// (nil: any), seen at any time since the connection was made.
func (m *qmpMon) waitEvent(name string, timeout time.Duration, match func(json.RawMessage) bool) (qmpMsg, error) {
	var found qmpMsg
	ok := waitFor(timeout, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, e := range m.events {
			if e.Event == name && (match == nil || match(e.Data)) {
				found = e
				return true
			}
		}
		return false
	})
	if !ok {
		return found, errors.New("no " + name + " event within " + timeout.String())
	}
	return found, nil
}

// status returns query-status's "status" field.
func (m *qmpMon) status() (string, error) {
	r, err := m.exec("query-status", nil)
	if err != nil {
		return "", err
	}
	var s struct{ Status string }
	if err := json.Unmarshal(r, &s); err != nil {
		return "", fmt.Errorf("query-status: %w", err)
	}
	return s.Status, nil
}

// started is qmp.started for a benign run's monitor.
func (m *qmpMon) started() (string, error) {
	st, err := m.status()
	for deadline := time.Now().Add(10 * time.Second); err == nil && st == "prelaunch" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		st, err = m.status()
	}
	return st, err
}
