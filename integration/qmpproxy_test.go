package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/guest"
	"kfv/qmpproxy"
)

// TestQMPProxy runs real QEMU with its monitors rewritten by
// qmpproxy.Rewrite and the proxy in the test process (no kfv): a monitor
// given as a path and one given as an inherited listening fd, as libvirt
// does. Through the proxy a manager negotiates, queries, passes an fd with
// add-fd (QEMU lists it in its fd sets), and adds block nodes by path with
// blockdev-add and with drive_add through human-monitor-command: the hook
// sees each path before QEMU opens it, and a path the hook refuses never
// reaches QEMU.
func TestQMPProxy(t *testing.T) {
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	dir := t.TempDir()
	disk := filepath.Join(dir, "hot.raw")
	disk2 := filepath.Join(dir, "hmp.raw")
	forbidden := filepath.Join(dir, "forbidden.raw")
	for _, p := range []string{disk, disk2, forbidden} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// libvirt's monitor: a listening socket QEMU would inherit as fd 23.
	lvPath := filepath.Join(dir, "libvirt-monitor.sock")
	lvLn, err := net.ListenUnix("unix", &net.UnixAddr{Name: lvPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lvFile, err := lvLn.File()
	if err != nil {
		t.Fatal(err)
	}
	lvLn.SetUnlinkOnClose(false)
	lvLn.Close()
	defer lvFile.Close()

	mgrPath := filepath.Join(dir, "manager.sock")
	args := append(guest.RawArgs(img, "tcg"), "-name", "guest=kfv-qmpproxy",
		"-qmp", "unix:"+mgrPath+",server=on,wait=off",
		"-chardev", "socket,id=charmonitor,fd=23,server=on,wait=off",
		"-mon", "chardev=charmonitor,id=monitor,mode=control")
	private := filepath.Join(dir, "kfv")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	qargs, mons, err := qmpproxy.Rewrite(args, private)
	if err != nil {
		t.Fatal(err)
	}
	if len(mons) != 2 || !mons[0].Proxied() || !mons[1].Proxied() || mons[1].FD != 23 {
		t.Fatalf("monitors %+v, want the path one and fd 23, both proxied", mons)
	}
	if slices.ContainsFunc(qargs, func(a string) bool { return strings.Contains(a, mgrPath) || strings.Contains(a, "fd=23") }) {
		t.Fatalf("QEMU would still be given the manager's monitors: %q", qargs)
	}

	var mu sync.Mutex
	var seen []string // absolute files the hook was shown
	var names []string
	p, err := qmpproxy.New(qmpproxy.Config{
		Cwd: dir,
		OnCommand: func(c *qmpproxy.Command) error {
			mu.Lock()
			defer mu.Unlock()
			names = append(names, c.Name)
			if c.NeedsErr != nil {
				return c.NeedsErr
			}
			if c.Needs == nil {
				return nil
			}
			for _, f := range c.Needs.Set.Files {
				if f.Abs == forbidden {
					return fmt.Errorf("%s is not this VM's", f.Abs)
				}
				seen = append(seen, f.Abs)
			}
			return nil
		},
		OnError: func(m *qmpproxy.Monitor, err error) { t.Errorf("proxy on %s: %v", m.Option, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var serving sync.WaitGroup
	for i, m := range mons {
		var inherited *os.File
		if m.FD == 23 {
			inherited = lvFile
		}
		ln, err := qmpproxy.Listen(m, inherited)
		if err != nil {
			t.Fatal(err)
		}
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := p.Serve(ln, mons[i]); !errors.Is(err, qmpproxy.ErrClosed) {
				t.Errorf("serve %s: %v", mons[i].Option, err)
			}
		}()
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy: %v", err)
		}
		serving.Wait()
	}()

	proc := start(t, append([]string{qemu}, qargs...))
	q := dialProxied(t, mgrPath)
	lv := dialProxied(t, lvPath)

	if st := q.exec(t, "query-status", nil, nil); !strings.Contains(string(st), `"running"`) {
		t.Errorf("query-status: %s", st)
	}
	if st := lv.exec(t, "query-status", nil, nil); !strings.Contains(string(st), `"running"`) {
		t.Errorf("query-status through the inherited fd: %s", st)
	}

	// add-fd: the fd reaches QEMU with its command.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := q.exec(t, "add-fd", map[string]any{"fdset-id": 7, "opaque": "kfv-test"}, f)
	f.Close()
	if !strings.Contains(string(r), `"fdset-id": 7`) {
		t.Errorf("add-fd: %s", r)
	}
	if sets := q.exec(t, "query-fdsets", nil, nil); !strings.Contains(string(sets), `"kfv-test"`) {
		t.Errorf("query-fdsets does not list the fd passed through the proxy: %s", sets)
	}

	// blockdev-add by path: the hook sees the file, QEMU opens it.
	q.exec(t, "blockdev-add", map[string]any{"driver": "file", "filename": disk, "node-name": "hot", "read-only": true}, nil)
	// drive_add through HMP.
	q.exec(t, "human-monitor-command", map[string]any{"command-line": "drive_add 0 if=none,id=hmp9,file=" + disk2 + ",format=raw,readonly=on"}, nil)
	// A path the hook refuses never reaches QEMU.
	e := q.execErr(t, "blockdev-add", map[string]any{"driver": "file", "filename": forbidden, "node-name": "nope"})
	if e.Class != "GenericError" || !strings.HasPrefix(e.Desc, "kfv: ") || !strings.Contains(e.Desc, forbidden) {
		t.Errorf("refused blockdev-add answered %+v", e)
	}
	nodes := string(q.exec(t, "query-named-block-nodes", nil, nil))
	if !strings.Contains(nodes, disk) || !strings.Contains(nodes, disk2) {
		t.Errorf("QEMU's block nodes do not include %s and %s: %s", disk, disk2, nodes)
	}
	if strings.Contains(nodes, forbidden) || strings.Contains(nodes, `"nope"`) {
		t.Errorf("QEMU opened the refused %s: %s", forbidden, nodes)
	}
	mu.Lock()
	if !slices.Contains(seen, disk) || !slices.Contains(seen, disk2) {
		t.Errorf("the hook saw files %q, want %s and %s", seen, disk, disk2)
	}
	mu.Unlock()

	q.exec(t, "quit", nil, nil)
	if code := proc.wait(t, 20*time.Second); code != 0 {
		t.Errorf("QEMU exited %d\n%s", code, proc.stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"qmp_capabilities", "query-status", "add-fd", "query-fdsets", "blockdev-add", "human-monitor-command", "quit"} {
		if !slices.Contains(names, want) {
			t.Errorf("the hook never saw %s (saw %q)", want, names)
		}
	}
}

// proxied is a manager's QMP connection through the proxy.
type proxied struct {
	c  *net.UnixConn
	rd *bufio.Reader
}

func dialProxied(t *testing.T, path string) *proxied {
	t.Helper()
	var c net.Conn
	if !waitFor(10*time.Second, func() bool {
		var err error
		c, err = net.Dial("unix", path)
		return err == nil
	}) {
		t.Fatalf("connect to %s: timed out", path)
	}
	t.Cleanup(func() { c.Close() })
	p := &proxied{c: c.(*net.UnixConn), rd: bufio.NewReader(c)}
	if m := p.read(t); m["QMP"] == nil {
		t.Fatalf("greeting through the proxy: %v", m)
	}
	p.exec(t, "qmp_capabilities", nil, nil)
	return p
}

func (p *proxied) read(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	p.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := p.rd.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read from the proxy: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("from the proxy %q: %v", line, err)
	}
	return m
}

// send writes a command, with f passed along (SCM_RIGHTS) when not nil,
// and returns the answer (events skipped).
func (p *proxied) send(t *testing.T, cmd string, args any, f *os.File) map[string]json.RawMessage {
	t.Helper()
	req := map[string]any{"execute": cmd, "id": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if f != nil {
		_, _, err = p.c.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = p.c.Write(b)
	}
	if err != nil {
		t.Fatalf("send %s: %v", cmd, err)
	}
	for {
		m := p.read(t)
		if _, ok := m["event"]; ok {
			continue
		}
		if string(m["id"]) != fmt.Sprintf("%q", cmd) {
			t.Fatalf("%s answered %v: wrong id", cmd, m)
		}
		return m
	}
}

// exec runs a command that must succeed and returns its "return".
func (p *proxied) exec(t *testing.T, cmd string, args any, f *os.File) json.RawMessage {
	t.Helper()
	m := p.send(t, cmd, args, f)
	if e, ok := m["error"]; ok {
		t.Fatalf("%s: %s", cmd, e)
	}
	return m["return"]
}

// execErr runs a command that must fail and returns its error.
func (p *proxied) execErr(t *testing.T, cmd string, args any) struct{ Class, Desc string } {
	t.Helper()
	m := p.send(t, cmd, args, nil)
	var e struct{ Class, Desc string }
	if err := json.Unmarshal(m["error"], &e); err != nil {
		t.Fatalf("%s answered %v, want an error", cmd, m)
	}
	return e
}
