package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/guest"
)

// kfv as the emulator of a libvirt domain (docs/libvirt.md): the tests
// here run kfv-run under the name kfv-qemu-system-x86_64, first directly
// (process model, environment, fds, probes, supervisor death), then as
// the <emulator> of a real libvirt domain.

// emulatorLink puts kfv-run and the link kfv-qemu-system-x86_64 in a
// fresh directory every user can read and search (libvirt runs QEMU as
// libvirt-qemu), and returns the directory and the link.
func emulatorLink(t *testing.T) (dir, link string) {
	t.Helper()
	dir = worldDir(t, "kfv-emulator-")
	b, err := os.ReadFile(kfvRun)
	if err != nil {
		t.Fatalf("read kfv-run: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kfv-run"), b, 0o755); err != nil {
		t.Fatalf("copy kfv-run: %v", err)
	}
	link = filepath.Join(dir, "kfv-qemu-system-x86_64")
	if err := os.Symlink("kfv-run", link); err != nil {
		t.Fatalf("link: %v", err)
	}
	return dir, link
}

// worldDir makes a directory under the system temp dir with mode 0755,
// removed after the test.
func worldDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeKfvConfig writes a kfv.toml that sends events to DIR/events/VM.jsonl.
// When KFV_QEMU selects the QEMU under test, the file names it (qemu =);
// otherwise the emulator finds QEMU in PATH, as by default.
func writeKfvConfig(t *testing.T, dir, extra string) (cfg, events string) {
	t.Helper()
	events = filepath.Join(dir, "events")
	if err := os.Mkdir(events, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "kfv.toml")
	body := fmt.Sprintf("events = %q\n%s", events+"/{vm}.jsonl", extra)
	if os.Getenv(guest.QEMUEnv) != "" {
		body += fmt.Sprintf("qemu = %q\n", needQEMU(t))
	}
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, events
}

// supervisorOf finds the emulator-model supervisor that follows qemuPID:
// the process started as "kfv-supervisor __kfv_supervise" holding a pidfd
// of qemuPID. 0 if there is none.
func supervisorOf(qemuPID int) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		b, err := os.ReadFile(c)
		if err != nil || !bytes.HasPrefix(b, []byte("kfv-supervisor\x00__kfv_supervise\x00")) {
			continue
		}
		dir := filepath.Dir(c)
		infos, _ := filepath.Glob(dir + "/fdinfo/*")
		for _, fi := range infos {
			b, err := os.ReadFile(fi)
			if err == nil && regexp.MustCompile(`(?m)^Pid:\s+`+strconv.Itoa(qemuPID)+`$`).Match(b) {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				return pid
			}
		}
	}
	return 0
}

// procStat returns fields of /proc/PID/stat after the command name:
// state, ppid, pgrp, session...
func procStat(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("stat of %d: %v", pid, err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

func environOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("environ of %d: %v", pid, err)
	}
	var env []string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if len(kv) > 0 {
			env = append(env, string(kv))
		}
	}
	return env
}

// fdTargets maps a process's fd numbers to their targets.
func fdTargets(pid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n)); err == nil {
			out[n] = t
		}
	}
	return out
}

// sharedChannels lists the sockets and pipes QEMU (pid) and its
// supervisor (spid) both hold. Such a channel is one QEMU could use
// against its supervisor (the setup socketpair, the listener's passage,
// the manager's monitor socket the supervisor serves): none may survive
// QEMU's exec.
func sharedChannels(pid, spid int) []string {
	qemuFDs := fdTargets(pid)
	var out []string
	for n, target := range fdTargets(spid) {
		if !strings.HasPrefix(target, "socket:") && !strings.HasPrefix(target, "pipe:") {
			continue
		}
		for m, qt := range qemuFDs {
			if qt == target {
				out = append(out, fmt.Sprintf("QEMU's fd %d and the supervisor's fd %d are the same %s", m, n, target))
			}
		}
	}
	return out
}

// waitExec waits until pid runs the binary path (stage 1 and 2 are kfv).
func waitExec(t *testing.T, pid int, path string) {
	t.Helper()
	var exe string
	if !waitFor(20*time.Second, func() bool {
		exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return exe == path
	}) {
		t.Fatalf("process %d runs %q, want %s", pid, exe, path)
	}
}

