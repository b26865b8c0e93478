package integration

// Reactions QEMU cannot refuse: a payload cuts kfv off its private
// monitor from inside QEMU, then attacks. The pause its attack orders
// must still hold, enforced and verified from outside QEMU.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
	"kfv/memwatch"
	"kfv/memwatch/memwatchtest"
	"kfv/profiles"
)

// threadStates counts the threads of pid and those in a stop (state T or
// t in /proc/PID/task/TID/stat).
func threadStates(t *testing.T, pid int) (stopped, total int) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("QEMU's threads: %v", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // exited
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			t.Fatalf("thread %s: stat %q", e.Name(), b)
		}
		total++
		if s := b[i+2]; s == 'T' || s == 't' {
			stopped++
		}
	}
	return stopped, total
}

// qemuCgroupDir is the directory of QEMU's cgroup v2 ("" without one).
func qemuCgroupDir(pid int) string {
	root := cgroup2Root()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if root == "" || err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return filepath.Join(root, p)
		}
	}
	return ""
}

// cgroupFrozen reports whether the kernel says the cgroup dir is frozen.
func cgroupFrozen(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	return err == nil && strings.Contains(string(b), "frozen 1")
}

// heldFromOutside says how kfv's pause is seen holding QEMU from outside:
// QEMU's cgroup frozen (kfv-run puts QEMU in a cgroup of its own where
// the host lets it), or every thread of QEMU in a stop.
func heldFromOutside(t *testing.T, pid int) (string, bool) {
	t.Helper()
	if cg := qemuCgroupDir(pid); cg != "" && cgroupFrozen(cg) {
		return "QEMU's cgroup " + filepath.Base(cg) + " frozen (cgroup.events)", true
	}
	stopped, total := threadStates(t, pid)
	return fmt.Sprintf("%d of QEMU's %d threads stopped", stopped, total), stopped == total && total > 0
}

// wantStopped checks from outside that kfv's pause holds QEMU: its
// cgroup frozen, or every thread of QEMU in a stop.
func (r *reactRun) wantStopped() {
	r.t.Helper()
	how, ok := heldFromOutside(r.t, r.qemuPID)
	if !ok {
		r.t.Errorf("after the pause: %s, want QEMU's cgroup frozen or all its threads stopped", how)
		return
	}
	r.t.Logf("from outside: %s", how)
}

// release resumes a QEMU kfv's pause stopped, as an operator would (a
// thaw of its cgroup, else SIGCONT), so that the test's monitor can talk
// to it again.
func (r *reactRun) release() {
	r.t.Helper()
	if cg := qemuCgroupDir(r.qemuPID); cg != "" && cgroupFrozen(cg) {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0); err != nil {
			r.t.Fatalf("thaw QEMU's cgroup: %v", err)
		}
		return
	}
	if err := syscall.Kill(r.qemuPID, syscall.SIGCONT); err != nil {
		r.t.Fatalf("SIGCONT QEMU: %v", err)
	}
}

// TestReactionOutsidePause: the cut-monitor payload shuts down every
// connected unix stream socket of QEMU (kfv's private monitor among
// them), then tries exec-shell. Bare, the test's own QMP client sees its
// connection end while QEMU runs on: the payload cuts monitors. Under
// kfv, the refused execve orders pause, which kfv carries out from
// outside at once (its monitor is gone): every thread of QEMU is seen
// stopped in /proc, the reaction says how, and QEMU closing the monitor
// is itself a finding. A SIGTERM to kfv-run then ends the paused VM
// (QEMU killed, exit 137) without resuming it.
func TestReactionOutsidePause(t *testing.T) {
	reactShort(t)
	for _, v := range []struct {
		name string
		main bool
	}{{"device", false}, {"main", true}} {
		t.Run(v.name, func(t *testing.T) {
			payload := "cut-monitor"
			var env []string
			if v.main {
				payload = "main-" + payload
				env = []string{"KFV_IMPLANT_MAIN=1"}
			}
			t.Run("bare", func(t *testing.T) { bareCutMonitor(t, payload, env) })
			t.Run("kfv", func(t *testing.T) { kfvCutMonitor(t, payload, env) })
		})
	}
}

