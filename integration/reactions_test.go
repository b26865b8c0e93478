package integration

// Reactions of the decision plane on real QEMU under kfv-run in enforce
// mode: a payload of the test implant (integration/implant), triggered
// from inside the guest, makes a finding; a [[correlate]] rule of the
// profile orders a reaction; each test asserts the reaction event (done,
// with the payload's finding in its chain) and the reaction's effect,
// observed from outside: QMP on the test's own monitor, the guest's
// console, the host's side of its network, the process table, the disk.
//
// That the payloads work without kfv is shown by TestAttack's bare runs;
// that the built-in profile alone only denies them (the VM runs on, no
// reaction) by its kfv runs. The test profiles here are the built-in one
// with tables appended (reactProfile).

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// reactTimeout bounds the wait for a reaction once its payload has run,
// and for the Linux guest to boot and send its command (TCG here).
const (
	reactTimeout = 30 * time.Second
	bootTimeout  = 3 * time.Minute
)

func reactShort(t *testing.T) {
	t.Helper()
	needKfv(t)
	needQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU under kfv-run with the implant: skipped with -short")
	}
}

// correlate returns a [[correlate]] table that orders reactions on the
// first finding of detector on syscall.
func correlate(name, detector, syscall string, reactions ...string) string {
	q := make([]string, len(reactions))
	for i, r := range reactions {
		q[i] = fmt.Sprintf("%q", r)
	}
	return fmt.Sprintf(`
[[correlate]]
name = %q
match = { detector = %q, syscall = %q }
reactions = [%s]
once = true
reason = "test: the payload's %s orders %s"
`, name, detector, syscall, strings.Join(q, ", "), syscall, strings.Join(reactions, ", "))
}

// TestReactionPause: the raw guest's vCPU runs exec-shell; the refused
// execve orders pause (and, in the second case, pause then continue).
// QEMU starts stopped (-S) so that the test's monitor sees the VM run
// before the payload: prelaunch, then running after cont, then the STOP
// (and RESUME) events kfv's reaction causes, and the final query-status.
func TestReactionPause(t *testing.T) {
	reactShort(t)
	for _, tc := range []struct {
		name      string
		reactions []string
		events    []string
		final     string
	}{
		{"pause", []string{"pause"}, []string{"STOP"}, "paused"},
		{"pause-continue", []string{"pause", "continue"}, []string{"STOP", "RESUME"}, "running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			prof := reactProfile(t, dir, correlate("test-exec", "signature", "execve", tc.reactions...), false)
			qargs := append(rawReactArgs(t, "exec-shell", "marker"), "-S")
			r := startReact(t, dir, []string{"--profile", prof}, qargs)
			q := dialQMP(t, r.sock, 20*time.Second)
			if st := q.status(t); st != "prelaunch" {
				t.Fatalf("status %q before cont, want prelaunch (-S)", st)
			}
			if _, err := q.exec("cont", nil); err != nil {
				t.Fatalf("cont: %v", err)
			}
			seen := qmpEvents(q, reactTimeout, tc.events...)
			rep := r.implant("exec-shell", reactTimeout)
			for _, re := range tc.reactions {
				r.waitReaction(re, reactTimeout, finding("signature", "execve", rep.TID))
			}
			if got := strings.Join(seen, " "); !strings.Contains(got, strings.Join(tc.events, " ")) {
				t.Errorf("QMP events after cont: %q, want %q in this order", got, strings.Join(tc.events, " "))
			}
			if tc.final == "paused" {
				// kfv holds QEMU stopped from outside too: seen in
				// /proc, then lifted by the test so that its monitor
				// shows QMP's stop took effect as well.
				r.wantStopped()
				r.release()
			}
			if st := q.status(t); st != tc.final {
				t.Errorf("status %q after the reaction, want %q", st, tc.final)
			}
			if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
				t.Errorf("the payload's shell ran (marker exists)")
			}
			if _, err := q.exec("quit", nil); err != nil {
				t.Logf("quit: %v", err) // QEMU may close the socket before answering
			}
			if st := r.p.wait(t, 30*time.Second); st != 0 {
				t.Errorf("kfv-run exit %d after quit, want 0\nstderr:\n%s", st, tail(r.p.stderr.String(), 20))
			}
			r.took()
		})
	}
}

