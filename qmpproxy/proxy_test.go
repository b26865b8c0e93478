package qmpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeQEMU serves QMP on a unix socket the way QEMU does: a greeting,
// then one answer per command, in order, with the command's id; fds that
// come with a read are kept for the commands parsed from it (getfd reads
// the fd's file and answers with its content). Commands:
// qmp_capabilities, query-status, stop (an event, then the answer),
// slow (answers after 200 ms), give-fd (the answer carries a pipe's read
// end holding "from-qemu"), anything else answers {}.
type fakeQEMU struct {
	path string
	ln   *net.UnixListener

	mu  sync.Mutex
	got []string // command names, in order
}

func newFakeQEMU(t *testing.T, dir string) *fakeQEMU {
	t.Helper()
	q := &fakeQEMU{path: filepath.Join(dir, "qemu.sock")}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: q.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	q.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			q.serve(c) // one client at a time, as QEMU's monitor
		}
	}()
	return q
}

func (q *fakeQEMU) commands() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.got)
}

func (q *fakeQEMU) serve(c *net.UnixConn) {
	defer c.Close()
	c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\r\n"))
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(16*4))
	var pending []byte
	var stash []int
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		if oobn > 0 {
			for _, fd := range stash {
				unix.Close(fd)
			}
			stash = nil
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for i := range msgs {
				fds, _ := unix.ParseUnixRights(&msgs[i])
				stash = append(stash, fds...)
			}
		}
		pending = append(pending, buf[:n]...)
		dec := json.NewDecoder(bytes.NewReader(pending))
		for {
			var req struct {
				Execute string          `json:"execute"`
				ExecOOB string          `json:"exec-oob"`
				ID      json.RawMessage `json:"id"`
			}
			if err := dec.Decode(&req); err != nil {
				break
			}
			pending = pending[dec.InputOffset():]
			dec = json.NewDecoder(bytes.NewReader(pending))
			name := req.Execute + req.ExecOOB
			q.mu.Lock()
			q.got = append(q.got, name)
			q.mu.Unlock()
			id := ""
			if req.ID != nil {
				id = `, "id": ` + string(req.ID)
			}
			switch name {
			case "query-status":
				c.Write([]byte(`{"return": {"status": "running", "running": true}` + id + "}\r\n"))
			case "stop":
				c.Write([]byte(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}` + "\r\n"))
				c.Write([]byte(`{"return": {}` + id + "}\r\n"))
			case "slow":
				time.Sleep(200 * time.Millisecond)
				c.Write([]byte(`{"return": {"slow": true}` + id + "}\r\n"))
			case "getfd":
				if len(stash) == 0 {
					c.Write([]byte(`{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}` + id + "}\r\n"))
					break
				}
				f := os.NewFile(uintptr(stash[0]), "received")
				stash = stash[1:]
				b, _ := io.ReadAll(f)
				f.Close()
				s, _ := json.Marshal(string(b))
				c.Write([]byte(`{"return": {"content": ` + string(s) + `}` + id + "}\r\n"))
			case "give-fd":
				r, w, _ := os.Pipe()
				w.Write([]byte("from-qemu"))
				w.Close()
				c.WriteMsgUnix([]byte(`{"return": {}`+id+"}\r\n"), unix.UnixRights(int(r.Fd())), nil)
				r.Close()
			default:
				c.Write([]byte(`{"return": {}` + id + "}\r\n"))
			}
		}
	}
}

// harness runs a proxy in front of a fakeQEMU.
type harness struct {
	t       *testing.T
	qemu    *fakeQEMU
	proxy   *Proxy
	mon     Monitor
	serveCh chan error

	mu       sync.Mutex
	commands []*Command
	answers  []string
	events   []string
	errs     []error
}

func newHarness(t *testing.T, onCommand func(*Command) error) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, qemu: newFakeQEMU(t, dir), serveCh: make(chan error, 1)}
	h.mon = Monitor{Option: "-qmp test", Mode: "control", Path: filepath.Join(dir, "manager.sock"), FD: -1, Private: h.qemu.path}
	p, err := New(Config{
		Cwd: "/",
		OnCommand: func(c *Command) error {
			h.mu.Lock()
			h.commands = append(h.commands, c)
			h.mu.Unlock()
			if onCommand != nil {
				return onCommand(c)
			}
			return nil
		},
		OnAnswer: func(c *Command, a json.RawMessage) {
			h.mu.Lock()
			h.answers = append(h.answers, c.Name+" "+string(a))
			h.mu.Unlock()
		},
		OnEvent: func(m *Monitor, ev json.RawMessage) {
			h.mu.Lock()
			h.events = append(h.events, string(ev))
			h.mu.Unlock()
		},
		OnError: func(m *Monitor, err error) {
			h.mu.Lock()
			h.errs = append(h.errs, err)
			h.mu.Unlock()
		},
		DialTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.proxy = p
	ln, err := Listen(h.mon, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { h.serveCh <- p.Serve(ln, h.mon) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy: %v", err)
		}
		if err := <-h.serveCh; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, err := range h.errs {
			t.Errorf("proxy reported: %v", err)
		}
	})
	return h
}

// client is a manager's connection through the proxy.
type client struct {
	t   *testing.T
	c   *net.UnixConn
	dec *json.Decoder
}

func (h *harness) dial() *client {
	h.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.mon.Path, Net: "unix"})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	cl := &client{t: h.t, c: c, dec: json.NewDecoder(c)}
	if g := cl.read(); g["QMP"] == nil {
		h.t.Fatalf("greeting %v, want QMP", g)
	}
	return cl
}

func (cl *client) read() map[string]json.RawMessage {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m map[string]json.RawMessage
	if err := cl.dec.Decode(&m); err != nil {
		cl.t.Fatalf("read from proxy: %v", err)
	}
	return m
}

func (cl *client) write(s string) {
	cl.t.Helper()
	if _, err := cl.c.Write([]byte(s)); err != nil {
		cl.t.Fatal(err)
	}
}

// answer reads until an answer (skipping events) and returns it.
func (cl *client) answer() map[string]json.RawMessage {
	cl.t.Helper()
	for {
		m := cl.read()
		if _, ok := m["event"]; !ok {
			return m
		}
	}
}

func TestProxyForwards(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.dial()
	cl.write(`{"execute":"qmp_capabilities"}` + "\n")
	if a := cl.read(); string(a["return"]) != "{}" {
		t.Errorf("qmp_capabilities: %v", a)
	}
	cl.write(`{"execute":"stop","id":"s1"}`)
	ev := cl.read()
	if string(ev["event"]) != `"STOP"` {
		t.Errorf("want the STOP event first, got %v", ev)
	}
	a := cl.read()
	if string(a["id"]) != `"s1"` || a["return"] == nil {
		t.Errorf("stop: %v", a)
	}
	cl.write(`{"execute":"query-status","id":7}`)
	a = cl.read()
	if string(a["id"]) != "7" || !strings.Contains(string(a["return"]), `"running"`) {
		t.Errorf("query-status: %v", a)
	}
	if got, want := h.qemu.commands(), []string{"qmp_capabilities", "stop", "query-status"}; !slices.Equal(got, want) {
		t.Errorf("QEMU got %q, want %q", got, want)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) != 1 || !strings.Contains(h.events[0], "STOP") {
		t.Errorf("OnEvent saw %q", h.events)
	}
	if len(h.answers) != 3 || !strings.HasPrefix(h.answers[2], "query-status {\"return\"") {
		t.Errorf("OnAnswer saw %q", h.answers)
	}
	if len(h.commands) != 3 || h.commands[2].Name != "query-status" || string(h.commands[2].ID) != "7" || h.commands[2].Conn != 1 {
		t.Errorf("OnCommand saw %+v", h.commands)
	}
}

// The proxy hands the hook each command's resources, and QEMU's answer
// reaches the manager byte for byte.
func TestProxyNeedsAndBytes(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.dial()
	cl.write(`{"execute":"blockdev-add","arguments":{"driver":"file","filename":"/img/hot.raw","node-name":"hot"},"id":"b"}`)
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, err := io.ReadAtLeast(cl.c, buf, len(`{"return": {}, "id": "b"}`+"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != `{"return": {}, "id": "b"}`+"\r\n" {
		t.Errorf("answer bytes %q", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.commands[0]
	if c.NeedsErr != nil || c.Needs == nil || len(c.Needs.Set.Files) != 1 || c.Needs.Set.Files[0].Abs != "/img/hot.raw" {
		t.Errorf("OnCommand saw needs %+v (%v)", c.Needs, c.NeedsErr)
	}
}

// sendFD sends s with f attached in one sendmsg.
func sendFD(t *testing.T, c *net.UnixConn, s string, f *os.File) {
	t.Helper()
	if _, _, err := c.WriteMsgUnix([]byte(s), unix.UnixRights(int(f.Fd())), nil); err != nil {
		t.Fatal(err)
	}
}

// An fd sent with getfd arrives in QEMU with its command: QEMU reads the
// file through it.
func TestProxyPassesFDs(t *testing.T) {
	var sawFDs []int
	h := newHarness(t, func(c *Command) error {
		sawFDs = append(sawFDs, len(c.FDs))
		return nil
	})
	cl := h.dial()
	dir := t.TempDir()
	before := openFDs(t)
	for i := range 20 {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("kfv-fd-%d", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		// A command without fds first, in the same write as nothing
		// else: the fd must go with getfd, not with it.
		cl.write(`{"execute":"query-status"}`)
		sendFD(t, cl.c, fmt.Sprintf(`{"execute":"getfd","arguments":{"fdname":"f%d"},"id":%d}`, i, i), f)
		f.Close()
		cl.answer()
		a := cl.answer()
		var r struct{ Content string }
		if err := json.Unmarshal(a["return"], &r); err != nil || r.Content != fmt.Sprintf("kfv-fd-%d", i) {
			t.Fatalf("getfd %d: %s %s, want the file's content", i, a["return"], a["error"])
		}
	}
	if want := slices.Repeat([]int{0, 1}, 20); !slices.Equal(sawFDs, want) {
		t.Errorf("fds per command %v, want %v", sawFDs, want)
	}
	if after := openFDs(t); after > before+2 {
		t.Errorf("%d fds open after 20 getfd, %d before: the proxy leaks received fds", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open fds: %v", err)
	}
	return len(ents)
}

// QEMU sends no fds to clients today; if it does, they reach the client
// with the answer.
func TestProxyFDFromQEMU(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.dial()
	cl.write(`{"execute":"give-fd","id":1}`)
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := cl.c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(buf[:n]), `"id": 1`) {
		t.Errorf("answer %q", buf[:n])
	}
	fds, err := rights(oob[:oobn])
	if err != nil || len(fds) != 1 {
		t.Fatalf("got %d fds (%v), want 1 with the answer", len(fds), err)
	}
	defer closeFiles(fds)
	b, err := io.ReadAll(fds[0])
	if err != nil || string(b) != "from-qemu" {
		t.Errorf("fd from QEMU holds %q (%v)", b, err)
	}
}

// A refused command never reaches QEMU; the manager gets a QMP error with
// the command's id, and the fd sent with it is dropped.
func TestProxyRefuses(t *testing.T) {
	h := newHarness(t, func(c *Command) error {
		if c.Name == "blockdev-add" && c.Needs != nil && len(c.Needs.Set.Files) > 0 && c.Needs.Set.Files[0].Abs == "/etc/shadow" {
			return errors.New("/etc/shadow is not this VM's")
		}
		return nil
	})
	cl := h.dial()
	cl.write(`{"execute":"blockdev-add","arguments":{"driver":"file","filename":"/etc/shadow","node-name":"x"},"id":{"seq":[4,2]}}`)
	a := cl.answer()
	var e struct{ Class, Desc string }
	if err := json.Unmarshal(a["error"], &e); err != nil {
		t.Fatalf("answer %v: %v", a, err)
	}
	if e.Class != "GenericError" || e.Desc != "kfv: /etc/shadow is not this VM's" {
		t.Errorf("error %+v", e)
	}
	if string(a["id"]) != `{"seq":[4,2]}` {
		t.Errorf("id %s, want the command's", a["id"])
	}
	// The session goes on.
	cl.write(`{"execute":"query-status","id":"after"}`)
	if a := cl.answer(); string(a["id"]) != `"after"` {
		t.Errorf("after a refusal: %v", a)
	}
	if got := h.qemu.commands(); slices.Contains(got, "blockdev-add") {
		t.Errorf("QEMU got the refused command: %q", got)
	}
}

// A refusal is answered in its turn: after the answers of the commands
// sent before it.
func TestProxyRefusalInOrder(t *testing.T) {
	h := newHarness(t, func(c *Command) error {
		if c.Name == "refuse-me" {
			return errors.New("no")
		}
		return nil
	})
	cl := h.dial()
	cl.write(`{"execute":"slow","id":1}{"execute":"refuse-me","id":2}{"execute":"query-status","id":3}`)
	for _, want := range []string{"1", "2", "3"} {
		if a := cl.answer(); string(a["id"]) != want {
			t.Fatalf("answer %v, want id %s next", a, want)
		}
	}
}

// Commands cut anywhere, concatenated or separated by any whitespace are
// all seen and answered.
func TestProxyPartialAndConcatenated(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.dial()
	msg := "{\"execute\":\"query-status\",\"id\":1}{\"execute\":\"query-status\",\"id\":2}\r\n \t{\"execute\":\n\"query-status\",\"id\":3}\n"
	for i := 0; i < len(msg); i++ {
		cl.write(msg[i : i+1])
		if i%7 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for _, want := range []string{"1", "2", "3"} {
		if a := cl.answer(); string(a["id"]) != want {
			t.Fatalf("answer %v, want id %s", a, want)
		}
	}
	if got := h.qemu.commands(); len(got) != 3 {
		t.Errorf("QEMU got %q", got)
	}
}

// Input that is not a QMP object gets an error, as from QEMU; the next
// line is read again.
func TestProxyGarbage(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.dial()
	cl.write("[1,2]\n")
	a := cl.answer()
	if !strings.Contains(string(a["error"]), "kfv: QMP input must be a JSON object") {
		t.Errorf("answer %v", a)
	}
	cl.write(`{"execute":"a","execute":"blockdev-add"}`)
	if a := cl.answer(); !strings.Contains(string(a["error"]), "duplicate key") {
		t.Errorf("answer %v", a)
	}
	cl.write(`{"execute":"query-status","id":9}`)
	if a := cl.answer(); string(a["id"]) != "9" {
		t.Errorf("answer %v", a)
	}
	if got := h.qemu.commands(); !slices.Equal(got, []string{"query-status"}) {
		t.Errorf("QEMU got %q", got)
	}
}

// Connections are served one after the other, each with its own
// connection to QEMU, as QEMU's monitor serves them.
func TestProxyReconnect(t *testing.T) {
	h := newHarness(t, nil)
	for i := range 3 {
		cl := h.dial()
		cl.write(fmt.Sprintf(`{"execute":"query-status","id":%d}`, i))
		if a := cl.answer(); string(a["id"]) != fmt.Sprint(i) {
			t.Errorf("connection %d: %v", i, a)
		}
		cl.c.Close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.commands) != 3 || h.commands[2].Conn != 3 {
		t.Errorf("commands %+v", h.commands)
	}
}

// libvirt's form: the manager's socket is a listening fd QEMU would have
// inherited; the proxy serves it.
func TestProxyInheritedListener(t *testing.T) {
	dir := t.TempDir()
	q := newFakeQEMU(t, dir)
	path := filepath.Join(dir, "libvirt-monitor.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // the fd keeps listening on the path
	ln.Close()
	defer f.Close()
	m := Monitor{Option: "-chardev socket,id=charmonitor,fd=23,server=on", ID: "charmonitor", Mode: "control", FD: 23, Private: q.path}
	pl, err := Listen(m, f)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(pl, m) }()
	defer func() {
		p.Close()
		<-done
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := &client{t: t, c: c.(*net.UnixConn), dec: json.NewDecoder(c)}
	cl.read()
	cl.write(`{"execute":"query-status","id":"lv"}`)
	if a := cl.answer(); string(a["id"]) != `"lv"` {
		t.Errorf("answer %v", a)
	}

	// A socket that is not listening is refused up front.
	a, b, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if _, err := Listen(m, a); err == nil {
		t.Error("Listen took a pipe for a listening socket")
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s0, s1 := os.NewFile(uintptr(sp[0]), "s0"), os.NewFile(uintptr(sp[1]), "s1")
	defer s0.Close()
	defer s1.Close()
	if _, err := Listen(m, s0); err == nil || !strings.Contains(err.Error(), "not a listening socket") {
		t.Errorf("Listen on a connected socket: %v", err)
	}
}

// Close ends connections in progress; the manager sees its connection end.
func TestProxyClose(t *testing.T) {
	h := newHarness(t, nil)
	cl := h.dial()
	if err := h.proxy.Close(); err != nil {
		t.Fatal(err)
	}
	cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := cl.c.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
		t.Errorf("read after Close: %v, want EOF", err)
	}
	if _, err := os.Stat(h.mon.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("manager socket left behind: %v", err)
	}
}

// When QEMU's socket never appears, the manager's connection is closed
// and the error reported.
func TestProxyNoQEMU(t *testing.T) {
	dir := t.TempDir()
	m := Monitor{Option: "-qmp test", Mode: "control", Path: filepath.Join(dir, "m.sock"), FD: -1, Private: filepath.Join(dir, "absent.sock")}
	errc := make(chan error, 1)
	p, err := New(Config{Cwd: "/", DialTimeout: 100 * time.Millisecond, OnError: func(_ *Monitor, err error) { errc <- err }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln, m)
	defer p.Close()
	c, err := net.Dial("unix", m.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
		t.Errorf("read: %v, want EOF", err)
	}
	select {
	case err := <-errc:
		if !strings.Contains(err.Error(), "absent.sock") {
			t.Errorf("reported %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no error reported")
	}
}