func bareCutMonitor(t *testing.T, payload string, env []string) {
	qemu := needQEMU(t)
	implant := buildImplant(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	qargs := append(rawReactArgs(t, payload, ""), "-S", "-name", "kfv-bare,debug-threads=on", "-qmp", "unix:"+sock+",server=on,wait=off")
	p := startEnv(t, append([]string{qemu}, qargs...), append(env, "LD_PRELOAD="+implant)...)
	q := dialQMP(t, sock, 20*time.Second)
	// The guest's first instruction sends the trigger: the payload may
	// cut the connection before QEMU answers cont.
	_, err := q.exec("cont", nil)
	var rep implantReport
	waitFor(reactTimeout, func() bool {
		rep = parseImplant(p.stderr.String(), payload)
		return rep.Result != "" || p.exited()
	})
	if rep.Result != "ok" {
		t.Fatalf("bare %s: result %q detail %q, want ok\nstderr:\n%s", payload, rep.Result, rep.Detail, p.stderr)
	}
	t.Logf("bare %s in thread %d %q: %s", payload, rep.TID, rep.Thread, rep.Detail)
	// The test's monitor connection ends: reads meet its end (events
	// before it are skipped): EOF, or a reset when QEMU's side was shut
	// down with the test's command unread.
	for err == nil {
		_, err = q.read()
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the test's QMP connection after the payload: %v, want its end (the payload did not cut it)", err)
	}
	if p.exited() {
		t.Errorf("QEMU exited: the payload must cut the monitor of a QEMU that runs on\nstderr:\n%s", p.stderr)
	}
}

func kfvCutMonitor(t *testing.T, payload string, env []string) {
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec", "signature", "execve", "pause"), false)
	r := startReactEnv(t, dir, []string{"--profile", prof}, rawReactArgs(t, payload, "marker"), env...)
	rep := r.implant(payload, reactTimeout)
	if rep.Result != "ok" {
		t.Fatalf("%s under kfv: result %q detail %q: kfv's monitor was not cut, so this run proves nothing", payload, rep.Result, rep.Detail)
	}
	// The exec runs in the thread of the cut; the pause may stop QEMU
	// before the implant reports the refusal, so the reaction is waited
	// for, not the report.
	e := r.waitReaction("pause", reactTimeout, finding("signature", "execve", rep.TID))
	if ex := parseImplant(r.p.stderr.String(), payload+"-exec"); ex.Result == "ok" || ex.Result == "" {
		t.Errorf("the payload's exec: result %q detail %q, want it tried and refused", ex.Result, ex.Detail)
	}
	t.Logf("pause enforced: %s", e.Enforced)
	if !strings.Contains(e.Enforced, "outside only (kfv's monitor is gone)") || !strings.Contains(e.Enforced, "SIGSTOP") && !strings.Contains(e.Enforced, "cgroup freeze") {
		t.Errorf("pause enforced %q, want the outside path with kfv's monitor gone", e.Enforced)
	}
	if e.EnforcedBy != event.ByOutside {
		t.Errorf("pause enforced_by %q, want %q: QEMU's monitor took no part", e.EnforcedBy, event.ByOutside)
	}
	r.wantStopped()
	r.waitEvent("finding kfv:monitor-closed", reactTimeout, func(e *event.Event) bool {
		return e.Kind == event.KindFinding && e.Rule == "kfv:monitor-closed"
	})
	if _, err := os.Stat(filepath.Join(r.dir, "marker")); err == nil {
		t.Errorf("the payload's shell ran (marker exists)")
	}
	// SIGTERM to kfv-run ends the paused VM without resuming it.
	if err := r.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := r.p.wait(t, 30*time.Second); st != 137 {
		t.Errorf("kfv-run exit %d after SIGTERM to a paused VM, want 137 (QEMU killed)\nstderr:\n%s", st, tail(r.p.stderr.String(), 20))
	}
	r.took()
}

// TestReactionLinkOutside: the raw guest's NIC is on user networking with
// a host forward, and the test holds a TCP connection to it (slirp's
// socket in QEMU). The refused execve of exec-shell orders
// link_down:all-nics; from the host's side the connection ends and the
// forward's port is closed: kfv shut QEMU's inet sockets down itself,
// which set_link alone does not do (the NIC stops passing frames, slirp's
// host sockets stay open). The VM runs on.
func TestReactionLinkOutside(t *testing.T) {
	reactShort(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	prof := reactProfile(t, dir, correlate("test-exec-cuts-link", "signature", "execve", "link_down:all-nics"), false)
	qargs := append(rawReactArgs(t, "exec-shell", "marker"), "-S",
		"-netdev", fmt.Sprintf("user,id=kfvnet,hostfwd=tcp:127.0.0.1:%d-:7", port), "-device", "e1000,netdev=kfvnet,id=kfvnic")
	r := startReact(t, dir, []string{"--profile", prof}, qargs)
	q := dialQMP(t, r.sock, 20*time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connect to the VM's host forward %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatalf("write to the host forward: %v", err)
	}
	if _, err := q.exec("cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	rep := r.implant("exec-shell", reactTimeout)
	e := r.waitReaction("link_down:all-nics", reactTimeout, finding("signature", "execve", rep.TID))
	if !strings.Contains(e.Enforced, "inet sockets shut down") || strings.Contains(e.Enforced, " 0 inet sockets") {
		t.Errorf("link_down enforced %q, want QEMU's inet sockets shut down", e.Enforced)
	}
	// The bound is the wait for the cut, not a measure of it.
	c.SetReadDeadline(time.Now().Add(reactTimeout))
	_, err = c.Read(make([]byte, 64))
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("host side of the VM's connection after link_down: %v, want its end", err)
	}
	if c2, err := net.Dial("tcp", addr); err == nil {
		c2.Close()
		t.Errorf("the VM's host forward %s still accepts connections after link_down", addr)
	}
	if st := q.status(t); st != "running" {
		t.Errorf("status %q, want running: link_down leaves the VM alone", st)
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err)
	}
	r.p.wait(t, 30*time.Second)
	for _, d := range denials(r.eventsNow()) {
		if d.TID != rep.TID {
			t.Errorf("denial of another thread than the payload's: %s %s rule=%s %s", d.Syscall, d.Args, d.Rule, d.Detail)
		}
	}
	r.took()
}

// TestMemwatchKfvScrubWhilePaused: QEMU's text is patched from outside;
// the test's ladder (the built-in one's [[correlate]] tables replaced)
// pauses the VM, then scrubs it. The scrub stops and resumes QEMU itself;
// afterwards QEMU's text is pristine and kfv's pause still holds: every
// thread is seen stopped.
func TestMemwatchKfvScrubWhilePaused(t *testing.T) {
	needKfv(t)
	if testing.Short() {
		t.Skip("boots QEMU under kfv-run: skipped with -short")
	}
	forEachAccel(t, func(t *testing.T, accel string) {
		dir := t.TempDir()
		src, err := profiles.BuiltinSource("qemu")
		if err != nil {
			t.Fatal(err)
		}
		prof := filepath.Join(dir, "profile.toml")
		text := withoutTable(t, string(src), "[[correlate]]") + `
# Tables of the test.
[[correlate]]
name = "test-tamper-pauses-then-scrubs"
match = { detector = "memwatch", severity = ">=high" }
reactions = ["pause", "scrub"]
once = true
reason = "test: a scrub ordered while the VM is paused"
`
		if err := os.WriteFile(prof, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(kfvRun, "profile", "check", prof).CombinedOutput(); err != nil {
			t.Fatalf("profile check: %v\n%s", err, out)
		}
		img := rawGuest(t, guest.RawOptions{Loop: true, TicksPerLine: 2})
		qargs := append(guest.RawArgs(img, accel), "-name", "kfv-memwatch,debug-threads=on")
		r := mkStart(t, []string{"--profile", prof, "--memwatch-period", memwatch.DefaultPeriod.String()}, qargs)
		r.baseline()
		if !waitFor(20*time.Second, func() bool { return strings.Contains(r.p.stdout.String(), "KFV-RAW tick ") }) {
			t.Fatalf("loop guest printed no tick\nconsole:\n%s\nstderr:\n%s", r.p.stdout, r.p.stderr)
		}
		entry, err := memwatchtest.EntryPoint(r.qemuPID)
		if err != nil {
			t.Fatal(err)
		}
		mwTamper(t, r.qemuPID, entry, []byte{0xcc, 0xcc, 0xcc})
		f := r.memFinding(string(memwatch.KindModified), 10*time.Second)
		p := r.reaction("pause", f, 10*time.Second)
		t.Logf("pause enforced: %s", p.Enforced)
		r.reaction("scrub", f, 20*time.Second)
		mwAssertPristine(t, r.qemuPID, entry)
		if how, ok := heldFromOutside(t, r.qemuPID); !ok {
			t.Errorf("after the scrub: %s, want QEMU held: the scrub undid the pause", how)
		} else {
			t.Logf("after the scrub, from outside: %s", how)
		}
		if err := r.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if st := r.p.wait(t, 30*time.Second); st != 137 {
			t.Errorf("kfv-run exit %d after SIGTERM to a paused VM, want 137", st)
		}
	})
}

// cgroup2Root returns where the unified cgroup hierarchy is mounted, ""
// without one.
func cgroup2Root() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		left, right, ok := strings.Cut(line, " - ")
		lf, rf := strings.Fields(left), strings.Fields(right)
		if ok && len(lf) >= 5 && len(rf) > 0 && rf[0] == "cgroup2" && lf[3] == "/" {
			return lf[4]
		}
	}
	return ""
}