// TestReactionKill: the refused execve orders kill: kfv-run exits 137
// (QEMU died of SIGKILL) and QEMU's pid is gone.
func TestReactionKill(t *testing.T) {
	reactShort(t)
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec-kills", "signature", "execve", "kill"), false)
	r := startReact(t, dir, []string{"--profile", prof}, rawReactArgs(t, "exec-shell", "marker"))
	if !alive(r.qemuPID) {
		t.Fatalf("QEMU %d is not running before the payload", r.qemuPID)
	}
	st := r.p.wait(t, reactTimeout)
	rep := r.stoppedPayload("exec-shell")
	if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
		t.Error("the marker exists: the payload's shell ran before the kill")
	}
	r.waitReaction("kill", time.Second, finding("signature", "execve", rep.TID))
	if st != 137 {
		t.Errorf("kfv-run exit %d, want 137 (QEMU killed with SIGKILL)\nstderr:\n%s", st, tail(r.p.stderr.String(), 20))
	}
	if alive(r.qemuPID) {
		t.Errorf("QEMU %d still exists after kill", r.qemuPID)
	}
	r.took()
}

var heldRE = regexp.MustCompile(`held ([0-9.]+[a-zµ]+)`)

// voDeniesSecondOpen fires on the second open of one vCPU within a
// minute. The implant's thread first reads its own name from
// /proc/thread-self/comm (an open the VO lets through, held like any
// other); the second open is the payload's.
const voDeniesSecondOpen = `
[[correlate]]
name = "test-vcpu-opens-twice"
match = { detector = "behaviour", hrsc = "vcpu*", syscall = "openat" }
count = 2
window = "1m"
reactions = ["pause"]
once = true
reason = "test: a vCPU thread that opens a second file is refused, and the VM paused"
`

