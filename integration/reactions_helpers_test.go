package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
	"kfv/profiles"
)

// reactProfile writes the built-in profile with extra appended, checks it
// with "kfv-run profile check" and returns its path. With ownHO the
// built-in [[ho]] table is left out, so that extra's stands (a layer has
// one horizontal policy).
func reactProfile(t *testing.T, dir, extra string, ownHO bool) string {
	t.Helper()
	src, err := profiles.BuiltinSource("qemu")
	if err != nil {
		t.Fatalf("built-in profile: %v", err)
	}
	text := string(src)
	if ownHO {
		text = withoutTable(t, text, "[[ho]]")
	}
	path := filepath.Join(dir, "profile.toml")
	if err := os.WriteFile(path, []byte(text+"\n# Tables of the test.\n"+extra), 0o644); err != nil {
		t.Fatalf("write profile: %v", err)
	}
	out, err := exec.Command(kfvRun, "profile", "check", path).CombinedOutput()
	if err != nil {
		t.Fatalf("kfv-run profile check %s: %v\n%s\nextra tables:\n%s", path, err, out, extra)
	}
	return path
}

// withoutTable cuts every table headed exactly by header (up to the next
// table header or section comment) out of a TOML text.
func withoutTable(t *testing.T, text, header string) string {
	t.Helper()
	lines := strings.SplitAfter(text, "\n")
	var b strings.Builder
	cut, found := false, false
	for _, l := range lines {
		trim := strings.TrimSpace(l)
		switch {
		case trim == header:
			cut, found = true, true
			continue
		case cut && (strings.HasPrefix(trim, "[") || strings.HasPrefix(trim, "# ---")):
			cut = false
		}
		if !cut {
			b.WriteString(l)
		}
	}
	if !found {
		t.Fatalf("the built-in profile has no %s table to replace", header)
	}
	return b.String()
}

// stampedLines records each complete line written to it with the time it
// arrived: the console of a VM, set against the times of kfv's events.
type stampedLines struct {
	mu      sync.Mutex
	partial []byte
	lines   []stampedLine
}

type stampedLine struct {
	at   time.Time
	text string
}

func (s *stampedLines) Write(p []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.lines = append(s.lines, stampedLine{at: now, text: strings.TrimRight(string(s.partial[:i]), "\r")})
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

func (s *stampedLines) snapshot() []stampedLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stampedLine(nil), s.lines...)
}

// reactRun is one kfv-run under test, with the implant preloaded into
// QEMU and a QMP monitor of the test's own.
type reactRun struct {
	t       *testing.T
	dir     string
	events  string
	sock    string // the test's QMP monitor
	p       *proc
	console *stampedLines
	qemuPID int // the first QEMU's pid
	began   time.Time
}

// startReact starts kfv-run in enforce mode with flags and QEMU with
// qargs, the test's QMP monitor and the implant preloaded.
func startReact(t *testing.T, dir string, flags, qargs []string) *reactRun {
	t.Helper()
	return startReactEnv(t, dir, flags, qargs)
}