// reap waits for a process the test is the parent of but did not start
// through os/exec (the supervisor: CLONE_PARENT makes it a sibling of
// QEMU, so a child of whoever started QEMU).
func reap(t *testing.T, pid int, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err != nil {
			t.Fatalf("wait for %d: %v", pid, err)
		}
		if got == pid {
			return ws
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still running after %v", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEmulatorProcessModel runs a VM through kfv-qemu-system-x86_64 as
// libvirt would and checks the contract of the emulator model: QEMU is
// the process that was started (same pid), with exactly the caller's
// environment and fds; the supervisor is detached (own session, not
// QEMU's child), runs with an environment of its own and none of the
// caller's fds, and exits once QEMU is gone.
func TestEmulatorProcessModel(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	dir, link := emulatorLink(t)
	cfg, events := writeKfvConfig(t, dir, "")
	img := rawGuest(t, guest.RawOptions{Loop: true})
	sock := filepath.Join(dir, "qmp.sock")
	args := append(guest.RawArgs(img, "tcg"), "-name", "guest=model", "-qmp", "unix:"+sock+",server=on,wait=off")

	// Environment meant for QEMU that would steer a Go program.
	env := append(os.Environ(), "KFV_CONFIG="+cfg, "GODEBUG=gctrace=1,madvdontneed=0", "GOTRACEBACK=crash", "GOMAXPROCS=1", "KFV_TEST_MARK=for-qemu")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(link, args...)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{pw} // fd 3, like a tap fd libvirt hands over
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	pid := cmd.Process.Pid
	waitExec(t, pid, qemu)

	if got := environOf(t, pid); strings.Join(got, "\n") != strings.Join(env, "\n") {
		t.Errorf("QEMU's environment differs from the caller's:\n got %q\nwant %q", got, env)
	}
	pipeTarget, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", pr.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if got := fdTargets(pid)[3]; got != pipeTarget {
		t.Errorf("QEMU's fd 3 is %q, want the caller's %q", got, pipeTarget)
	}

	var spid int
	if !waitFor(5*time.Second, func() bool { spid = supervisorOf(pid); return spid != 0 }) {
		t.Fatalf("no supervisor holds a pidfd of QEMU %d", pid)
	}
	st := procStat(t, spid)
	if ppid, _ := strconv.Atoi(st[1]); ppid == pid {
		t.Errorf("supervisor %d is QEMU's child", spid)
	}
	if st[3] != strconv.Itoa(spid) || st[2] != strconv.Itoa(spid) {
		t.Errorf("supervisor %d: process group %s, session %s; want its own", spid, st[2], st[3])
	}
	for _, kv := range environOf(t, spid) {
		if strings.HasPrefix(kv, "GO") || strings.HasPrefix(kv, "KFV_") || strings.HasPrefix(kv, "LD_") {
			t.Errorf("supervisor's environment has %q", kv)
		}
	}
	qemuFDs := fdTargets(pid)
	for n, target := range fdTargets(spid) {
		if target == pipeTarget {
			t.Errorf("supervisor holds the caller's fd (its fd %d)", n)
		}
	}
	for _, c := range sharedChannels(pid, spid) {
		t.Error(c)
	}
	for n, target := range qemuFDs {
		if strings.Contains(target, "seccomp") || strings.Contains(target, "memfd:kfv") {
			t.Errorf("QEMU holds fd %d -> %s", n, target)
		}
	}

	q := dialQMP(t, sock, 10*time.Second)
	if s := q.started(t); s != "running" {
		t.Errorf("query-status: %s", s)
	}
	if _, err := q.exec("quit", nil); err != nil && !errors.Is(err, io.EOF) {
		t.Logf("quit: %v", err)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("QEMU exited with %v, want 0\nstderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("QEMU did not quit")
	}
	if ws := reap(t, spid, 10*time.Second); ws.ExitStatus() != 0 {
		t.Errorf("supervisor exited with %v, want 0", ws)
	}
	// The QMP monitor is served by the supervisor, on the path stage 2
	// bound; like QEMU with its own sockets, it removes the path at the
	// end.
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("the QMP socket %s is left behind", sock)
	}

	evs := readEvents(t, filepath.Join(events, "model.jsonl"))
	if !hasLifecycle(evs, "exec "+qemu) || !hasLifecycle(evs, "no process uses the filter") {
		t.Errorf("events lack QEMU's exec or the supervisor's end:\n%s", dumpEvents(evs))
	}
	for _, e := range evs {
		if e.PID != pid && e.Kind == event.KindLifecycle {
			t.Errorf("lifecycle event for pid %d, want QEMU's %d: %s", e.PID, pid, e.Detail)
		}
	}
	if d := denials(evs); len(d) > 0 {
		t.Errorf("%d denials running a benign guest:\n%s", len(d), dumpEvents(d))
	}
}

// TestEmulatorProbe: libvirt's probes reach the real QEMU untouched and
// start no supervisor (no event stream appears).
func TestEmulatorProbe(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	dir, link := emulatorLink(t)
	cfg, events := writeKfvConfig(t, dir, "")
	for _, args := range [][]string{
		{"-version"},
		{"-machine", "none", "-device", "help"},
		{"-machine", "q35", "-cpu", "help"},
	} {
		run := func(bin string) string {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "KFV_CONFIG="+cfg)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %q: %v\n%s", bin, args, err, out)
			}
			return string(out)
		}
		if plain, kfv := run(qemu), run(link); plain != kfv {
			t.Errorf("%q: kfv's output differs from QEMU's:\n%s\n---\n%s", args, kfv, plain)
		}
	}
	if ents, _ := os.ReadDir(events); len(ents) > 0 {
		t.Errorf("a probe started a supervisor: %s has %v", events, ents)
	}
}