// TestReactionHold: the raw guest's vCPU runs other-disk on a file named
// on QEMU's command line (a spare drive), so the rules allow the open;
// the behaviour detector (vcpu-no-files) finds it, and the test's [[ho]]
// holds it until the VO answers. The fallback is set against the VO's
// answer, so that the outcome shows whose answer it was: the VO denies
// when a [[correlate]] rule fires on the finding (the spare stays
// untouched, the implant is refused with EACCES, the rule's pause is
// carried out), and allows otherwise (the implant writes its mark into
// the spare). The decision event on the payload's open must say how
// long it was held, within the bound.
func TestReactionHold(t *testing.T) {
	reactShort(t)
	const holdFor = 10 * time.Second
	for _, tc := range []struct {
		name     string
		fallback string
		extra    string
		verdict  string
	}{
		{"vo-denies", "allow", voDeniesSecondOpen, "deny"},
		{"vo-allows", "deny", "", "allow"},
		// The implant's first open (its thread's name) fires the rule:
		// the VO refuses it and orders pause, which QEMU can only carry
		// out once the vCPU thread has left the device model it runs
		// in. The payload's open, held meanwhile, must still get the
		// VO's answer (the rule fired for this vCPU) within its bound.
		{"held-behind-pause", "allow", correlate("test-vcpu-open", "behaviour", "openat", "pause"), "deny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				spare string
				r     *reactRun
				rep   implantReport
			)
			// A vCPU kick (QEMU pausing the VM) that lands before kfv
			// has received the payload's open interrupts it with EINTR:
			// seccomp waits interruptibly until the supervisor receives
			// a call, and QEMU's SIG_IPI handler has no SA_RESTART. Then
			// no call was held and there is nothing to judge, so the run
			// is repeated.
			for attempt := 1; ; attempt++ {
				dir := t.TempDir()
				ho := fmt.Sprintf(`
[[ho]]
layers = ["L1", "L2", "L3"]
detectors = ["origin", "behaviour"]
hold = ">=high"
hold_for = %q
hold_verdict = %q
reason = "test: a call of injected code or one its resource never makes waits for the vertical orchestrator"
`, holdFor.String(), tc.fallback)
				prof := reactProfile(t, dir, ho+tc.extra, true)
				spare = filepath.Join(dir, "spare.img")
				if err := os.WriteFile(spare, make([]byte, 64<<10), 0o600); err != nil {
					t.Fatalf("write spare image: %v", err)
				}
				qargs := append(rawReactArgs(t, "other-disk", "spare.img"), "-drive", "file=spare.img,format=raw,if=none,id=spare")
				r = startReact(t, dir, []string{"--profile", prof}, qargs)
				rep = r.implant("other-disk", reactTimeout)
				if attempt == 5 || rep.Result != "fail" || !strings.Contains(rep.Detail, "Interrupted system call") {
					break
				}
				t.Logf("attempt %d: the payload's open was interrupted before kfv received it (%s); again", attempt, rep.Detail)
				// The rule may have paused this VM meanwhile (its
				// cgroup frozen, so its monitor cannot answer a quit):
				// end it from outside.
				if err := syscall.Kill(r.qemuPID, syscall.SIGKILL); err != nil {
					t.Fatalf("kill the abandoned attempt's QEMU: %v", err)
				}
				r.p.wait(t, 30*time.Second)
			}
			e := r.waitEvent("decision on the payload's openat", reactTimeout, func(e *event.Event) bool {
				return e.Kind == event.KindDecision && e.TID == rep.TID && e.Syscall == "openat" && strings.Contains(e.Args, fmt.Sprintf("path=%q", spare))
			})
			t.Logf("decision: verdict=%s applied=%s errno=%s rule=%s detail=%q", e.Verdict, e.Applied, e.Errno, e.Rule, e.Detail)
			m := heldRE.FindStringSubmatch(e.Detail)
			if m == nil {
				t.Fatalf("decision detail %q does not say how long the call was held", e.Detail)
			}
			held, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatalf("held %q: %v", m[1], err)
			}
			t.Logf("the payload's thread was held %v (bound %v)", held, holdFor)
			if held >= holdFor {
				t.Errorf("held %v: the bound passed, so the fallback answered, not the VO", held)
			}
			if e.Verdict != tc.verdict || e.Applied != tc.verdict {
				t.Errorf("held call: verdict %s applied %s, want %s (the VO's answer; the fallback was %s)", e.Verdict, e.Applied, tc.verdict, tc.fallback)
			}
			b, err := os.ReadFile(spare)
			if err != nil {
				t.Fatalf("read spare image: %v", err)
			}
			marked := strings.HasPrefix(string(b), implantOtherDiskMark)
			if tc.verdict == "deny" {
				if rep.Result != "fail" || !strings.Contains(rep.Detail, "Permission denied") {
					t.Errorf("implant result=%s detail=%s, want the open refused with EACCES", rep.Result, rep.Detail)
				}
				if marked {
					t.Errorf("the spare image holds the implant's mark although the VO denied the open")
				}
				r.waitReaction("pause", reactTimeout, finding("behaviour", "openat", rep.TID))
				r.wantStopped()
				r.release() // for the test's quit
			} else {
				if rep.Result != "ok" || !marked {
					t.Errorf("implant result=%s detail=%s, spare marked=%t: want the open allowed by the VO and the mark written", rep.Result, rep.Detail, marked)
				}
				for _, ev := range r.eventsNow() {
					if ev.Kind == event.KindReaction {
						t.Errorf("reaction %s without a rule that orders it", ev.Reaction)
					}
				}
			}
			q := dialQMP(t, r.sock, 20*time.Second)
			if _, err := q.exec("quit", nil); err != nil {
				t.Logf("quit: %v", err) // QEMU may close the socket before answering
			}
			r.p.wait(t, 30*time.Second)
			r.took()
		})
	}
}

