package integration

import (
	"fmt"
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
)

// QEMU's -daemonize -pidfile, as Proxmox starts QEMU: bare, then under
// kfv-run (enforce, built-in profile). kfv-run must return as QEMU does
// (0 once the daemon is ready), the pidfile must name the daemon, the
// daemon must be supervised by a kfv-run that is not the caller's child,
// the run must make no denial and no reaction, and the daemon's exit must
// end the supervisor with an exit event.

// withSerialFile replaces -serial stdio (which -daemonize refuses) by a
// file.
func withSerialFile(args []string, path string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-serial" && out[i+1] == "stdio" {
			out[i+1] = "file:" + path
		}
	}
	return out
}

// readPidfile waits for QEMU's pidfile and returns the pid in it.
func readPidfile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	if !waitFor(10*time.Second, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	}) {
		t.Fatalf("no pid in %s", path)
	}
	return pid
}

// ppidOf returns the parent of pid, or 0 when it is gone.
func ppidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func TestDaemonize(t *testing.T) {
	qemu := needQEMU(t)
	cases := []struct {
		name string
		args func(t *testing.T, dir string) (args []string, selfExits bool)
	}{
		{"raw", func(t *testing.T, dir string) ([]string, bool) {
			accel := "kvm"
			if kvmProblem() != "" {
				accel = "tcg"
			}
			img := rawGuest(t, guest.RawOptions{Loop: true})
			return guest.RawArgs(img, accel), false
		}},
		{"linux", func(t *testing.T, dir string) ([]string, bool) {
			accel, err := guest.LinuxAccel()
			if err != nil {
				t.Fatal(err)
			}
			if accel == "kvm" && kvmProblem() != "" {
				t.Skipf("%s=kvm but %s", guest.LinuxAccelEnv, kvmProblem())
			}
			l := attackLinuxGuest(t)
			disk := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(disk, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(disk, 16<<20); err != nil {
				t.Fatal(err)
			}
			// The disk workload runs to its end; -no-reboot and panic=-1
			// then end QEMU, daemon and all.
			return append(guest.LinuxArgs(l, accel, guest.WorkloadDisk, "kfv.size=4"), guest.DiskArgs(disk, "raw")...), true
		}},
	}
	for _, c := range cases {
		for _, underKfv := range []bool{false, true} {
			name := c.name + "/bare"
			if underKfv {
				name = c.name + "/kfv"
			}
			t.Run(name, func(t *testing.T) {
				if underKfv {
					needKfv(t)
				}
				dir := t.TempDir()
				args, selfExits := c.args(t, dir)
				serial := filepath.Join(dir, "serial.log")
				pidfile := filepath.Join(dir, "qemu.pid")
				qemuReachable(t, dir)
				sock := filepath.Join(dir, "qmp.sock")
				events := filepath.Join(dir, "events.jsonl")
				args = append(withSerialFile(args, serial), "-daemonize", "-pidfile", pidfile, "-qmp", "unix:"+sock+",server=on,wait=off")
				argv := append([]string{qemu}, args...)
				if underKfv {
					argv = kfvArgs(events, []string{"--mode", "enforce", "--profile", "qemu"}, qemu, args...)
				}
				began := time.Now()
				p := start(t, argv)
				if st := p.wait(t, 2*time.Minute); st != 0 {
					t.Fatalf("%s exited %d, want 0 (QEMU's -daemonize parent once the daemon is ready)\nstderr:\n%s", argv[0], st, p.stderr)
				}
				t.Logf("returned after %v", time.Since(began).Round(time.Millisecond))
				daemon := readPidfile(t, pidfile)
				if daemon == p.cmd.Process.Pid {
					t.Fatalf("the pidfile names the process that exited")
				}
				if !alive(daemon) {
					t.Fatalf("the pidfile's process %d is not running", daemon)
				}
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", daemon))
				if !strings.HasPrefix(string(comm), "qemu-system") {
					t.Fatalf("pidfile names %d (%q), not QEMU", daemon, comm)
				}
				supervisor := ppidOf(daemon)
				t.Cleanup(func() {
					syscall.Kill(daemon, syscall.SIGKILL)
				})
				if underKfv {
					// The daemon's parent is the detached kfv-run, which
					// is not the test's child.
					exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", supervisor))
					if !strings.HasSuffix(exe, "kfv-run") && !strings.HasSuffix(exe, filepath.Base(kfvRun)) {
						t.Fatalf("the daemon's parent %d runs %q, want the detached kfv-run", supervisor, exe)
					}
					if pp := ppidOf(supervisor); pp == os.Getpid() {
						t.Fatalf("the supervisor %d is still the caller's child", supervisor)
					}
				}
				if !selfExits {
					if underKfv {
						// Quit once memwatch has its baseline: a scan of a
						// QEMU that is exiting fails (as without -daemonize).
						waitFor(30*time.Second, func() bool {
							b, _ := os.ReadFile(events)
							return strings.Contains(string(b), "memwatch baseline")
						})
					}
					q := dialQMP(t, sock, 20*time.Second)
					if st := q.started(t); st != "running" {
						t.Fatalf("QMP status %q, want running", st)
					}
					if _, err := q.exec("quit", nil); err != nil && !strings.Contains(err.Error(), "EOF") {
						t.Logf("quit: %v", err)
					}
				}
				if !waitFor(3*time.Minute, func() bool { return !alive(daemon) }) {
					t.Fatalf("the daemon %d did not exit", daemon)
				}
				if selfExits {
					b, _ := os.ReadFile(serial)
					if !strings.Contains(string(b), "KFV-RESULT workload=disk status=ok") {
						t.Fatalf("the guest's disk workload did not succeed; console:\n%s", lastLines(string(b), 20))
					}
				}
				if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
					t.Errorf("pidfile %s still there after QEMU exited (%v)", pidfile, err)
				}
				if !underKfv {
					return
				}
				if !waitFor(10*time.Second, func() bool { return !alive(supervisor) }) {
					t.Fatalf("the supervisor %d goes on after the daemon exited", supervisor)
				}
				evs := readEvents(t, events)
				if d := denials(evs); len(d) > 0 {
					t.Errorf("%d denials in a benign -daemonize run:\n%s", len(d), dumpEvents(d))
				}
				var fromDaemon, followed int
				exitEvent := false
				for _, e := range evs {
					switch {
					case e.Kind == event.KindReaction:
						t.Errorf("reaction in a benign run: %s %s", e.Reaction, e.Detail)
					case e.Kind == event.KindError:
						t.Errorf("error event: %s", e.Detail)
					case e.Kind == event.KindLifecycle && strings.HasPrefix(e.Detail, "qemu exited"):
						t.Logf("exit event: pid %d: %s", e.PID, e.Detail)
						exitEvent = exitEvent || e.PID == daemon
					case e.Kind == event.KindDecision && e.PID == daemon:
						fromDaemon++
					case e.Kind == event.KindLifecycle && strings.Contains(e.Detail, "QEMU forked (-daemonize)"):
						followed++
					case e.Kind == event.KindLifecycle && e.PID == daemon && strings.HasPrefix(e.Detail, "qemu exited with status"):
						exitEvent = true
					}
				}
				if followed != 2 {
					t.Errorf("%d follow events, want 2 (the child, then the daemon)", followed)
				}
				// The daemon's calls reach the supervisor: the pidfile's
				// open, the monitor's bind, its ROMs.
				if fromDaemon == 0 {
					t.Errorf("no decided call of the daemon %d in the event stream", daemon)
				}
				if !exitEvent {
					t.Errorf("no exit event of the daemon %d", daemon)
				}
				t.Logf("%d decided calls of the daemon, %d events", fromDaemon, len(evs))
			})
		}
	}
}