// TestEmulatorBadInput: a bad configuration or an event directory kfv
// cannot write to stops kfv before QEMU runs, with exit status 125 and
// one line saying what and where.
func TestEmulatorBadInput(t *testing.T) {
	needKfv(t)
	needQEMU(t)
	dir, link := emulatorLink(t)
	img := rawGuest(t, guest.RawOptions{ExitCode: 3})
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("mode = \"permissive\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noDir := filepath.Join(dir, "nodir.toml")
	if err := os.WriteFile(noDir, []byte("events = \"/nonexistent/kfv/{vm}.jsonl\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ cfg, want string }{
		{bad, `mode "permissive"`},
		{noDir, "/nonexistent/kfv/qemu.jsonl"},
		{filepath.Join(dir, "missing.toml"), "missing.toml"},
	} {
		cmd := exec.Command(link, guest.RawArgs(img, "tcg")...)
		cmd.Env = append(os.Environ(), "KFV_CONFIG="+tt.cfg)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(string(out), tt.want) || !strings.HasPrefix(string(out), "kfv: ") {
			t.Errorf("config %s: %v, output %q; want exit 125 and a 'kfv:' line naming %q", tt.cfg, err, out, tt.want)
		}
	}
}

// TestEmulatorSupervisorDeath: "migrate" to an exec: URI makes QEMU
// fork a shell that creates a marker. Bare, the marker appears (the
// payload works). Under kfv-qemu-system-x86_64 with its supervisor
// killed, the calls kfv would have inspected fail (ENOSYS) instead of
// passing: no marker, while the VM goes on running, confined by the
// kernel filter (the guest keeps printing on its serial port).
//
// The command goes over an HMP monitor, which kfv does not proxy, on a
// connection opened before the supervisor dies: QMP monitors are served
// by the supervisor and die with it, and the built-in profile inspects
// sendmsg, so a dead supervisor also fails QEMU's greeting on a new
// connection. Under libvirt that means a dead supervisor costs the domain
// its monitor (docs/libvirt.md).
func TestEmulatorSupervisorDeath(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	dir, link := emulatorLink(t)
	cfg, _ := writeKfvConfig(t, dir, "")
	img := rawGuest(t, guest.RawOptions{Loop: true})
	for _, supervised := range []bool{false, true} {
		name := map[bool]string{false: "bare", true: "kfv-supervisor-killed"}[supervised]
		t.Run(name, func(t *testing.T) {
			marker := filepath.Join(dir, name+".marker")
			sock := filepath.Join(dir, name+".sock")
			bin := qemu
			if supervised {
				bin = link
			}
			argv := append([]string{bin}, guest.RawArgs(img, "tcg")...)
			argv = append(argv, "-monitor", "unix:"+sock+",server=on,wait=off")
			t.Setenv("KFV_CONFIG", cfg)
			p := start(t, argv)
			var c net.Conn
			var err error
			if !waitFor(20*time.Second, func() bool { c, err = net.Dial("unix", sock); return err == nil }) {
				t.Fatalf("HMP monitor: %v", err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				t.Fatalf("HMP greeting: %v", err)
			}
			// The guest runs once kfv's monitor has answered (held start):
			// the supervisor dies after that, with the VM running.
			if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
				t.Fatalf("the guest never ran\nstderr:\n%s", p.stderr)
			}
			if supervised {
				spid := supervisorOf(p.cmd.Process.Pid)
				if spid == 0 {
					t.Fatal("no supervisor follows QEMU")
				}
				if err := syscall.Kill(spid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				reap(t, spid, 10*time.Second)
			}
			ticks := strings.Count(p.stdout.String(), "tick")
			if _, err := c.Write([]byte(`migrate "exec:touch ` + marker + `"` + "\n")); err != nil {
				t.Fatalf("send migrate: %v", err)
			}
			time.Sleep(3 * time.Second)
			_, statErr := os.Stat(marker)
			switch {
			case !supervised && statErr != nil:
				t.Fatalf("bare QEMU did not run the migrate exec: command (%v): the payload does not work, so the kfv case proves nothing", statErr)
			case supervised && statErr == nil:
				t.Fatal("with its supervisor dead, QEMU still ran a shell: inspected calls passed instead of failing")
			}
			select {
			case <-p.done:
				t.Fatalf("QEMU exited (%v); want the VM still running\nstderr:\n%s", p.err, p.stderr)
			default:
			}
			if now := strings.Count(p.stdout.String(), "tick"); now <= ticks {
				t.Errorf("the guest printed no tick in 3 s after the attempt (%d before, %d after): the VM is not running", ticks, now)
			}
		})
	}
}

// libvirt -----------------------------------------------------------------

const reaperEnv = "KFV_TEST_LIBVIRT_REAPER"

func init() {
	// The test binary re-executed as the libvirt daemons' reaper (see
	// startLibvirt).
	if os.Getenv(reaperEnv) == "1" {
		os.Exit(reaperMain())
	}
}

// reaperMain becomes a child subreaper, starts virtlogd, virtlockd and
// libvirtd (each daemonizes and is reparented here), says "ready", reaps
// every orphan until SIGTERM, then stops its children by pid.
//
// libvirt daemonizes QEMU too, so QEMU's parent is whoever reaps
// orphans. Without a reaping init (this machine's PID 1 reaps nothing) a
// QEMU that exits stays a zombie: libvirt's kill(pid, 0) then believes
// it still runs, and the seccomp filter keeps a user until the zombie is
// reaped, so kfv's supervisor would never see the end.
func reaperMain() int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Println("prctl(PR_SET_CHILD_SUBREAPER):", err)
		return 1
	}
	for _, d := range []string{"virtlogd", "virtlockd", "libvirtd"} {
		out, err := exec.Command(d, "-d").CombinedOutput()
		if err != nil {
			fmt.Printf("%s -d: %v: %s\n", d, err, bytes.TrimSpace(out))
			return 1
		}
	}
	fmt.Println("ready")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case <-term:
			return stopChildren()
		case <-time.After(100 * time.Millisecond):
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
		}
	}
}