// TestReactionCrossLayer: with the built-in profile and no table of the
// test, an L1 finding takes the VM's NICs down at L3 through the rule
// hardware-finding-cuts-network. kvm-memslot runs in the raw guest's vCPU
// under KVM (QEMU 7.2 reports a NIC's link state to no monitor command,
// so there the evidence is the reaction carried out on the e1000 and the
// VM left running); rwx runs in the Linux guest's block worker, and the
// guest itself sees its carrier go and its transfer fail.
func TestReactionCrossLayer(t *testing.T) {
	reactShort(t)
	t.Run("kvm-memslot", func(t *testing.T) {
		dir := t.TempDir()
		qargs := append(rawReactArgs(t, "kvm-memslot", fmt.Sprintf("%x", guest.RawPeekAddr)),
			"-netdev", "user,id=kfvnet", "-device", "e1000,netdev=kfvnet,id=kfvnic")
		r := startReact(t, dir, []string{"--profile", "qemu"}, qargs)
		rep := r.implant("kvm-memslot", reactTimeout)
		if rep.Result != "fail" {
			t.Errorf("implant result=%s detail=%s, want the memory slot refused", rep.Result, rep.Detail)
		}
		e := r.waitReaction("link_down:all-nics", reactTimeout, func(l event.Link) bool {
			return l.Layer == "L1" && l.Rule == "no-kvm-memslot-host-memory" && l.TID == rep.TID
		})
		if e.Rule != "hardware-finding-cuts-network" {
			t.Errorf("reaction ordered by %q, want hardware-finding-cuts-network", e.Rule)
		}
		q := dialQMP(t, r.sock, 20*time.Second)
		if st := q.started(t); st != "running" {
			t.Errorf("status %q, want running: the rule cuts the network and leaves the VM alone", st)
		}
		if _, err := q.exec("quit", nil); err != nil {
			t.Logf("quit: %v", err)
		}
		r.p.wait(t, 30*time.Second)
		r.took()
	})
	t.Run("rwx", func(t *testing.T) {
		dir := t.TempDir()
		sink := newLineSink(t)
		qargs, _ := linuxReactArgs(t, dir, "kfv.payload=rwx", fmt.Sprintf("kfv.port=%d", sink.port()), "kfv.seconds=30")
		qargs = append(qargs, guest.NetArgs()...)
		r := startReact(t, dir, []string{"--profile", "qemu"}, qargs)
		st := r.p.wait(t, bootTimeout)
		rep := r.implant("rwx", time.Second)
		e := r.waitReaction("link_down:all-nics", time.Second, func(l event.Link) bool {
			return l.Layer == "L1" && l.Rule == "no-exec-memory" && l.TID == rep.TID
		})
		if e.Rule != "hardware-finding-cuts-network" {
			t.Errorf("reaction ordered by %q, want hardware-finding-cuts-network", e.Rule)
		}
		wantGuestLink(t, r, st, sink, []string{"send=before status=ok", "nic carrier=0 present=1", "send=after status=fail"}, []string{"send=before"})
		r.took()
	})
}

// wantGuestLink checks a react run that ended with the guest's power-off:
// exit 0, the KFV-REACT lines in order, and the lines the host received.
func wantGuestLink(t *testing.T, r *reactRun, status int, sink *lineSink, lines, received []string) {
	t.Helper()
	got := reactLines(r.p.stdout.String())
	t.Logf("guest: %q; host received %q", got, sink.got())
	if status != 0 {
		t.Errorf("kfv-run exit %d, want 0 (the guest powers off)\nstderr:\n%s", status, tail(r.p.stderr.String(), 20))
	}
	i := 0
	for _, l := range got {
		if i < len(lines) && l == lines[i] {
			i++
		}
	}
	if i < len(lines) {
		t.Errorf("guest's KFV-REACT lines %q lack %q (in this order)\nconsole:\n%s", got, lines[i:], tail(r.p.stdout.String(), 30))
	}
	var want, arrived []string
	for _, w := range received {
		want = append(want, "KFV-REACT "+w)
	}
	// A connection without a line may arrive once the link is back: the
	// refused transfer's SYN waited in virtio-net's transmit queue, and
	// the guest has closed that socket since.
	for _, l := range sink.got() {
		if l != "" {
			arrived = append(arrived, l)
		}
	}
	if strings.Join(arrived, "|") != strings.Join(want, "|") {
		t.Errorf("host received %q, want %q", sink.got(), want)
	}
}

