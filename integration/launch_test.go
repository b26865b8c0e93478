package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// TestRawGuestExitCode boots the raw-code guest under kfv-run in enforce
// mode with the built-in profile: QEMU must run it to the end and exit with
// the status the guest chose, with no call denied on the way.
func TestRawGuestExitCode(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	forEachAccel(t, func(t *testing.T, accel string) {
		const code = 21
		img := rawGuest(t, guest.RawOptions{ExitCode: code})
		events := filepath.Join(t.TempDir(), "events.jsonl")
		p := start(t, kfvArgs(events, []string{"--mode", "enforce"}, qemu, guest.RawArgs(img, accel)...))
		status := p.wait(t, 60*time.Second)
		evs := readEvents(t, events)
		if want := guest.RawExitStatus(code); status != want {
			t.Fatalf("kfv-run exited %d, want the guest's %d\nstderr:\n%s\nevents:\n%s", status, want, p.stderr, dumpEvents(evs))
		}
		if !strings.Contains(p.stdout.String(), strings.TrimSpace(guest.DefaultRawMessage)) {
			t.Errorf("guest output missing %q: %q", guest.DefaultRawMessage, p.stdout)
		}
		if d := denials(evs); len(d) > 0 {
			t.Errorf("%d denials booting a benign guest:\n%s", len(d), dumpEvents(d))
		}
		if !hasLifecycle(evs, "exec ") {
			t.Errorf("no lifecycle event for QEMU's exec:\n%s", dumpEvents(evs))
		}
	})
}

// TestGuestExitsAtStartUp: a guest that powers off at once, while kfv's
// private monitor is still being set up, must still end QEMU with the
// guest's status. QEMU 10.0 hung in its exit (monitor_cleanup) in about
// one such run in ten, with -sandbox on it crashed, until kfv held the
// guest (-S) until its monitor answered (docs/compatibility.md). Twenty
// runs per accelerator, with and without QEMU's own sandbox.
func TestGuestExitsAtStartUp(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	forEachAccel(t, func(t *testing.T, accel string) {
		const code = 7
		img := rawGuest(t, guest.RawOptions{ExitCode: code})
		for i := range 20 {
			args := guest.RawArgs(img, accel)
			if i%2 == 1 {
				args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
			}
			events := filepath.Join(t.TempDir(), "events.jsonl")
			p := start(t, kfvArgs(events, []string{"--mode", "enforce"}, qemu, args...))
			if status, want := p.wait(t, 20*time.Second), guest.RawExitStatus(code); status != want {
				t.Fatalf("run %d (%q): kfv-run exited %d, want the guest's %d\nstderr:\n%s", i, args, status, want, p.stderr)
			}
			evs := readEvents(t, events)
			for _, e := range evs {
				if e.Kind == "error" || e.Kind == event.KindReaction || e.Verdict == "deny" {
					t.Errorf("run %d: %s event in a benign run:\n%s", i, e.Kind, dumpEvents([]event.Event{e}))
				}
			}
		}
	})
}

// TestQEMUFailsAtStart: a QEMU that refuses its command line (a device
// it does not know, an image that is not there) exits at once with its
// own status and message; kfv adds no error event, since nothing went
// wrong on kfv's side (its monitor meeting a closed socket is QEMU
// ending).
func TestQEMUFailsAtStart(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	for name, extra := range map[string][]string{
		"unknown-device": {"-device", "kfv-no-such-device"},
		"missing-image":  {"-drive", "file=" + filepath.Join(t.TempDir(), "missing.img") + ",format=raw,if=virtio"},
	} {
		t.Run(name, func(t *testing.T) {
			for i := range 5 {
				events := filepath.Join(t.TempDir(), "events.jsonl")
				args := append(guest.RawArgs(img, "tcg"), extra...)
				p := start(t, kfvArgs(events, []string{"--mode", "enforce"}, qemu, args...))
				if status := p.wait(t, 30*time.Second); status != 1 {
					t.Fatalf("run %d: kfv-run exited %d, want QEMU's 1\nstderr:\n%s", i, status, p.stderr)
				}
				if !strings.Contains(p.stderr.String(), "qemu-system-x86_64: ") {
					t.Errorf("run %d: QEMU's own message is missing from stderr:\n%s", i, p.stderr)
				}
				for _, e := range readEvents(t, events) {
					if e.Kind == event.KindError {
						t.Errorf("run %d: error event for a QEMU that refused its command line:\n%s", i, dumpEvents([]event.Event{e}))
					}
				}
			}
		})
	}
}