// TestReactionPauseCgroup: QEMU alone in a cgroup of its own (as under
// libvirt's machine scope; the test moves it into one before its guest
// runs): the pause is the cgroup v2 freezer, and the kernel says the
// cgroup is frozen. Then either continue thaws it first and the guest
// runs again, or a SIGTERM to kfv-run ends the frozen VM.
func TestReactionPauseCgroup(t *testing.T) {
	reactShort(t)
	root := cgroup2Root()
	if root == "" {
		t.Skip("needs the unified cgroup hierarchy (cgroup2) mounted")
	}
	for _, reactions := range [][]string{{"pause"}, {"pause", "continue"}} {
		t.Run(strings.Join(reactions, "-"), func(t *testing.T) { pauseInCgroup(t, root, reactions) })
	}
}

func pauseInCgroup(t *testing.T, root string, reactions []string) {
	// Not named kfv-*: those are kfv-run's own.
	cg := filepath.Join(root, fmt.Sprintf("kfvtest-%d-%d", os.Getpid(), len(reactions)))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("needs a cgroup of its own for QEMU: %v (run as root)", err)
	}
	t.Cleanup(func() {
		// Empty once QEMU is reaped.
		waitFor(10*time.Second, func() bool { return os.Remove(cg) == nil })
	})
	if _, err := os.Stat(filepath.Join(cg, "cgroup.freeze")); err != nil {
		t.Skipf("needs the cgroup v2 freezer (Linux 5.2): %v", err)
	}
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec", "signature", "execve", reactions...), false)
	r := startReact(t, dir, []string{"--profile", prof}, append(rawReactArgs(t, "exec-shell", "marker"), "-S"))
	q := dialQMP(t, r.sock, 20*time.Second)
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(r.qemuPID)), 0); err != nil {
		t.Fatalf("move QEMU into %s: %v", cg, err)
	}
	if _, err := q.exec("cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	rep := r.implant("exec-shell", reactTimeout)
	e := r.waitReaction("pause", reactTimeout, finding("signature", "execve", rep.TID))
	name := "/" + filepath.Base(cg)
	if !strings.Contains(e.Enforced, "qmp stop + cgroup freeze: "+name+" frozen") {
		t.Errorf("pause enforced %q, want qmp stop and the freezer of %s", e.Enforced, name)
	}
	if e.EnforcedBy != event.ByQMPAndOutside {
		t.Errorf("pause enforced_by %q, want %q", e.EnforcedBy, event.ByQMPAndOutside)
	}
	frozen := func() string {
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
		if err != nil {
			t.Fatalf("%s/cgroup.events: %v", cg, err)
		}
		return string(b)
	}
	if len(reactions) == 2 {
		c := r.waitReaction("continue", reactTimeout, finding("signature", "execve", rep.TID))
		if c.Enforced != "cgroup "+name+" thawed + qmp cont" {
			t.Errorf("continue enforced %q, want the thaw, then cont", c.Enforced)
		}
		if ev := frozen(); !strings.Contains(ev, "frozen 0") {
			t.Errorf("cgroup.events %q after continue, want frozen 0", ev)
		}
		if st := q.status(t); st != "running" {
			t.Errorf("status %q after continue, want running", st)
		}
		if _, err := q.exec("quit", nil); err != nil {
			t.Logf("quit: %v", err)
		}
		if st := r.p.wait(t, 30*time.Second); st != 0 {
			t.Errorf("kfv-run exit %d after quit, want 0", st)
		}
		r.took()
		return
	}
	if ev := frozen(); !strings.Contains(ev, "frozen 1") {
		t.Errorf("cgroup.events %q after the pause, want frozen 1", ev)
	}
	if err := r.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := r.p.wait(t, 30*time.Second); st != 137 {
		t.Errorf("kfv-run exit %d after SIGTERM to a frozen VM, want 137\nstderr:\n%s", st, tail(r.p.stderr.String(), 20))
	}
	r.took()
}