// TestReactionLink: in the Linux guest (user networking, virtio-net), a
// transfer to the host works; then the block worker runs exec-shell, the
// refused execve orders link_down:all-nics, the guest sees its carrier go
// and its next transfer fails; then fork-exec, whose refused clone orders
// link_up:all-nics, and the guest's carrier and transfers come back. The
// host's listener receives the transfers before and after, not the one
// in between.
func TestReactionLink(t *testing.T) {
	reactShort(t)
	dir := t.TempDir()
	prof := reactProfile(t, dir,
		correlate("test-exec-cuts-link", "signature", "execve", "link_down:all-nics")+
			correlate("test-fork-restores-link", "signature", "clone", "link_up:all-nics"), false)
	sink := newLineSink(t)
	qargs, _ := linuxReactArgs(t, dir, "kfv.payload=exec-shell", "kfv.then=fork-exec", "kfv.arg=marker", fmt.Sprintf("kfv.port=%d", sink.port()), "kfv.seconds=30")
	qargs = append(qargs, guest.NetArgs()...)
	r := startReact(t, dir, []string{"--profile", prof}, qargs)
	st := r.p.wait(t, bootTimeout)
	exec := r.implant("exec-shell", time.Second)
	fork := r.implant("fork-exec", time.Second)
	r.waitReaction("link_down:all-nics", time.Second, finding("signature", "execve", exec.TID))
	r.waitReaction("link_up:all-nics", time.Second, finding("signature", "clone", fork.TID))
	wantGuestLink(t, r, st, sink, []string{
		"send=before status=ok", "nic carrier=0 present=1", "send=after status=fail",
		"nic carrier=1 present=1", "send=again status=ok",
	}, []string{"send=before", "send=again"})
	if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
		t.Errorf("a payload's shell ran (marker exists)")
	}
	r.took()
}

// TestReactionUnplug: the Linux guest's NIC sits in a PCIe root port;
// the refused execve of exec-shell orders device_del of it; the guest
// sees the NIC go (pciehp), and query-pci on the test's monitor no longer
// lists it.
func TestReactionUnplug(t *testing.T) {
	reactShort(t)
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec-unplugs", "signature", "execve", "device_del:kfvnic"), false)
	qargs, _ := linuxReactArgs(t, dir, "kfv.payload=exec-shell", "kfv.arg=marker", "kfv.seconds=30", "kfv.linger=60")
	qargs = append(qargs, guest.HotplugArgs()...)
	qargs = append(qargs, "-netdev", "user,id=kfvnet", "-device", "virtio-net-pci,netdev=kfvnet,id=kfvnic,bus="+guest.HotplugPort)
	r := startReact(t, dir, []string{"--profile", prof}, qargs)
	q := dialQMP(t, r.sock, 20*time.Second)
	// query-pci sees behind the root port once the firmware has given
	// it a bus number; the guest's pciehp takes 5 s to let a device go.
	r.waitConsole("KFV-BOOTED ", bootTimeout)
	if !pciHas(t, q, "kfvnic") {
		t.Fatalf("query-pci does not list kfvnic before the payload")
	}
	r.waitConsole("KFV-REACT nic carrier=none present=0", bootTimeout)
	rep := r.implant("exec-shell", time.Second)
	r.waitReaction("device_del:kfvnic", time.Second, finding("signature", "execve", rep.TID))
	t.Logf("guest: %q", reactLines(r.p.stdout.String()))
	// QEMU finishes the unplug once the guest has let the device go.
	if waitFor(10*time.Second, func() bool { return !pciHas(t, q, "kfvnic") }) {
		t.Logf("query-pci no longer lists kfvnic")
	} else {
		t.Errorf("query-pci still lists kfvnic after the guest saw it go")
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err) // QEMU may close the socket before answering
	}
	r.p.wait(t, 30*time.Second)
	r.took()
}