// A payload's fork in a daemonized QEMU: from a device thread (the block
// worker that carries the guest's trigger) and from the main loop (the
// one thread whose fork -daemonize needs: by then the daemonizing forks
// are spent and the process has a vCPU). Bare, the fork and its exec run;
// under kfv both are refused by no-fork and QEMU goes on; with a profile
// that kills on a refused fork, the kill reaches the daemon.
func TestDaemonizeForkRefused(t *testing.T) {
	qemu := needQEMU(t)
	for _, c := range []struct {
		name, payload, mode string
	}{
		{"device/bare", "fork-exec", "bare"},
		{"device/kfv", "fork-exec", "kfv"},
		{"main/bare", "fork-exec-main", "bare"},
		{"main/kfv", "fork-exec-main", "kfv"},
		{"main/kfv-kill", "fork-exec-main", "kill"},
	} {
		t.Run(c.name, func(t *testing.T) { daemonAttack(t, qemu, c.payload, c.mode) })
	}
}

// killOnForkProfile is the built-in profile with one more correlation:
// a refused fork kills QEMU.
func killOnForkProfile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "profiles", "builtin", "qemu.toml"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), `name = "qemu"`, `name = "qemu-kill-on-fork"`, 1) + `
[[correlate]]
name = "refused-fork-kills"
match = { detector = "signature", syscall = ["clone", "fork", "vfork"] }
reactions = ["kill"]
once = true
reason = "test: a refused fork kills QEMU, to show that the reaction reaches the daemon"
`
	p := filepath.Join(dir, "kill-on-fork.toml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func daemonAttack(t *testing.T, qemu, payload, mode string) {
	implant := buildImplant(t)
	if mode != "bare" {
		needKfv(t)
	}
	accel, err := guest.LinuxAccel()
	if err != nil {
		t.Fatal(err)
	}
	if accel == "kvm" && kvmProblem() != "" {
		t.Skipf("%s=kvm but %s", guest.LinuxAccelEnv, kvmProblem())
	}
	l := attackLinuxGuest(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "marker")
	words, err := guest.TriggerCmdline(payload, marker, 600)
	if err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	pidfile := filepath.Join(dir, "qemu.pid")
	qemuReachable(t, dir)
	sock := filepath.Join(dir, "qmp.sock")
	events := filepath.Join(dir, "events.jsonl")
	qemuLog := filepath.Join(dir, "qemu.log")
	// With a log (-d, -D) the daemon's stderr is the log file (/dev/null
	// otherwise): the implant reports there once QEMU is ready.
	args := append(guest.LinuxArgs(l, accel, guest.WorkloadTrigger, words...), guest.DiskArgs(disk, "raw")...)
	args = append(withSerialFile(args, serial), "-daemonize", "-pidfile", pidfile, "-d", "guest_errors", "-D", qemuLog,
		"-name", "kfv-test,debug-threads=on", "-qmp", "unix:"+sock+",server=on,wait=off")
	argv := append([]string{qemu}, args...)
	switch mode {
	case "kfv":
		argv = kfvArgs(events, []string{"--mode", "enforce", "--profile", "qemu"}, qemu, args...)
	case "kill":
		argv = kfvArgs(events, []string{"--mode", "enforce", "--profile", killOnForkProfile(t, dir)}, qemu, args...)
	}
	outPath := filepath.Join(dir, "stderr.txt")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+implant, "KFV_IMPLANT_MAIN=1")
	stderr := func() string {
		b, _ := os.ReadFile(outPath)
		l, _ := os.ReadFile(qemuLog)
		return string(b) + string(l)
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v (want exit 0 once the daemon is ready)\n%s", argv[0], err, stderr())
	}
	daemon := readPidfile(t, pidfile)
	t.Cleanup(func() { syscall.Kill(daemon, syscall.SIGKILL) })
	done := "KFV-RESULT workload=" + guest.WorkloadTrigger
	if !waitFor(4*time.Minute, func() bool {
		b, _ := os.ReadFile(serial)
		return strings.Contains(string(b), done) || !alive(daemon)
	}) {
		b, _ := os.ReadFile(serial)
		t.Fatalf("no %q on the console within 4 minutes\nconsole:\n%s\nstderr:\n%s", done, lastLines(string(b), 30), stderr())
	}
	var r implantReport
	waitFor(10*time.Second, func() bool {
		r = parseImplant(stderr(), payload)
		return r.Result != ""
	})
	if len(r.Loaded) == 0 {
		t.Fatalf("the implant did not load into QEMU, so this run proves nothing\nstderr:\n%s", stderr())
	}
	// Killed on the refused fork, the implant may not get to report.
	if r.Result == "" && mode != "kill" {
		t.Fatalf("the implant reported no result for %s\nstderr:\n%s", payload, stderr())
	}
	t.Logf("payload ran in thread %d %q of the daemon %d: result=%s detail=%s", r.TID, r.Thread, daemon, r.Result, r.Detail)
	_, markerErr := os.Stat(marker)
	if mode == "bare" {
		if r.Result != "ok" || markerErr != nil {
			t.Fatalf("bare QEMU: the payload's fork and exec did not work (result=%s, marker: %v): the kfv run would prove nothing", r.Result, markerErr)
		}
		quitDaemon(t, sock, daemon)
		return
	}
	if markerErr == nil {
		t.Errorf("under kfv-run the payload's child ran: %s exists", marker)
	}
	if r.Result != "fail" && !(mode == "kill" && r.Result == "") {
		t.Errorf("under kfv-run the implant says result=%s, want fail: %s", r.Result, r.Detail)
	}
	if mode == "kill" {
		if !waitFor(20*time.Second, func() bool { return !alive(daemon) }) {
			t.Fatalf("the daemon %d is alive after the refused fork, want it killed", daemon)
		}
	} else {
		if !alive(daemon) {
			t.Fatalf("the daemon is gone after the refused fork, want it running\nstderr:\n%s", stderr())
		}
		quitDaemon(t, sock, daemon)
	}
	// The supervisor ends with the daemon.
	time.Sleep(500 * time.Millisecond)
	evs := readEvents(t, events)
	// The trigger's thread forks itself, or hands the fork to the main
	// thread, whose id is the daemon's pid.
	forker := r.TID
	if payload == "fork-exec-main" {
		forker = daemon
	}
	var hit *event.Event
	for i, e := range evs {
		if e.Kind == event.KindDecision && e.Verdict == "deny" && e.TID == forker && contains([]string{"clone", "clone3", "fork", "vfork"}, e.Syscall) {
			hit = &evs[i]
			break
		}
	}
	if hit == nil {
		t.Fatalf("no deny of the payload's fork (thread %d) in the event stream:\n%s", forker, dumpEvents(evs))
	}
	t.Logf("denied: %s pid=%d thread=%q rule=%s applied=%s args=%s", hit.Syscall, hit.PID, hit.Thread, hit.Rule, hit.Applied, hit.Args)
	if hit.Rule != "no-fork" || hit.Applied != "deny" || hit.PID != daemon {
		t.Errorf("the payload's fork: rule %q applied %q pid %d, want no-fork, deny, the daemon %d", hit.Rule, hit.Applied, hit.PID, daemon)
	}
	if mode == "kill" {
		killed, exit := false, ""
		for _, e := range evs {
			if e.Kind == event.KindReaction && e.Reaction == "kill" && e.PID == daemon {
				killed = true
			}
			if e.Kind == event.KindLifecycle && e.PID == daemon && strings.HasPrefix(e.Detail, "qemu exited") {
				exit = e.Detail
			}
		}
		if !killed {
			t.Errorf("no kill reaction on the daemon %d:\n%s", daemon, dumpEvents(evs))
		}
		if exit != "qemu exited with status 137" {
			t.Errorf("exit event of the daemon: %q, want status 137 (SIGKILL)", exit)
		}
	}
}

