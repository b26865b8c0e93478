package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/guest"
)

// What kfv leaves on the file system when it is killed. kfv's own
// monitor is a socket pair (nothing to leave); the sockets QEMU listens
// on for the monitors kfv proxies live in a directory per VM under
// kfv's runtime directory, locked by the process that serves them, and a
// directory whose lock nobody holds is removed by the next kfv that
// starts.

// kfvRuntimeDir is kfv's runtime directory as kfv picks it.
func kfvRuntimeDir() string {
	if os.Geteuid() == 0 {
		return "/run/kfv"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "kfv")
	}
	return filepath.Join(os.TempDir(), "kfv-"+strconv.Itoa(os.Geteuid()))
}

// kfvStaleAge is how old a directory nobody holds must be before the
// next kfv removes it (supervisor.staleAge).
const kfvStaleAge = 10 * time.Second

// kfvTempNames are the names kfv itself ever gave entries of the
// temporary directory and /dev/shm: private monitor directories of
// earlier versions (kfv-DIGITS) and checkpoints on file systems without
// O_TMPFILE. The tests' own directories (kfv-emulator-...) are not kfv's.
var kfvTempNames = regexp.MustCompile(`^kfv-([0-9]+|checkpoint-.*)$`)

// kfvTempEntries lists the entries of the temporary directory and
// /dev/shm that kfv made.
func kfvTempEntries() []string {
	var out []string
	for _, d := range []string{os.TempDir(), "/dev/shm"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if kfvTempNames.MatchString(e.Name()) {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out
}

// qemuKfvObjects reads, from QEMU's command line, kfv's private monitor
// (the fd of its chardev, which must be a connected socket, not a path)
// and the VM's directory under kfv's runtime directory ("" for none).
func qemuKfvObjects(t *testing.T, pid int) (monitorFD int, vmDir string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("QEMU's command line: %v", err)
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	rt := kfvRuntimeDir() + "/"
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "socket,id=kfv-monitor,fd="); ok && i > 0 && args[i-1] == "-chardev" {
			n, _, _ := strings.Cut(v, ",")
			monitorFD, _ = strconv.Atoi(n)
		}
		if j := strings.Index(a, rt); j >= 0 {
			rest := a[j+len(rt):]
			name, _, _ := strings.Cut(rest, "/")
			vmDir = rt + name
		}
		if strings.Contains(a, "qmp.sock") && strings.Contains(a, os.TempDir()+"/kfv-") {
			t.Errorf("QEMU's command line names a private monitor path: %q", a)
		}
	}
	if monitorFD <= 2 {
		t.Fatalf("QEMU's command line has no kfv-monitor chardev over an fd: %q", args)
	}
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, monitorFD))
	if err != nil || !strings.HasPrefix(target, "socket:[") {
		t.Fatalf("QEMU's fd %d (kfv's monitor) is %q, %v: want a socket", monitorFD, target, err)
	}
	return monitorFD, vmDir
}

// ageDir makes dir look older than kfvStaleAge, as after a real wait.
func ageDir(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-2 * kfvStaleAge)
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestKilledLeavesNothing: SIGKILL of kfv-run (standalone) and of the
// detached supervisor (emulator model) leaves no file or directory of
// kfv's, but the directory of a proxied monitor's socket, which the next
// kfv removes.
func TestKilledLeavesNothing(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	exitImg := rawGuest(t, guest.RawOptions{})
	before := kfvTempEntries()
	checkTemp := func(t *testing.T) {
		t.Helper()
		for _, e := range kfvTempEntries() {
			if !slices.Contains(before, e) {
				t.Errorf("kfv left %s", e)
			}
		}
	}
	// nextStart runs one short VM with a proxied monitor: the kfv that
	// removes what a killed one left.
	nextStart := func(t *testing.T) {
		t.Helper()
		dir := t.TempDir()
		p := start(t, kfvArgs(filepath.Join(dir, "ev"), nil, qemu, append(guest.RawArgs(exitImg, "tcg"), "-qmp", "unix:"+filepath.Join(dir, "q.sock")+",server=on,wait=off")...))
		if st := p.wait(t, 60*time.Second); st != guest.RawExitStatus(0) {
			t.Fatalf("the next start: exit %d\nstderr:\n%s", st, p.stderr)
		}
	}
	for _, proxied := range []bool{false, true} {
		name := map[bool]string{false: "standalone", true: "standalone-proxied-monitor"}[proxied]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			args := guest.RawArgs(img, "tcg")
			if proxied {
				args = append(args, "-qmp", "unix:"+filepath.Join(dir, "q.sock")+",server=on,wait=off")
			}
			p := start(t, kfvArgs(filepath.Join(dir, "ev"), nil, qemu, args...))
			if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
				t.Fatalf("the guest never ran (kfv's cont of the held guest goes through its monitor)\nstderr:\n%s", p.stderr)
			}
			qemuPID := childPID(t, p.cmd.Process.Pid)
			_, vmDir := qemuKfvObjects(t, qemuPID)
			if proxied != (vmDir != "") {
				t.Fatalf("VM directory %q with proxied monitor %v", vmDir, proxied)
			}
			if err := p.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			p.wait(t, 10*time.Second)
			if !waitFor(10*time.Second, func() bool { return !alive(qemuPID) }) {
				t.Fatalf("QEMU %d still running after kfv-run was killed", qemuPID)
			}
			checkTemp(t)
			if !proxied {
				return
			}
			if _, err := os.Stat(vmDir); err != nil {
				t.Logf("the VM's directory went with kfv-run: %v", err)
				return
			}
			ageDir(t, vmDir)
			nextStart(t)
			if _, err := os.Stat(vmDir); err == nil {
				t.Errorf("%s, left by the killed kfv-run, is still there after the next start", vmDir)
			}
		})
	}
	t.Run("emulator-supervisor", func(t *testing.T) {
		dir, link := emulatorLink(t)
		cfg, _ := writeKfvConfig(t, dir, "")
		t.Setenv("KFV_CONFIG", cfg)
		argv := append([]string{link}, guest.RawArgs(img, "tcg")...)
		argv = append(argv, "-qmp", "unix:"+filepath.Join(dir, "q.sock")+",server=on,wait=off")
		p := start(t, argv)
		if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
			t.Fatalf("the guest never ran\nstderr:\n%s", p.stderr)
		}
		pid := p.cmd.Process.Pid
		_, vmDir := qemuKfvObjects(t, pid)
		if vmDir == "" {
			t.Fatal("no VM directory for the proxied monitor")
		}
		spid := supervisorOf(pid)
		if spid == 0 {
			t.Fatal("no supervisor follows QEMU")
		}
		if err := syscall.Kill(spid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		reap(t, spid, 10*time.Second)
		checkTemp(t)
		// QEMU runs on without its supervisor; its monitor's directory
		// is nobody's now.
		ageDir(t, vmDir)
		nextStart(t)
		if _, err := os.Stat(vmDir); err == nil {
			t.Errorf("%s, left by the killed supervisor, is still there after the next start", vmDir)
		}
		p.cmd.Process.Kill()
		p.wait(t, 10*time.Second)
		checkTemp(t)
	})
}
