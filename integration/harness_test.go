package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

var (
	kfvRun    string // path of the kfv-run binary under test
	guestDir  string // guest cache
	repoRoot  string
	buildNote string // why kfv-run could not be built, if it could not

	// The QEMU under test: guest.QEMUBinary (KFV_QEMU, else PATH), its
	// version, or why there is none. qemuMajor lets the rare test that
	// must differ between QEMU versions say so (and why).
	qemuBin     string
	qemuVersion guest.QEMUVersion
	qemuMajor   int
	qemuNote    string
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(naiveLoaderEnv); spec != "" {
		naiveLoaderMain(spec) // never returns
	}
	repoRoot = findRepoRoot()
	guestDir = os.Getenv("KFV_GUESTS")
	if guestDir == "" {
		guestDir = filepath.Join(repoRoot, ".cache", "guests")
	}
	findQEMU()
	kfvRun = os.Getenv("KFV_RUN")
	var cleanup func()
	if kfvRun == "" {
		dir, err := os.MkdirTemp("", "kfv-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		kfvRun = filepath.Join(dir, "kfv-run")
		cmd := exec.Command("go", "build", "-o", kfvRun, "./cmd/kfv-run")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildNote = fmt.Sprintf("go build ./cmd/kfv-run: %v\n%s", err, out)
		}
	}
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	os.Exit(code)
}

// findQEMU selects the QEMU every test runs and asks it its version,
// once; the version goes to the test output, so that each run says which
// QEMU it tested.
func findQEMU() {
	bin, err := guest.QEMUBinary()
	if err != nil {
		qemuNote = err.Error()
		fmt.Fprintf(os.Stderr, "kfv integration: no QEMU: %v\n", err)
		return
	}
	v, err := guest.QEMUVersionOf(bin)
	if err != nil {
		qemuNote = err.Error()
		fmt.Fprintf(os.Stderr, "kfv integration: %v\n", err)
		return
	}
	qemuBin, qemuVersion, qemuMajor = bin, v, v.Major
	fmt.Fprintf(os.Stderr, "kfv integration: QEMU %s: %s\n", bin, v.Line)
}

func findRepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

// needKfv fails the test when kfv-run could not be built: that is a bug,
// not a reason to skip.
func needKfv(t *testing.T) {
	t.Helper()
	if buildNote != "" {
		t.Fatal(buildNote)
	}
}

// needQEMU returns the QEMU under test (KFV_QEMU, else the one in PATH).
// Without one it skips, unless KFV_QEMU named one: then its absence is a
// failure.
func needQEMU(t *testing.T) string {
	t.Helper()
	if qemuNote != "" {
		if os.Getenv(guest.QEMUEnv) != "" {
			t.Fatal(qemuNote)
		}
		t.Skip(qemuNote + ": run 'make deps' (installs qemu-system-x86)")
	}
	return qemuBin
}

// kvmProblem says why KVM cannot be used here, or "" if it can.
func kvmProblem() string {
	fd, err := syscall.Open("/dev/kvm", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "needs /dev/kvm: " + err.Error()
	}
	defer syscall.Close(fd)
	const kvmGetAPIVersion = 0xae00
	v, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if e != 0 || v != 12 {
		return fmt.Sprintf("/dev/kvm answers KVM_GET_API_VERSION with %d (%v), not 12", v, e)
	}
	return ""
}

// forEachAccel runs f as a subtest under TCG and under KVM; the KVM one
// skips with the reason when KVM is not usable here.
func forEachAccel(t *testing.T, f func(t *testing.T, accel string)) {
	for _, accel := range []string{"tcg", "kvm"} {
		t.Run(accel, func(t *testing.T) {
			if accel == "kvm" {
				if p := kvmProblem(); p != "" {
					t.Skip(p)
				}
			}
			f(t, accel)
		})
	}
}

// rawGuest builds (or reuses) a raw-code guest image.
func rawGuest(t *testing.T, opts guest.RawOptions) string {
	t.Helper()
	p, err := guest.BuildRaw(guestDir, opts)
	if err != nil {
		t.Fatalf("build raw guest: %v", err)
	}
	return p
}

// readEvents parses an event stream file.
func readEvents(t *testing.T, path string) []event.Event {
	t.Helper()
	return parseEvents(t, path, false)
}

// readKilledEvents reads the events of a supervisor the test killed: it
// may have been cut in the middle of its last write, so an unterminated
// last line is torn, not corrupt. Every line that has its newline must
// parse.
func readKilledEvents(t *testing.T, path string) []event.Event {
	t.Helper()
	return parseEvents(t, path, true)
}