func hasLifecycle(evs []event.Event, substr string) bool {
	for _, e := range evs {
		if e.Kind == "lifecycle" && strings.Contains(e.Detail, substr) {
			return true
		}
	}
	return false
}

// TestMigrateExecDenied: "migrate" to an exec: URI makes real QEMU fork
// /bin/sh. Bare, the command runs (the marker appears: the test can tell).
// Under kfv-run it must not, at two layers:
//   - qmp: on a QMP monitor kfv serves (the L3 hook), the command is
//     refused before QEMU sees it, with an L3 deny event (rule qmp:no-exec);
//   - hmp: on an HMP monitor, which kfv does not parse, QEMU tries to fork
//     and the seccomp layer denies it (clone/execve, rule no-fork/no-exec).
//
// Either way the VM still runs and answers QMP.
func TestMigrateExecDenied(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	forEachAccel(t, func(t *testing.T, accel string) {
		testMigrateExec(t, qemu, img, accel, false, "qmp")
		testMigrateExec(t, qemu, img, accel, true, "qmp")
		testMigrateExec(t, qemu, img, accel, true, "hmp")
	})
}

func testMigrateExec(t *testing.T, qemu, img, accel string, supervised bool, via string) {
	name := "bare"
	if supervised {
		name = "kfv-" + via
	}
	t.Run(name, func(t *testing.T) {
		dir := t.TempDir()
		marker := filepath.Join(dir, "marker")
		sock := filepath.Join(dir, "qmp.sock")
		hmpSock := filepath.Join(dir, "hmp.sock")
		events := filepath.Join(dir, "events.jsonl")
		qargs := append(guest.RawArgs(img, accel), "-qmp", "unix:"+sock+",server=on,wait=off",
			"-monitor", "unix:"+hmpSock+",server=on,wait=off")
		argv := append([]string{qemu}, qargs...)
		if supervised {
			argv = kfvArgs(events, nil, qemu, qargs...)
		}
		p := start(t, argv)
		q := dialQMP(t, sock, 20*time.Second)
		// The migration fails either way (sh does not read the
		// stream); what matters is whether sh ran.
		if via == "hmp" {
			out, err := hmpCommand(hmpSock, `migrate "exec:touch `+marker+`"`)
			if err != nil || strings.Contains(out, "extraneous") {
				t.Fatalf("hmp migrate: %v; monitor said %q", err, lastLine(out))
			}
		} else {
			_, err := q.exec("migrate", map[string]any{"uri": "exec:touch " + marker})
			t.Logf("migrate: %v", err)
		}
		ran := waitFor(3*time.Second, func() bool { _, err := os.Stat(marker); return err == nil })
		if st := q.started(t); st != "running" {
			t.Errorf("VM status %q after the attempt, want running", st)
		}
		if !supervised {
			if !ran {
				t.Fatalf("bare QEMU did not run the exec: command: the test proves nothing\nstderr:\n%s", p.stderr)
			}
			return
		}
		if ran {
			t.Fatalf("marker created under kfv-run: QEMU ran /bin/sh")
		}
		if _, err := q.exec("quit", nil); err != nil {
			t.Logf("quit: %v", err)
		}
		p.wait(t, 20*time.Second)
		evs := readEvents(t, events)
		var hit *event.Event
		ds := denials(evs)
		for i, e := range ds {
			layer3 := via == "qmp" && e.Layer == "L3" && e.Rule == "qmp:no-exec" && strings.Contains(e.Args, "migrate")
			syscall := via == "hmp" && (e.Syscall == "execve" || e.Syscall == "clone" || e.Syscall == "clone3" || e.Syscall == "fork" || e.Syscall == "vfork")
			if layer3 || syscall {
				hit = &ds[i]
				break
			}
		}
		if hit == nil {
			t.Fatalf("no %s deny in the event stream:\n%s", map[string]string{"qmp": "L3 (qmp:no-exec)", "hmp": "execve/clone/fork"}[via], dumpEvents(evs))
		}
		if hit.Rule == "" || hit.Applied != "deny" {
			t.Errorf("deny event without rule or not applied: %+v", *hit)
		}
		t.Logf("stopped by %s on %s %s (%s)", hit.Rule, hit.Syscall, hit.Args, hit.Detail)
	})
}