// TestReactionPauseOwnCgroup: kfv-run puts QEMU in a cgroup of its own,
// kfv-VM-PID under kfv-run's cgroup, and says so at the start. The pause
// freezes that cgroup (cgroup.events says frozen 1); a SIGCONT sent to
// QEMU from outside does not resume it: no thread of QEMU gets CPU time.
// A SIGTERM to kfv-run ends the frozen VM, and the cgroup goes with it.
func TestReactionPauseOwnCgroup(t *testing.T) {
	reactShort(t)
	if cgroup2Root() == "" {
		t.Skip("needs the unified cgroup hierarchy (cgroup2) mounted")
	}
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec", "signature", "execve", "pause"), false)
	r := startReact(t, dir, []string{"--profile", prof}, append(rawReactArgs(t, "exec-shell", "marker"), "-S"))
	q := dialQMP(t, r.sock, 20*time.Second)
	cg := qemuCgroupDir(r.qemuPID)
	name := fmt.Sprintf("kfv-kfv-react-%d", r.p.cmd.Process.Pid)
	if filepath.Base(cg) != name {
		t.Skipf("QEMU is in %q, not in a cgroup %s of its own (the host's cgroup v2 is not writable by kfv-run?)", cg, name)
	}
	start := r.waitEvent("the cgroup's lifecycle event", reactTimeout, func(e *event.Event) bool {
		return e.Kind == event.KindLifecycle && strings.HasPrefix(e.Detail, "QEMU's cgroup ")
	})
	t.Logf("%s", start.Detail)
	if !strings.Contains(start.Detail, "/"+name) || !strings.Contains(start.Detail, "pids.max") || !strings.Contains(start.Detail, "memory.max") {
		t.Errorf("lifecycle %q: want the cgroup /…%s and what became of pids.max and memory.max", start.Detail, name)
	}
	if _, err := q.exec("cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	rep := r.implant("exec-shell", reactTimeout)
	e := r.waitReaction("pause", reactTimeout, finding("signature", "execve", rep.TID))
	if !strings.Contains(e.Enforced, "cgroup freeze: ") || !strings.Contains(e.Enforced, name+" frozen") {
		t.Errorf("pause enforced %q, want the freezer of %s", e.Enforced, name)
	}
	if !cgroupFrozen(cg) {
		t.Fatalf("%s/cgroup.events does not say frozen 1 after the pause", cg)
	}
	cpu := func() (sum int64) {
		ents, _ := os.ReadDir("/proc/" + strconv.Itoa(r.qemuPID) + "/task")
		for _, ent := range ents {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(r.qemuPID) + "/task/" + ent.Name() + "/stat")
			i := strings.LastIndexByte(string(b), ')')
			if err != nil || i < 0 {
				continue
			}
			f := strings.Fields(string(b[i+2:])) // from the state on: utime, stime are fields 12, 13
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				sum += u + s
			}
		}
		return sum
	}
	before := cpu()
	if err := syscall.Kill(r.qemuPID, syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT QEMU from outside: %v", err)
	}
	time.Sleep(time.Second)
	if !cgroupFrozen(cg) {
		t.Errorf("%s is no longer frozen after a SIGCONT from outside", name)
	}
	if after := cpu(); after != before {
		t.Errorf("QEMU's threads used %d ticks of CPU after a SIGCONT from outside, want none", after-before)
	}
	if err := r.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := r.p.wait(t, 30*time.Second); st != 137 {
		t.Errorf("kfv-run exit %d after SIGTERM to a frozen VM, want 137\nstderr:\n%s", st, tail(r.p.stderr.String(), 20))
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("QEMU's cgroup %s after kfv-run's end: %v, want it removed", cg, err)
	}
	r.took()
}