// stopChildren sends SIGTERM to every child (the daemons, and anything
// they left behind), waits up to 10 s, then SIGKILLs what remains.
func stopChildren() int {
	kids := func() []int {
		var pids []int
		tasks, _ := filepath.Glob("/proc/self/task/*/children")
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for _, s := range strings.Fields(string(b)) {
				if p, err := strconv.Atoi(s); err == nil {
					pids = append(pids, p)
				}
			}
		}
		return pids
	}
	for _, p := range kids() {
		syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); errors.Is(err, syscall.ECHILD) {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range kids() {
		syscall.Kill(p, syscall.SIGKILL)
	}
	return 0
}

// needLibvirt makes libvirt's system daemons available for the test, or
// skips with the reason: installs libvirt-daemon-system and
// libvirt-clients when missing (as root), and starts virtlogd, virtlockd
// and libvirtd under a reaper unless a libvirtd already answers; those it
// started are stopped (by pid) when the test ends.
func needLibvirt(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("libvirt tests need root (to install libvirt and start libvirtd): run 'sudo make integration'")
	}
	if testing.Short() {
		t.Skip("libvirt tests boot a Linux guest under libvirt: skipped with -short")
	}
	if _, err := exec.LookPath("libvirtd"); err != nil {
		out, err := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "libvirt-daemon-system", "libvirt-clients").CombinedOutput()
		if err != nil {
			if out2, err2 := exec.Command("apt-get", "update").CombinedOutput(); err2 != nil {
				t.Fatalf("apt-get update: %v\n%s", err2, out2)
			}
			out, err = exec.Command("apt-get", "install", "-y", "--no-install-recommends", "libvirt-daemon-system", "libvirt-clients").CombinedOutput()
		}
		if err != nil {
			t.Fatalf("install libvirt (apt-get install libvirt-daemon-system libvirt-clients): %v\n%s", err, out)
		}
	}
	lockLibvirt(t)
	if err := exec.Command("virsh", "-c", "qemu:///system", "version").Run(); err == nil {
		if os.Getenv(guest.QEMUEnv) != "" {
			// Its capability probes run the kfv link with its own
			// environment, so the link would probe the QEMU in that
			// libvirtd's PATH, not the one under test.
			t.Skipf("a libvirtd of the host's own runs: its probes of the kfv emulator would find the QEMU in its PATH, not %s=%s; stop it to run the libvirt tests on that QEMU", guest.QEMUEnv, os.Getenv(guest.QEMUEnv))
		}
		return // a libvirtd of the host's own
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := exec.Command(self, "-test.run=^$")
	r.Env = append(os.Environ(), reaperEnv+"=1")
	if os.Getenv(guest.QEMUEnv) != "" {
		// libvirtd passes its PATH to the QEMU it probes and starts; the
		// kfv emulator, probed under libvirtd's environment (no
		// KFV_CONFIG), finds QEMU there. A directory first in that PATH
		// holds qemu-system-x86_64, a link to the QEMU under test.
		bin := worldDir(t, "kfv-qemu-path-")
		if err := os.Symlink(needQEMU(t), filepath.Join(bin, "qemu-system-x86_64")); err != nil {
			t.Fatal(err)
		}
		r.Env = append(r.Env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	stdout, err := r.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Stderr = os.Stderr
	if err := r.Start(); err != nil {
		t.Fatalf("start libvirt daemons: %v", err)
	}
	rdone := make(chan struct{})
	go func() { r.Wait(); close(rdone) }()
	t.Cleanup(func() {
		r.Process.Signal(syscall.SIGTERM)
		select {
		case <-rdone:
		case <-time.After(20 * time.Second):
			r.Process.Kill()
			<-rdone
		}
	})
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("libvirt cannot run here: starting its daemons failed: %s", strings.TrimSpace(line))
	}
	if !waitFor(20*time.Second, func() bool { return exec.Command("virsh", "-c", "qemu:///system", "version").Run() == nil }) {
		t.Fatal("libvirt cannot run here: libvirtd started but 'virsh -c qemu:///system version' never answered")
	}
}

// libvirtLock serializes the libvirt tests of test processes that run at
// once (make integration runs the suites on two QEMUs side by side):
// each test starts and stops libvirt's daemons, which are the host's one
// libvirtd, and the kfv link's probes find QEMU in that libvirtd's PATH.
const libvirtLock = "/run/lock/kfv-integration-libvirt.lock"

// lockLibvirt holds libvirtLock until the test and its cleanups (the
// daemons stopped, the domains gone) are done.
func lockLibvirt(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(libvirtLock, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("libvirt tests' lock: %v", err)
	}
	start := time.Now()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("libvirt tests' lock %s: %v", libvirtLock, err)
	}
	if w := time.Since(start); w > time.Second {
		t.Logf("waited %v for %s (another test process's libvirt test)", w.Round(time.Second), libvirtLock)
	}
	t.Cleanup(func() { f.Close() })
}