// quitDaemon quits QEMU over QMP and waits for the daemon to go.
func quitDaemon(t *testing.T, sock string, daemon int) {
	t.Helper()
	q := dialQMP(t, sock, 20*time.Second)
	q.exec("quit", nil)
	if !waitFor(30*time.Second, func() bool { return !alive(daemon) }) {
		t.Fatalf("the daemon %d did not quit", daemon)
	}
}

// TestEmulatorDaemonize runs -daemonize -pidfile through the emulator
// link kfv-qemu-system-x86_64 (kfv as the manager's QEMU binary): the
// process started returns 0 once the daemon is ready, the pidfile names
// the daemon, the detached supervisor follows it (its calls are decided,
// no denial, no reaction) and exits once the daemon is gone.
func TestEmulatorDaemonize(t *testing.T) {
	needKfv(t)
	needQEMU(t)
	dir, link := emulatorLink(t)
	cfg, events := writeKfvConfig(t, dir, "")
	img := rawGuest(t, guest.RawOptions{Loop: true})
	sock := filepath.Join(dir, "qmp.sock")
	pidfile := filepath.Join(dir, "qemu.pid")
	serial := filepath.Join(dir, "serial.log")
	args := append(withSerialFile(guest.RawArgs(img, "tcg"), serial), "-name", "guest=dmz", "-daemonize", "-pidfile", pidfile,
		"-qmp", "unix:"+sock+",server=on,wait=off")
	cmd := exec.Command(link, args...)
	cmd.Env = append(os.Environ(), "KFV_CONFIG="+cfg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v, want exit 0 once the daemon is ready\n%s", link, err, out)
	}
	started := cmd.Process.Pid
	daemon := readPidfile(t, pidfile)
	t.Cleanup(func() { syscall.Kill(daemon, syscall.SIGKILL) })
	if daemon == started || !alive(daemon) {
		t.Fatalf("pidfile names %d (started %d, alive %v), want the running daemon", daemon, started, alive(daemon))
	}
	var spid int
	if !waitFor(5*time.Second, func() bool { spid = supervisorOf(daemon); return spid != 0 }) {
		t.Fatalf("no supervisor holds a pidfd of the daemon %d", daemon)
	}
	q := dialQMP(t, sock, 20*time.Second)
	if s := q.started(t); s != "running" {
		t.Fatalf("query-status: %s", s)
	}
	q.exec("quit", nil)
	if !waitFor(30*time.Second, func() bool { return !alive(daemon) }) {
		t.Fatalf("the daemon %d did not quit", daemon)
	}
	// The supervisor is a sibling of the process started (CLONE_PARENT):
	// this test's child.
	if ws := reap(t, spid, 20*time.Second); ws.ExitStatus() != 0 {
		t.Errorf("supervisor exited with %v, want 0", ws)
	}
	evs := readEvents(t, filepath.Join(events, "dmz.jsonl"))
	if d := denials(evs); len(d) > 0 {
		t.Errorf("%d denials in a benign -daemonize run:\n%s", len(d), dumpEvents(d))
	}
	fromDaemon, followed := 0, 0
	for _, e := range evs {
		switch {
		case e.Kind == event.KindReaction || e.Kind == event.KindError:
			t.Errorf("%s event in a benign run: %s %s", e.Kind, e.Reaction, e.Detail)
		case e.Kind == event.KindDecision && e.PID == daemon:
			fromDaemon++
		case e.Kind == event.KindLifecycle && strings.Contains(e.Detail, "QEMU forked (-daemonize)"):
			followed++
		}
	}
	if followed != 2 || fromDaemon == 0 {
		t.Errorf("%d follow events (want 2), %d decided calls of the daemon %d (want some)", followed, fromDaemon, daemon)
	}
	if !hasLifecycle(evs, fmt.Sprintf("QEMU's daemon %d exited", daemon)) || !hasLifecycle(evs, "no process uses the filter") {
		t.Errorf("events lack the daemon's end or the supervisor's:\n%s", dumpEvents(evs))
	}
}