// TestEmulatorPauseCont: under the emulator model (libvirt's), the
// refused execve of exec-shell orders pause: QEMU is seen stopped from
// outside, and the manager's cont through kfv's monitor proxy lifts kfv's
// stop first, so that QEMU can serve it: the guest runs again.
func TestEmulatorPauseCont(t *testing.T) {
	reactShort(t)
	edir, link := emulatorLink(t)
	prof := reactProfile(t, edir, correlate("test-exec", "signature", "execve", "pause"), false)
	cfg, evdir := writeKfvConfig(t, edir, fmt.Sprintf("mode = \"enforce\"\nprofile = %q\n", prof))
	sock := filepath.Join(edir, "qmp.sock")
	qargs := append(rawReactArgs(t, "exec-shell", filepath.Join(edir, "marker")), "-S", "-name", "kfv-test,debug-threads=on", "-qmp", "unix:"+sock+",server=on,wait=off")
	p := startEnv(t, append([]string{link}, qargs...), "LD_PRELOAD="+buildImplant(t), "KFV_CONFIG="+cfg)
	r := &reactRun{t: t, dir: edir, events: filepath.Join(evdir, "kfv-test.jsonl"), sock: sock, p: p, console: &stampedLines{}, qemuPID: p.cmd.Process.Pid, began: time.Now()}
	var spid int
	if !waitFor(10*time.Second, func() bool { spid = supervisorOf(r.qemuPID); return spid != 0 }) {
		t.Fatalf("no kfv supervisor follows QEMU %d\nstderr:\n%s", r.qemuPID, p.stderr)
	}
	t.Cleanup(func() { // the supervisor is this test's child (CLONE_PARENT)
		syscall.Kill(spid, syscall.SIGKILL)
		syscall.Wait4(spid, nil, 0, nil)
	})
	q := dialQMP(t, sock, 20*time.Second)
	if _, err := q.exec("cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	rep := r.implant("exec-shell", reactTimeout)
	r.waitReaction("pause", reactTimeout, finding("signature", "execve", rep.TID))
	r.wantStopped()
	if _, err := q.exec("cont", nil); err != nil {
		t.Fatalf("the manager's cont through kfv's proxy: %v", err)
	}
	if st := q.status(t); st != "running" {
		t.Errorf("status %q after the manager's cont, want running", st)
	}
	r.waitEvent("the cont's thaw", reactTimeout, func(e *event.Event) bool {
		return e.Kind == event.KindLifecycle && strings.HasPrefix(e.Detail, "the manager's cont lifts kfv's pause: SIGCONT")
	})
	if _, err := os.Stat(filepath.Join(edir, "marker")); err == nil {
		t.Errorf("the payload's shell ran (marker exists)")
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err)
	}
	p.wait(t, 30*time.Second)
	r.took()
}