// lastLine is the last non-empty line of an HMP transcript (the monitor
// echoes every keystroke with terminal escapes).
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(out, "\r", "")), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && l != "(qemu)" {
			return l
		}
	}
	return ""
}

// hmpCommand runs one command on an HMP monitor socket and returns what
// the monitor printed within a second.
func hmpCommand(sock, cmd string) (string, error) {
	var c net.Conn
	var err error
	if !waitFor(20*time.Second, func() bool { c, err = net.Dial("unix", sock); return err == nil }) {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c)
	return string(b), nil
}

// TestNoListenerInQEMUAndFDPassthrough: QEMU under kfv-run holds no
// seccomp listener fd, and an fd handed to kfv-run at number N reaches
// QEMU at N: QEMU writes the guest's serial output through it
// (-add-fd fd=N + a chardev on /dev/fdset/1).
func TestNoListenerInQEMUAndFDPassthrough(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	dir := t.TempDir()
	img := rawGuest(t, guest.RawOptions{Loop: true, TicksPerLine: 2})
	serial := filepath.Join(dir, "serial.out")
	f, err := os.OpenFile(serial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// ExtraFiles[0..2] become fds 3..5; the serial file is fd 5.
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	const fdN = 5
	sock := filepath.Join(dir, "qmp.sock")
	events := filepath.Join(dir, "events.jsonl")
	qargs := guest.RawArgs(img, "tcg")
	qargs = replaceArg(qargs, "-serial", "chardev:ser0")
	qargs = append(qargs,
		"-add-fd", fmt.Sprintf("fd=%d,set=1,opaque=kfv-test", fdN),
		"-chardev", "file,id=ser0,path=/dev/fdset/1",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	p := start(t, kfvArgs(events, nil, qemu, qargs...), devnull, devnull, f)
	q := dialQMP(t, sock, 20*time.Second)
	qemuPID := childPID(t, p.cmd.Process.Pid)

	if !waitFor(20*time.Second, func() bool {
		b, _ := os.ReadFile(serial)
		return strings.Contains(string(b), "KFV-RAW tick")
	}) {
		b, _ := os.ReadFile(serial)
		t.Fatalf("guest output did not arrive through fd %d: %q\nstderr:\n%s", fdN, b, p.stderr)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", qemuPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", qemuPID, e.Name()))
		if err == nil && strings.Contains(target, "seccomp") {
			t.Errorf("QEMU holds fd %s -> %s", e.Name(), target)
		}
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err)
	}
	if st := p.wait(t, 20*time.Second); st != 0 {
		t.Errorf("kfv-run exited %d after quit\nstderr:\n%s", st, p.stderr)
	}
}

func replaceArg(args []string, opt, val string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == opt {
			out[i+1] = val
		}
	}
	return out
}