// TestReactionRestart: the refused execve of exec-shell orders restart;
// kfv-run relaunches QEMU with the same command line once the first one
// is gone. The guest wrote a pattern and a mark to its disk before the
// command; it boots again in a new QEMU, finds the mark, sends nothing
// and reports the pattern's sha256, which must be the one written; the
// image on the host holds it too.
func TestReactionRestart(t *testing.T) {
	reactShort(t)
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec-restarts", "signature", "execve", "restart"), false)
	qargs, disk := linuxReactArgs(t, dir, "kfv.payload=exec-shell", "kfv.arg=marker", "kfv.seconds=30")
	r := startReact(t, dir, []string{"--profile", prof}, qargs)
	st := r.p.wait(t, 2*bootTimeout)
	rep := r.stoppedPayload("exec-shell")
	if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
		t.Error("the marker exists: the payload's shell ran before the restart")
	}
	r.waitReaction("restart", time.Second, finding("signature", "execve", rep.TID))
	out := r.p.stdout.String()
	boots := guest.Lines([]byte(out), "KFV-BOOTED ")
	loaded := parseImplant(r.p.stderr.String(), "exec-shell").Loaded
	t.Logf("boots %q, QEMU pids %v, guest %q", boots, loaded, reactLines(out))
	if st != 0 {
		t.Errorf("kfv-run exit %d, want 0 (the relaunched guest powers off)\nstderr:\n%s", st, tail(r.p.stderr.String(), 20))
	}
	if len(boots) != 2 || len(loaded) != 2 || loaded[0] == loaded[1] || loaded[0] != r.qemuPID {
		t.Errorf("want two boots in two QEMUs (the first %d): boots %q, QEMU pids %v", r.qemuPID, boots, loaded)
	}
	want := guest.PatternSHA256(1)
	lines := reactLines(out)
	if !contains(lines, "pattern sha256="+want) || !contains(lines, "mark=found sha256="+want) {
		t.Errorf("guest lines %q: want the pattern written (sha256 %s) and found again after the restart", lines, want)
	}
	if got := imageSHA(t, disk, 1<<20, 1<<20); got != want {
		t.Errorf("image on the host holds sha256 %s at 1 MiB, want %s", got, want)
	}
	// Never two QEMUs on one disk: the first one's exit is in the stream
	// before the second one starts.
	evs := r.eventsNow()
	exited, started := -1, -1
	for i, e := range evs {
		if e.Kind != event.KindLifecycle {
			continue
		}
		if e.PID == r.qemuPID && strings.HasPrefix(e.Detail, "qemu exited") && exited < 0 {
			exited = i
		}
		if e.PID != r.qemuPID && strings.HasPrefix(e.Detail, "starting ") && started < 0 {
			started = i
		}
	}
	if exited < 0 || started < 0 || exited > started {
		t.Errorf("want the first QEMU's exit before the second's start (events %d, %d):\n%s", exited, started, dumpPlane(evs))
	}
	r.took()
}