// startReactEnv is startReact with env added to QEMU's environment.
func startReactEnv(t *testing.T, dir string, flags, qargs []string, env ...string) *reactRun {
	t.Helper()
	qemu := needQEMU(t)
	implant := buildImplant(t)
	r := &reactRun{t: t, dir: dir, events: filepath.Join(dir, "events.jsonl"), sock: filepath.Join(dir, "qmp.sock"), console: &stampedLines{}, began: time.Now()}
	qargs = append(qargs, "-name", "kfv-react", "-qmp", "unix:"+r.sock+",server=on,wait=off")
	argv := kfvArgs(r.events, append([]string{"--mode", "enforce"}, flags...), qemu, qargs...)
	p := &proc{cmd: exec.Command(argv[0], argv[1:]...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout = io.MultiWriter(p.stdout, r.console)
	p.cmd.Stderr = p.stderr
	p.cmd.Env = append(append(os.Environ(), "LD_PRELOAD="+implant), env...)
	// Payload arguments are relative paths ("marker", "spare.img"): they
	// land in the run's directory, and the raw trigger images, which
	// carry the argument, stay the same from run to run.
	p.cmd.Dir = dir
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
			// kfv-run's death kills QEMU (PR_SET_PDEATHSIG).
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	r.p = p
	r.qemuPID = childPID(t, p.cmd.Process.Pid)
	return r
}

// took logs how long the run has taken so far.
func (r *reactRun) took() {
	r.t.Logf("%s took %v", r.t.Name(), time.Since(r.began).Round(100*time.Millisecond))
}

// eventsNow parses the complete lines of the event stream as it stands.
func (r *reactRun) eventsNow() []event.Event {
	r.t.Helper()
	b, err := os.ReadFile(r.events)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatalf("read events: %v", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		return nil
	}
	var evs []event.Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			r.t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitEvent waits for an event that ok accepts and returns it.
func (r *reactRun) waitEvent(what string, timeout time.Duration, ok func(*event.Event) bool) event.Event {
	r.t.Helper()
	var got *event.Event
	waitFor(timeout, func() bool {
		evs := r.eventsNow()
		for i := range evs {
			if ok(&evs[i]) {
				got = &evs[i]
				return true
			}
		}
		return false
	})
	if got == nil {
		r.t.Fatalf("no %s in the event stream within %v\nevents:\n%s\nconsole:\n%s\nstderr:\n%s", what, timeout, dumpPlane(r.eventsNow()), tail(r.p.stdout.String(), 30), tail(r.p.stderr.String(), 30))
	}
	return *got
}

// waitReaction waits for the reaction event named name (e.g. "pause",
// "link_down:all-nics") and checks that it was carried out and that its
// chain holds a finding that cause accepts.
func (r *reactRun) waitReaction(name string, timeout time.Duration, cause func(event.Link) bool) event.Event {
	r.t.Helper()
	e := r.waitEvent("reaction "+name, timeout, func(e *event.Event) bool {
		return e.Kind == event.KindReaction && e.Reaction == name
	})
	r.t.Logf("reaction %s rule=%s outcome=%s enforced=%q detail=%q chain=%s", e.Reaction, e.Rule, e.ReactionOutcome(), e.Enforced, e.Detail, chainString(e.Chain))
	if e.ReactionOutcome() != event.OutcomeDone {
		r.t.Errorf("reaction %s: outcome %q (%s), want %s", name, e.ReactionOutcome(), e.Detail, event.OutcomeDone)
	}
	found := false
	for _, l := range e.Chain {
		if cause(l) {
			found = true
		}
	}
	if !found {
		r.t.Errorf("reaction %s: the chain %s does not name the payload's finding", name, chainString(e.Chain))
	}
	return e
}

func chainString(c []event.Link) string {
	var parts []string
	for _, l := range c {
		parts = append(parts, fmt.Sprintf("{%s %s %s/%s %s tid=%d rule=%s}", l.Layer, l.HRSC, l.Detector, l.Severity, l.Syscall, l.TID, l.Rule))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// dumpPlane lists the events of the decision plane and QEMU's life:
// findings, reactions, denials, lifecycle, warnings and errors.
func dumpPlane(evs []event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Kind == event.KindDecision && e.Verdict != "deny" && !strings.Contains(e.Detail, "held") {
			continue
		}
		fmt.Fprintf(&b, "  %s %s pid=%d %s %s %s tid=%d %s/%s verdict=%s rule=%s reaction=%s outcome=%s detail=%s\n",
			e.Time.Format("15:04:05.000"), e.Kind, e.PID, e.Layer, e.HRSC, e.Syscall, e.TID, e.Detector, e.Severity, e.Verdict, e.Rule, e.Reaction, e.Outcome, e.Detail)
	}
	return b.String()
}

// finding returns a chain predicate: a finding of detector on syscall by
// the payload's thread tid.
func finding(detector, syscall string, tid int) func(event.Link) bool {
	return func(l event.Link) bool {
		return l.Detector == detector && l.Syscall == syscall && (tid == 0 || l.TID == tid)
	}
}

// implant waits until the implant has reported a result for payload and
// returns its report, checking that it ran inside this run's QEMU.
func (r *reactRun) implant(payload string, timeout time.Duration) implantReport {
	r.t.Helper()
	var rep implantReport
	waitFor(timeout, func() bool {
		rep = parseImplant(r.p.stderr.String(), payload)
		return rep.Result != "" && rep.Result != "exec" || r.p.exited()
	})
	if !rep.loadedIn(r.qemuPID) {
		r.t.Fatalf("the implant did not load into QEMU (pid %d), so this run proves nothing; implant lines %q\nstderr:\n%s", r.qemuPID, rep.Lines, r.p.stderr)
	}
	if rep.Result == "" || rep.Result == "exec" {
		r.t.Fatalf("the implant reported no result for %s within %v\nconsole:\n%s\nstderr:\n%s", payload, timeout, tail(r.p.stdout.String(), 30), r.p.stderr)
	}
	r.t.Logf("payload %s ran in thread %d %q: result=%s detail=%s", payload, rep.TID, rep.Thread, rep.Result, rep.Detail)
	return rep
}

// stoppedPayload returns the implant's report of a payload whose refusal
// orders a reaction that ends QEMU (kill, restart): QEMU may be gone
// before the implant reports the refused call, so its last word may be
// "exec" (about to make it). Call it once QEMU has exited. It fails the
// test when the payload did not run in QEMU or reports success.
func (r *reactRun) stoppedPayload(payload string) implantReport {
	r.t.Helper()
	rep := parseImplant(r.p.stderr.String(), payload)
	if !rep.loadedIn(r.qemuPID) || rep.TID == 0 {
		r.t.Fatalf("the implant did not run %s in QEMU %d, so this run proves nothing\nstderr:\n%s", payload, r.qemuPID, r.p.stderr)
	}
	if rep.Result == "ok" {
		r.t.Errorf("implant: %s result=ok detail=%s: the payload was not stopped", payload, rep.Detail)
	}
	r.t.Logf("payload %s ran in thread %d %q: result=%s detail=%s", payload, rep.TID, rep.Thread, rep.Result, rep.Detail)
	return rep
}

// rawReactArgs returns the QEMU arguments of the raw trigger guest that
// sends payload with arg through a vCPU's port I/O, under KVM; it skips
// without a usable KVM.
func rawReactArgs(t *testing.T, payload, arg string) []string {
	t.Helper()
	if p := kvmProblem(); p != "" {
		t.Skipf("the raw trigger guest sends its command through KVM port I/O: %s", p)
	}
	img, err := guest.BuildRawTrigger(guestDir, payload, arg)
	if err != nil {
		t.Fatalf("build raw trigger guest: %v", err)
	}
	return guest.RawTriggerArgs(img, "kvm")
}

// linuxReactArgs returns the QEMU arguments of the Linux guest running
// the react workload with the kernel command line words, on a fresh 4 MiB
// raw disk in dir (returned too).
func linuxReactArgs(t *testing.T, dir string, words ...string) ([]string, string) {
	t.Helper()
	accel, err := guest.LinuxAccel()
	if err != nil {
		t.Fatal(err)
	}
	if accel == "kvm" {
		if p := kvmProblem(); p != "" {
			t.Skipf("%s=kvm but %s: unset it to run the Linux guest under TCG", guest.LinuxAccelEnv, p)
		}
	}
	l := attackLinuxGuest(t)
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatalf("create disk: %v", err)
	}
	if err := os.Truncate(disk, 4<<20); err != nil {
		t.Fatalf("size disk: %v", err)
	}
	return append(guest.LinuxArgs(l, accel, guest.WorkloadReact, words...), guest.DiskArgs(disk, "raw")...), disk
}

// reactLines returns the guest's "KFV-REACT" lines without the marker.
func reactLines(console string) []string {
	var out []string
	for _, l := range guest.Lines([]byte(console), "KFV-REACT ") {
		out = append(out, strings.TrimPrefix(l, "KFV-REACT "))
	}
	return out
}

// waitConsole waits until the console has a line containing s.
func (r *reactRun) waitConsole(s string, timeout time.Duration) {
	r.t.Helper()
	if !waitFor(timeout, func() bool { return strings.Contains(r.p.stdout.String(), s) }) {
		r.t.Fatalf("no %q on the console within %v\nconsole:\n%s\nevents:\n%s\nstderr:\n%s", s, timeout, tail(r.p.stdout.String(), 40), dumpPlane(r.eventsNow()), tail(r.p.stderr.String(), 30))
	}
}

// lineSink accepts TCP connections on the host's loopback and records
// the first line of each, for the guest's transfers through slirp.
type lineSink struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string
}

func newLineSink(t *testing.T) *lineSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &lineSink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n') // a cut line is recorded as it came
				s.mu.Lock()
				s.lines = append(s.lines, strings.TrimSpace(line))
				s.mu.Unlock()
			}()
		}
	}()
	return s
}

func (s *lineSink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *lineSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// qmpEvents reads QMP events from q until want has been seen in order
// or timeout passes, and returns the names seen.
func qmpEvents(q *qmp, timeout time.Duration, want ...string) []string {
	var seen []string
	deadline := time.Now().Add(timeout)
	next := 0
	for next < len(want) && time.Now().Before(deadline) {
		q.c.SetReadDeadline(deadline)
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			break
		}
		var m struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &m) != nil || m.Event == "" {
			continue
		}
		seen = append(seen, m.Event)
		if m.Event == want[next] {
			next++
		}
	}
	return seen
}

// pciHas says whether query-pci lists a device with qdev id id, on any
// bus (devices behind a bridge or root port are nested).
func pciHas(t *testing.T, q *qmp, id string) bool {
	t.Helper()
	raw, err := q.exec("query-pci", nil)
	if err != nil {
		t.Fatalf("query-pci: %v", err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("query-pci: %v", err)
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case map[string]any:
			if x["qdev_id"] == id {
				return true
			}
			for _, c := range x {
				if walk(c) {
					return true
				}
			}
		case []any:
			for _, c := range x {
				if walk(c) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}