// TestSignalForwarding: TERM, INT and HUP sent to kfv-run reach QEMU,
// which says so and exits 0 (its own status); a QEMU killed by a signal
// makes kfv-run exit 128+N.
func TestSignalForwarding(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "qmp.sock")
			events := filepath.Join(dir, "events.jsonl")
			if sig == syscall.SIGHUP {
				// With an event file SIGHUP reopens it
				// (TestEventFileReopen); without one it is forwarded.
				events = "-"
			}
			p := start(t, kfvArgs(events, nil, qemu, append(guest.RawArgs(img, "tcg"), "-qmp", "unix:"+sock+",server=on,wait=off")...))
			dialQMP(t, sock, 20*time.Second)
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			st := p.wait(t, 20*time.Second)
			if st != 0 {
				t.Errorf("kfv-run exited %d, want QEMU's 0", st)
			}
			want := fmt.Sprintf("terminating on signal %d from pid %d", sig, p.cmd.Process.Pid)
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("QEMU did not report %q:\n%s", want, p.stderr)
			}
		})
	}
	t.Run("qemu-killed", func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "qmp.sock")
		p := start(t, kfvArgs(filepath.Join(dir, "ev"), nil, qemu, append(guest.RawArgs(img, "tcg"), "-qmp", "unix:"+sock+",server=on,wait=off")...))
		dialQMP(t, sock, 20*time.Second)
		if err := syscall.Kill(childPID(t, p.cmd.Process.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if st := p.wait(t, 20*time.Second); st != 128+9 {
			t.Errorf("kfv-run exited %d, want 137", st)
		}
	})
}

// TestBadInput: a missing QEMU gives 127 and says so; a malformed
// profile is refused before anything starts.
func TestBadInput(t *testing.T) {
	needKfv(t)
	dir := t.TempDir()
	p := start(t, []string{kfvRun, "--events", filepath.Join(dir, "ev"), "--", "/nonexistent/qemu-system-x86_64", "-m", "16"})
	if st := p.wait(t, 10*time.Second); st != 127 {
		t.Errorf("missing QEMU: exit %d, want 127", st)
	}
	if !strings.Contains(p.stderr.String(), "/nonexistent/qemu-system-x86_64") || !strings.Contains(p.stderr.String(), "not found") {
		t.Errorf("missing QEMU: unclear message %q", p.stderr)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("name = \"bad\"\n[defaults]\naction = \"inspect\"\n[[syscall]]\nnames = [\"no_such_call\"]\naction = \"allow\"\nreason = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	p = start(t, []string{kfvRun, "--profile", bad, "--", "/bin/sh", "-c", "touch " + marker})
	st := p.wait(t, 10*time.Second)
	if st != 125 {
		t.Errorf("bad profile: exit %d, want 125", st)
	}
	if !strings.Contains(p.stderr.String(), bad+":5:") || !strings.Contains(p.stderr.String(), "no_such_call") {
		t.Errorf("bad profile: message does not name the place: %q", p.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the command ran despite the bad profile")
	}

	p = start(t, []string{kfvRun, "profile", "check", bad})
	if st := p.wait(t, 10*time.Second); st != 1 {
		t.Errorf("profile check: exit %d, want 1", st)
	}
	if !strings.Contains(p.stdout.String()+p.stderr.String(), bad+":5:") {
		t.Errorf("profile check: %q", p.stdout.String()+p.stderr.String())
	}
}

// TestKillSupervisor: SIGKILL to kfv-run mid-run leaves no QEMU behind,
// and QEMU's attempts to run a program meanwhile never succeed.
func TestKillSupervisor(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	marker := filepath.Join(dir, "marker")
	p := start(t, kfvArgs(filepath.Join(dir, "ev"), nil, qemu, append(guest.RawArgs(img, "tcg"), "-qmp", "unix:"+sock+",server=on,wait=off")...))
	q := dialQMP(t, sock, 20*time.Second)
	qemuPID := childPID(t, p.cmd.Process.Pid)
	// Keep QEMU asking to fork while the supervisor dies.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := q.exec("migrate", map[string]any{"uri": "exec:touch " + marker}); err != nil && strings.Contains(err.Error(), "EOF") {
				return
			}
			q.exec("migrate_cancel", nil)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	if !waitFor(5*time.Second, func() bool { return !alive(qemuPID) }) {
		t.Errorf("QEMU %d still running after kfv-run was killed", qemuPID)
	}
	close(stop)
	q.c.Close()
	<-done
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("QEMU ran a program while or after its supervisor died")
	}
}