// imageSHA is the hex sha256 of n bytes at off in the file at path.
func imageSHA(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open image: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatalf("read image: %v", err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestReactionRestartCheckpoint: kfv-run keeps a clean checkpoint every
// 2 s; the Linux guest counts in memory and, at tick reactAt, sends the
// command for exec-shell that the test staged on its disk, whose refused
// execve orders restart_checkpoint. QEMU is relaunched from the latest
// checkpoint: the guest does not boot again (one KFV-BOOTED), its count
// goes on from the checkpoint, which is at or after the value printed
// when the last checkpoint before the attack was saved (less the one
// tick that may pass while kfv resumes the VM) and at most the value at
// the attack, and it counts to the end. The test erases the staged
// command while QEMU is down, so that the resumed guest, passing reactAt
// again, sends nothing.
func TestReactionRestartCheckpoint(t *testing.T) {
	reactShort(t)
	const reactAt, count = 30, 45
	dir := t.TempDir()
	prof := reactProfile(t, dir, correlate("test-exec-restores", "signature", "execve", "restart_checkpoint"), false)
	qargs, disk := linuxReactArgs(t, dir, fmt.Sprintf("kfv.at=%d", reactAt), fmt.Sprintf("kfv.count=%d", count))
	cmd, err := guest.TriggerCommand("exec-shell", "marker")
	if err != nil {
		t.Fatal(err)
	}
	writeSector(t, disk, 16, cmd)
	r := startReact(t, dir, []string{"--profile", prof, "--checkpoint-every", "2s"}, qargs)
	// Only the trigger is awaited: the reaction may end this QEMU
	// before the implant reports the refused execve.
	if !waitFor(bootTimeout, func() bool { return parseImplant(r.p.stderr.String(), "exec-shell").TID != 0 }) {
		t.Fatalf("the implant saw no exec-shell trigger within %v\nstderr:\n%s", bootTimeout, r.p.stderr)
	}
	// The block layer may hand the implant the trigger sector twice (two
	// worker threads); either execve is the payload's.
	re := r.waitReaction("restart_checkpoint", reactTimeout, finding("signature", "execve", 0))
	r.waitEvent("the first QEMU's exit", reactTimeout, func(e *event.Event) bool {
		return e.Kind == event.KindLifecycle && e.PID == r.qemuPID && strings.HasPrefix(e.Detail, "qemu exited")
	})
	writeSector(t, disk, 16, nil)
	erased := time.Now()
	st := r.p.wait(t, 2*bootTimeout)
	evs := r.eventsNow()
	var saved time.Time
	restored := false
	for _, e := range evs {
		if e.Kind != event.KindLifecycle {
			continue
		}
		if e.Detail == "checkpoint saved" && e.Time.Before(re.Time) {
			saved = e.Time
		}
		if strings.HasPrefix(e.Detail, "checkpoint restored") {
			restored = true
		}
	}
	if saved.IsZero() || !restored {
		t.Fatalf("want a checkpoint saved before the reaction and restored after it (saved %v, restored %t):\n%s\nconsole:\n%s", saved, restored, dumpPlane(evs), tail(r.p.stdout.String(), 20))
	}
	// The counts as they arrived: the value on the console when the
	// checkpoint was saved, and where the count went back.
	atSave, restoredTo, back := -1, -1, 0
	prev := -1
	for _, l := range r.console.snapshot() {
		i := strings.Index(l.text, "KFV-COUNT n=")
		if i < 0 {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(l.text[i:], "KFV-COUNT n=%d", &n); err != nil {
			continue // a line cut short
		}
		if !l.at.After(saved) {
			atSave = n
		}
		if n <= prev {
			back++
			if restoredTo < 0 {
				restoredTo = n
			}
		}
		prev = n
	}
	boots := guest.Lines([]byte(r.p.stdout.String()), "KFV-BOOTED ")
	t.Logf("checkpoint saved at count %d, attack at %d, count resumed at %d; boots %q; guest %q", atSave, reactAt, restoredTo, boots, reactLines(r.p.stdout.String()))
	if len(boots) != 1 {
		t.Errorf("%d KFV-BOOTED lines, want 1: the guest must resume, not boot", len(boots))
	}
	if back < 1 || restoredTo < atSave-1 || restoredTo > reactAt {
		t.Errorf("the count went back %d times, first to %d; want it back to within [%d, %d]\nevents:\n%s", back, restoredTo, atSave-1, reactAt, dumpPlane(evs))
	}
	if prev != count-1 {
		t.Errorf("the count ended at %d, want %d", prev, count-1)
	}
	var triggers []string
	for _, l := range parseImplant(r.p.stderr.String(), "exec-shell").Lines {
		if strings.Contains(l, "trigger payload=") {
			triggers = append(triggers, l)
		}
	}
	// Every trigger the implant saw was stopped (no marker); how many
	// there were depends on the block layer (see above).
	if len(triggers) == 0 {
		t.Errorf("no trigger seen by the implant")
	}
	t.Logf("%d triggers (the staged command was erased at %v)", len(triggers), erased.Format("15:04:05.000"))
	if _, err := os.Stat(filepath.Join(dir, "marker")); err == nil {
		t.Errorf("the marker exists: a shell ran")
	}
	if st != 0 {
		t.Errorf("kfv-run exit %d, want 0 (the resumed guest counts to the end and powers off)\nevents:\n%s\nstderr:\n%s", st, dumpPlane(evs), tail(r.p.stderr.String(), 20))
	}
	r.took()
}

// writeSector writes data, zero-padded to 512 bytes, at sector n of the
// image at path (nil erases the sector).
func writeSector(t *testing.T, path string, n int64, data []byte) {
	t.Helper()
	if len(data) > 512 {
		t.Fatalf("%d bytes do not fit a sector", len(data))
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open image: %v", err)
	}
	sector := make([]byte, 512)
	copy(sector, data)
	_, err = f.WriteAt(sector, n*512)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("write sector %d of %s: %v", n, path, err)
	}
}