func virsh(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func mustVirsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := virsh(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLibvirtDomainCapabilities: libvirt's capabilities for the kfv
// emulator equal those for plain qemu-system-x86_64, the emulator's own
// path aside.
func TestLibvirtDomainCapabilities(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	needLibvirt(t)
	_, link := emulatorLink(t)
	plain := mustVirsh(t, "domcapabilities", "--emulatorbin", qemu, "--virttype", "qemu")
	kfv := mustVirsh(t, "domcapabilities", "--emulatorbin", link, "--virttype", "qemu")
	plain = strings.Replace(plain, "<path>"+qemu+"</path>", "<path>EMULATOR</path>", 1)
	kfv = strings.Replace(kfv, "<path>"+link+"</path>", "<path>EMULATOR</path>", 1)
	if plain != kfv {
		t.Errorf("domcapabilities differ:\nkfv:\n%s\nplain:\n%s", kfv, plain)
	}
	if !strings.Contains(kfv, "<path>EMULATOR</path>") {
		t.Errorf("domcapabilities for kfv do not name the kfv link:\n%s", kfv)
	}
}

const domainXML = `<domain type='{{TYPE}}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{{NAME}}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{{DIR}}/vmlinux</kernel>
    <initrd>{{DIR}}/initrd.gz</initrd>
    <cmdline>{{CMDLINE}}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='{{CPU}}'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{{EMULATOR}}</emulator>
{{DEVICES}}    <serial type='file'>
      <source path='{{CONSOLE}}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:env name='KFV_CONFIG' value='{{DIR}}/kfv.toml'/>
{{ENV}}  </qemu:commandline>
</domain>
`

// libvirtHost is the host side of a libvirt domain test: libvirt's
// daemons, the kfv link, the Linux guest's kernel and initrd, a kfv.toml
// in enforce mode with the built-in profile and its event directory
// (writable by libvirt's QEMU user), all in one directory that user can
// read.
type libvirtHost struct {
	qemu    string // the real qemu-system-x86_64
	dir     string
	link    string // the kfv emulator link
	events  string // kfv's event directory: EVENTS/NAME.jsonl
	uid     int    // libvirt's QEMU user (libvirt-qemu)
	domType string // qemu (TCG) or kvm
	cpu     string
}

// newLibvirtHost prepares a libvirtHost, or skips with the reason.
func newLibvirtHost(t *testing.T) *libvirtHost {
	t.Helper()
	needKfv(t)
	h := &libvirtHost{qemu: needQEMU(t), domType: "qemu", cpu: "maximum"}
	accel, err := guest.LinuxAccel()
	if err != nil {
		t.Fatal(err)
	}
	if accel == "kvm" {
		if p := kvmProblem(); p != "" {
			t.Skip(p)
		}
	}
	l, err := guest.BuildLinux(guestDir)
	if err != nil {
		if errors.Is(err, guest.ErrNeedRoot) {
			t.Skip(err)
		}
		t.Fatalf("build Linux guest: %v", err)
	}
	needLibvirt(t)
	qemuUser, err := user.Lookup("libvirt-qemu")
	if err != nil {
		t.Fatalf("libvirt's QEMU user: %v", err)
	}
	if h.uid, err = strconv.Atoi(qemuUser.Uid); err != nil {
		t.Fatalf("libvirt's QEMU user: uid %q: %v", qemuUser.Uid, err)
	}

	h.dir, h.link = emulatorLink(t)
	for _, f := range [][2]string{{l.Kernel, "vmlinux"}, {l.Initrd, "initrd.gz"}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.dir, f[1]), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, h.events = writeKfvConfig(t, h.dir, "mode = \"enforce\"\n")
	if err := os.Chown(h.events, h.uid, -1); err != nil {
		t.Fatal(err)
	}
	if accel == "kvm" {
		h.domType, h.cpu = "kvm", "host-passthrough"
		// As udev would set it: libvirt's QEMU user is in group kvm.
		if err := exec.Command("sh", "-c", "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm").Run(); err != nil {
			t.Fatalf("give group kvm /dev/kvm: %v", err)
		}
	}
	return h
}

// libvirtDomain is one domain defined by a test.
type libvirtDomain struct {
	name     string
	emulator string // the kfv link, or plain QEMU for a bare run
	cmdline  string // the guest kernel's command line
	devices  string // XML of extra <devices> children, indented by 4
	env      string // XML of extra <qemu:env/> elements, indented by 4
	console  string // the serial console's file (set by define)
}

// define defines d with libvirt; the domain is destroyed and undefined
// when the test ends.
func (h *libvirtHost) define(t *testing.T, d *libvirtDomain) {
	t.Helper()
	d.console = filepath.Join(h.dir, d.name+".console.log")
	xml := strings.NewReplacer("{{TYPE}}", h.domType, "{{NAME}}", d.name, "{{DIR}}", h.dir, "{{CPU}}", h.cpu,
		"{{EMULATOR}}", d.emulator, "{{CMDLINE}}", d.cmdline, "{{CONSOLE}}", d.console,
		"{{DEVICES}}", d.devices, "{{ENV}}", d.env).Replace(domainXML)
	xmlPath := filepath.Join(h.dir, d.name+".xml")
	if err := os.WriteFile(xmlPath, []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	mustVirsh(t, "define", xmlPath)
	t.Cleanup(func() {
		virsh(t, "destroy", d.name)
		virsh(t, "undefine", d.name)
	})
}

// boot starts the domain and returns QEMU's pid as libvirt recorded it,
// once the guest has reached /init. That pid must run the real QEMU as
// libvirt's QEMU user, whichever the emulator.
func (h *libvirtHost) boot(t *testing.T, d *libvirtDomain) int {
	t.Helper()
	os.Remove(d.console)
	mustVirsh(t, "start", d.name)
	pidFile := "/run/libvirt/qemu/" + d.name + ".pid"
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("libvirt's pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("libvirt's pid file %s: %q", pidFile, b)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != h.qemu {
		t.Errorf("libvirt's pid %d runs %q, want QEMU itself (%s)", pid, exe, h.qemu)
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok && int(s.Uid) != h.uid {
			t.Errorf("QEMU runs as uid %d, want libvirt-qemu (%d)", s.Uid, h.uid)
		}
	}
	if !waitFor(90*time.Second, func() bool {
		b, _ := os.ReadFile(d.console)
		return bytes.Contains(b, []byte("KFV-BOOTED"))
	}) {
		b, _ := os.ReadFile(d.console)
		t.Fatalf("the guest did not reach /init within 90 s; console:\n%s", b)
	}
	return pid
}

// libvirtGone checks that neither QEMU nor a supervisor following it
// (spid, 0 for none) is left.
func libvirtGone(t *testing.T, pid, spid int) {
	t.Helper()
	if !waitFor(20*time.Second, func() bool { return !alive(pid) && (spid == 0 || !alive(spid)) }) {
		t.Errorf("left behind: QEMU %d alive=%v, supervisor %d alive=%v", pid, alive(pid), spid, alive(spid))
	}
}

// TestLibvirtDomain defines a domain whose <emulator> is the kfv link and
// boots the project's Linux guest in it (TCG here, KFV_LINUX_ACCEL=kvm for
// a type='kvm' domain). libvirt starts QEMU as its unprivileged user;
// the guest's workload must report success on its serial console, virsh
// shutdown must end the domain cleanly, the pid libvirt recorded must be
// QEMU itself, kfv's event stream for the VM must exist (written as
// libvirt's QEMU user), and no kfv process may outlive the domain. A
// second start ends with virsh destroy, which must leave nothing behind
// either.
func TestLibvirtDomain(t *testing.T) {
	h := newLibvirtHost(t)
	d := &libvirtDomain{
		name:     fmt.Sprintf("kfv-test-%d", os.Getpid()),
		emulator: h.link,
		cmdline:  guest.LinuxCmdline(guest.WorkloadIdle, "kfv.seconds=6"),
	}
	h.define(t, d)
	eventsFile := filepath.Join(h.events, d.name+".jsonl")

	t.Run("shutdown", func(t *testing.T) {
		pid := h.boot(t, d)
		spid := supervisorOf(pid)
		if spid == 0 {
			t.Error("no kfv supervisor follows QEMU")
		}
		// The emulator model's supervisor (libvirt's QEMU user) answers
		// kfv-run status and applies a reload of its unchanged profile.
		if out, err := exec.Command(kfvRun, "status").CombinedOutput(); err != nil || !strings.Contains(string(out), d.name) {
			t.Errorf("kfv-run status: %v, want the domain %s listed:\n%s", err, d.name, out)
		}
		if out, err := exec.Command(kfvRun, "reload", strconv.Itoa(pid)).CombinedOutput(); err != nil || !strings.Contains(string(out), "applied to the running VM") {
			t.Errorf("kfv-run reload %d (the domain's QEMU): %v: %s", pid, err, out)
		}
		// The guest's init (a busybox shell script, no acpid) ignores
		// the ACPI power button virsh shutdown presses; its workload
		// powers the guest off a few seconds later, which is the clean
		// end libvirt must see.
		mustVirsh(t, "shutdown", d.name)
		var state string
		if !waitFor(90*time.Second, func() bool {
			state, _ = virsh(t, "domstate", d.name, "--reason")
			return strings.HasPrefix(strings.TrimSpace(state), "shut off")
		}) {
			t.Fatalf("domain state %q after 90 s, want shut off", strings.TrimSpace(state))
		}
		if s := strings.TrimSpace(state); s != "shut off (shutdown)" {
			t.Errorf("domain state %q, want 'shut off (shutdown)'", s)
		}
		b, _ := os.ReadFile(d.console)
		m, err := guest.ParseMarkers(b)
		if err != nil || m.Status != "ok" || !m.Done {
			t.Errorf("guest did not report success (%v, %+v); console:\n%s", err, m, b)
		}
		libvirtGone(t, pid, spid)
		checkLibvirtEvents(t, eventsFile, pid, h.uid, h.qemu)
	})

	t.Run("destroy", func(t *testing.T) {
		pid := h.boot(t, d)
		spid := supervisorOf(pid)
		if spid == 0 {
			t.Error("no kfv supervisor follows QEMU")
		}
		mustVirsh(t, "destroy", d.name)
		if s, _ := virsh(t, "domstate", d.name, "--reason"); strings.TrimSpace(s) != "shut off (destroyed)" {
			t.Errorf("domain state %q, want 'shut off (destroyed)'", strings.TrimSpace(s))
		}
		libvirtGone(t, pid, spid)
	})
}

// TestLibvirtHotplug: a disk attached by path with virsh attach-disk
// reaches QEMU as blockdev-add over libvirt's monitor, which kfv serves
// (QEMU listens on a private path): kfv admits the image before QEMU
// opens it, so the attach succeeds with no denial, and the event stream
// says what was admitted. Detaching works too, and QEMU and its
// supervisor share no socket (libvirt's monitor is the supervisor's).
// Last, the supervisor is killed: libvirt loses its monitor and must end
// the domain as crashed.
func TestLibvirtHotplug(t *testing.T) {
	h := newLibvirtHost(t)
	d := &libvirtDomain{
		name:     fmt.Sprintf("kfv-hotplug-%d", os.Getpid()),
		emulator: h.link,
		cmdline:  guest.LinuxCmdline(guest.WorkloadIdle, "kfv.seconds=120"),
	}
	h.define(t, d)
	spare := filepath.Join(h.dir, "spare.img")
	if err := os.WriteFile(spare, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := h.boot(t, d)
	spid := supervisorOf(pid)
	if spid == 0 {
		t.Fatal("no kfv supervisor follows QEMU")
	}
	for _, c := range sharedChannels(pid, spid) {
		t.Error(c) // libvirt's monitor socket is the supervisor's alone
	}
	if out, err := virsh(t, "attach-disk", d.name, spare, "vdb", "--targetbus", "virtio", "--live"); err != nil {
		t.Fatalf("virsh attach-disk %s: %v\n%s", spare, err, out)
	}
	if out := mustVirsh(t, "domblklist", d.name); !strings.Contains(out, spare) {
		t.Errorf("domblklist does not list %s after the attach:\n%s", spare, out)
	}
	if out, err := virsh(t, "detach-disk", d.name, "vdb", "--live"); err != nil {
		t.Errorf("virsh detach-disk: %v\n%s", err, out)
	}
	// The supervisor serves libvirt's monitor: when it dies, libvirt
	// sees its monitor close, as when QEMU dies, stops QEMU and applies
	// the domain's crash policy. No QEMU runs on unmanaged.
	if err := syscall.Kill(spid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var state string
	if !waitFor(30*time.Second, func() bool {
		state, _ = virsh(t, "domstate", d.name, "--reason")
		return strings.HasPrefix(strings.TrimSpace(state), "shut off") && !alive(pid)
	}) {
		t.Errorf("30 s after its supervisor died: domain state %q, QEMU %d alive %v; want shut off (crashed), QEMU gone", strings.TrimSpace(state), pid, alive(pid))
	} else if s := strings.TrimSpace(state); s != "shut off (crashed)" {
		t.Errorf("after its supervisor died the domain is %q, want 'shut off (crashed)'", s)
	}

	evs := readKilledEvents(t, filepath.Join(h.events, d.name+".jsonl"))
	admitted := false
	for _, e := range evs {
		if e.Source == "qmp" && e.Rule == "qmp:admit" && strings.Contains(e.Detail, spare) {
			admitted = true
			t.Logf("L3: %s %s", e.Args, e.Detail)
		}
	}
	if !admitted {
		t.Errorf("no qmp:admit event names %s:\n%s", spare, dumpEvents(evs))
	}
	for _, e := range denials(evs) {
		if e.Rule != signalSenderRule {
			t.Errorf("denial under libvirt: %s %s rule=%s thread=%q", e.Syscall, e.Args, e.Rule, e.Thread)
		}
	}
}

// checkLibvirtEvents checks the VM's event stream: written by libvirt's
// QEMU user, QEMU's exec and the supervisor's end recorded for the pid
// libvirt knows, and no denial but the one the built-in profile makes by
// design under libvirt (docs/libvirt.md).
func checkLibvirtEvents(t *testing.T, path string, pid, uid int, qemu string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("kfv's event stream for the VM: %v", err)
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok && int(s.Uid) != uid {
		t.Errorf("event stream owned by uid %d, want libvirt-qemu (%d): kfv ran with other rights than QEMU", s.Uid, uid)
	}
	var evs []event.Event
	waitFor(10*time.Second, func() bool {
		evs = readEvents(t, path)
		return hasLifecycle(evs, "no process uses the filter")
	})
	var mine []event.Event
	for _, e := range evs {
		if e.PID == pid {
			mine = append(mine, e)
		}
	}
	if !hasLifecycle(mine, "exec "+qemu) || !hasLifecycle(mine, "no process uses the filter") {
		t.Errorf("events for QEMU %d lack its exec or the supervisor's end:\n%s", pid, dumpEvents(mine))
	}
	for _, d := range denials(mine) {
		if d.Rule == signalSenderRule {
			t.Logf("denied by design: %s %s (rule %s)", d.Syscall, d.Args, d.Rule)
			continue
		}
		t.Errorf("denial under libvirt: %s %s rule=%s thread=%q", d.Syscall, d.Args, d.Rule, d.Thread)
	}
}

// signalSenderRule is the built-in profile's rule that refuses QEMU the
// command line of the process that sent it SIGTERM (libvirtd, on every
// shutdown and destroy); QEMU then logs "<unknown process>".
const signalSenderRule = "no-peek-signal-sender"