func parseEvents(t *testing.T, path string, killed bool) []event.Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i+1 < len(b) {
		if !killed {
			t.Fatalf("%s: last line has no newline, and the supervisor was not killed: %q", path, b[i+1:])
		}
		t.Logf("%s: last line torn (supervisor killed while writing): %q", path, b[i+1:])
		b = b[:i+1]
	}
	var evs []event.Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// denials returns the decision events whose verdict is deny.
func denials(evs []event.Event) []event.Event {
	var out []event.Event
	for _, e := range evs {
		if e.Kind == event.KindDecision && e.Verdict == "deny" {
			out = append(out, e)
		}
	}
	return out
}

func dumpEvents(evs []event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s %s tid=%d thread=%q verdict=%s rule=%s args=%s reaction=%s outcome=%s detail=%s\n", e.Kind, e.Layer, e.Syscall, e.TID, e.Thread, e.Verdict, e.Rule, e.Args, e.Reaction, e.Outcome, e.Detail)
	}
	return b.String()
}

// proc is a started kfv-run or bare QEMU.
type proc struct {
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

// start starts argv with output captured. extra become fds 3, 4, ...
func start(t *testing.T, argv []string, extra ...*os.File) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(argv[0], argv[1:]...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.ExtraFiles = extra
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process and returns its exit status (128+N for
// signal N).
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Args, timeout, p.stdout, p.stderr)
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// kfvArgs is the kfv-run command line for QEMU argv under the built-in
// profile in enforce mode.
func kfvArgs(events string, extra []string, qemu string, qemuArgs ...string) []string {
	a := []string{kfvRun, "--events", events}
	a = append(a, extra...)
	a = append(a, "--", qemu)
	return append(a, qemuArgs...)
}

// qmp is a minimal QMP client for tests.
type qmp struct {
	c  net.Conn
	rd *bufio.Reader
}

// dialQMP connects to a QMP unix socket, waiting for it to appear.
func dialQMP(t *testing.T, path string, timeout time.Duration) *qmp {
	t.Helper()
	return dialQMPNet(t, "unix", path, timeout)
}

// dialQMPNet connects to a QMP monitor at addr on network ("unix",
// "tcp"), waiting for it to appear.
func dialQMPNet(t *testing.T, network, path string, timeout time.Duration) *qmp {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial(network, path)
		if err == nil {
			q := &qmp{c: c, rd: bufio.NewReader(c)}
			t.Cleanup(func() { c.Close() })
			if _, err := q.read(); err != nil { // greeting
				t.Fatalf("qmp greeting: %v", err)
			}
			if _, err := q.exec("qmp_capabilities", nil); err != nil {
				t.Fatalf("qmp_capabilities: %v", err)
			}
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to QMP at %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (q *qmp) read() (map[string]json.RawMessage, error) {
	q.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := q.rd.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("qmp: %q: %w", line, err)
	}
	return m, nil
}

// exec runs a command and returns its "return" value; a QMP error is an
// error. Asynchronous events are skipped.
func (q *qmp) exec(cmd string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, err
		}
		if _, ok := m["event"]; ok {
			continue
		}
		if e, ok := m["error"]; ok {
			return nil, fmt.Errorf("qmp %s: %s", cmd, e)
		}
		return m["return"], nil
	}
}

// status returns query-status's "status" field.
func (q *qmp) status(t *testing.T) string {
	t.Helper()
	r, err := q.exec("query-status", nil)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var s struct{ Status string }
	if err := json.Unmarshal(r, &s); err != nil {
		t.Fatalf("query-status: %v", err)
	}
	return s.Status
}

// started returns query-status's "status" once the guest has left
// prelaunch: kfv holds a guest with -S until its own monitor answers
// (docs/compatibility.md), so a monitor that asks at once may find it
// not yet started. After 10 s it returns what it last saw.
func (q *qmp) started(t *testing.T) string {
	t.Helper()
	st := q.status(t)
	for deadline := time.Now().Add(10 * time.Second); st == "prelaunch" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		st = q.status(t)
	}
	return st
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// childPID returns the pid of the only child of pid (QEMU under kfv-run).
// Children are listed per thread in /proc, and kfv-run forks QEMU from a
// thread of its own.
func childPID(t *testing.T, pid int) int {
	t.Helper()
	var kids []string
	ok := waitFor(10*time.Second, func() bool {
		kids = nil
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, f := range tasks {
			if b, err := os.ReadFile(f); err == nil {
				kids = append(kids, strings.Fields(string(b))...)
			}
		}
		return len(kids) == 1
	})
	if !ok {
		t.Fatalf("kfv-run %d has children %v, want exactly one", pid, kids)
	}
	var c int
	fmt.Sscan(kids[0], &c)
	return c
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