// TestReactionLinkOutsideTap: a VM on a tap. The refused execve orders
// link_down; kfv, which holds CAP_NET_ADMIN, sets the tap down by
// netlink itself, whatever QEMU does with set_link: the interface's
// IFF_UP is seen cleared from outside, and the event names the tap.
// The VM runs on, and kfv's link_up is not needed for the test.
func TestReactionLinkOutsideTap(t *testing.T) {
	reactShort(t)
	if os.Geteuid() != 0 {
		t.Skip("makes a tap: needs root")
	}
	tap := fmt.Sprintf("kfvlk%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
		t.Skipf("ip tuntap add %s: %v: %s (this host cannot make taps)", tap, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", tap).Run() })
	if out, err := exec.Command("ip", "link", "set", tap, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s up: %v: %s", tap, err, out)
	}
	up := func() bool {
		b, err := os.ReadFile("/sys/class/net/" + tap + "/flags")
		if err != nil {
			t.Fatalf("%s flags: %v", tap, err)
		}
		f, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32)
		if err != nil {
			t.Fatalf("%s flags %q: %v", tap, b, err)
		}
		return f&syscall.IFF_UP != 0
	}
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec-cuts-link", "signature", "execve", "link_down:all-nics"), false)
	qargs := append(rawReactArgs(t, "exec-shell", "marker"), "-S",
		"-netdev", "tap,id=kfvnet,ifname="+tap+",script=no,downscript=no", "-device", "e1000,netdev=kfvnet,id=kfvnic")
	r := startReact(t, dir, []string{"--profile", prof}, qargs)
	q := dialQMP(t, r.sock, 20*time.Second)
	if !up() {
		t.Fatalf("%s is down before the attack", tap)
	}
	if _, err := q.exec("cont", nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	rep := r.implant("exec-shell", reactTimeout)
	e := r.waitReaction("link_down:all-nics", reactTimeout, finding("signature", "execve", rep.TID))
	if !strings.Contains(e.Enforced, tap+" down") {
		t.Errorf("link_down enforced %q, want %s set down by kfv", e.Enforced, tap)
	}
	if up() {
		t.Errorf("%s is still up after link_down", tap)
	}
	if st := q.status(t); st != "running" {
		t.Errorf("status %q, want running: link_down leaves the VM alone", st)
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err)
	}
	r.p.wait(t, 30*time.Second)
	for _, d := range denials(r.eventsNow()) {
		if d.TID != rep.TID {
			t.Errorf("denial of another thread than the payload's: %s %s rule=%s %s", d.Syscall, d.Args, d.Rule, d.Detail)
		}
	}
	r.took()
}
