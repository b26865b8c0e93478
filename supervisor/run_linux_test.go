//go:build linux

package supervisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/profiles"
)

// TestMain lets the test binary act as kfv's loader, the way kfv-run
// re-executes itself.
func TestMain(m *testing.M) {
	if IsLoader() {
		LoaderMain()
	}
	if dir := os.Getenv(openMatrixEnv); dir != "" {
		runOpenMatrix(dir)
		os.Exit(0)
	}
	if dir := os.Getenv(listenRaceEnv); dir != "" {
		runListenRace(dir)
		os.Exit(0)
	}
	if dir := os.Getenv(netMatrixEnv); dir != "" {
		runNetMatrix(dir)
		os.Exit(0)
	}
	if dir := os.Getenv(ringMatrixEnv); dir != "" {
		runRingMatrix(dir)
		os.Exit(0)
	}
	if dir := os.Getenv("KFV_LANDLOCK_CHILD"); dir != "" {
		landlockChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// funcDecider adapts a function to orch.Decider.
type funcDecider func(*orch.Request) orch.Decision

func (f funcDecider) Decide(r *orch.Request) orch.Decision { return f(r) }

// allowProfile allows everything in the kernel except the named syscalls,
// which it inspects.
func inspectProfile(inspect ...string) *profiles.Profile {
	return &profiles.Profile{
		Name: "test", Source: "test",
		DefaultAction: profiles.ActAllow,
		Syscalls: []profiles.SyscallRule{
			{Names: inspect, Action: profiles.ActInspect, Reason: "test"},
		},
		DefaultVerdict: profiles.VerdictDeny, DefaultVerdictErrno: int(unix.EPERM),
	}
}

func runSupervised(t *testing.T, p *profiles.Profile, d orch.Decider, mode Mode, argv ...string) (int, []event.Event, error) {
	t.Helper()
	return runConfig(t, &Config{QEMU: argv[0], Args: argv[1:], Policy: &Policy{Profile: p, Decider: d}, Mode: mode, VM: "t", Landlock: LandlockOff})
}

// runSupervisedAs runs argv under a profile that allows everything in
// the kernel but opens, as r.
func runSupervisedAs(t *testing.T, r *RunAs, d orch.Decider, argv ...string) (int, []event.Event, error) {
	t.Helper()
	p := inspectProfile("openat")
	return runConfig(t, &Config{QEMU: argv[0], Args: argv[1:], Policy: &Policy{Profile: p, Decider: d}, Mode: Enforce, VM: "t", Landlock: LandlockOff, RunAs: r})
}

func runConfig(t *testing.T, cfg *Config) (int, []event.Event, error) {
	t.Helper()
	var buf bytes.Buffer
	ev := event.NewWriter(&buf)
	cfg.Events = ev
	// No Landlock wall: these programs (a shell, this test binary) run
	// under test profiles that let them make calls themselves, which the
	// wall would refuse; the wall is tested in landlock_linux_test.go,
	// and with QEMU by the integration suites.
	status, err := Run(cfg)
	if cerr := ev.Close(); cerr != nil {
		t.Fatal(cerr)
	}
	var evs []event.Event
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return status, evs, err
}

func TestRunExitStatus(t *testing.T) {
	allow := funcDecider(func(*orch.Request) orch.Decision { return orch.Decision{Action: profiles.VerdictAllow, Rule: "t"} })
	cases := []struct {
		name string
		argv []string
		want int
	}{
		{"zero", []string{"/bin/sh", "-c", "exit 0"}, 0},
		{"code", []string{"/bin/sh", "-c", "exit 42"}, 42},
		{"signal", []string{"/bin/sh", "-c", "kill -TERM $$"}, 128 + 15},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := runSupervised(t, inspectProfile("openat"), allow, Enforce, c.argv...)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("status %d, want %d", got, c.want)
			}
		})
	}
}

func TestRunNotFound(t *testing.T) {
	allow := funcDecider(func(*orch.Request) orch.Decision { return orch.Decision{Action: profiles.VerdictAllow} })
	got, _, err := runSupervised(t, inspectProfile("openat"), allow, Enforce, "/nonexistent/qemu")
	if got != 127 || err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("got status %d, err %v; want 127 and a not-found error", got, err)
	}
	dir := t.TempDir()
	noexec := filepath.Join(dir, "qemu")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _, err = runSupervised(t, inspectProfile("openat"), allow, Enforce, noexec)
	if got != 126 || err == nil {
		t.Errorf("got status %d, err %v; want 126", got, err)
	}
}

// TestRunDenyPath runs a real filter: the shell's open of a file is
// decided by the supervisor from the path it reads in the shell's memory.
func TestRunDenyPath(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := funcDecider(func(r *orch.Request) orch.Decision {
		if r.Path == secret {
			return orch.Decision{Action: profiles.VerdictDeny, Errno: int(unix.EACCES), Rule: "no-secret", Layer: orch.L2}
		}
		return orch.Decision{Action: profiles.VerdictAllow, Rule: "rest"}
	})
	for _, mode := range []Mode{Enforce, Audit} {
		t.Run(string(mode), func(t *testing.T) {
			out := filepath.Join(dir, "out-"+string(mode))
			status, evs, err := runSupervised(t, inspectProfile("openat"), d, mode,
				"/bin/sh", "-c", "cat "+secret+" > "+out)
			if err != nil {
				t.Fatal(err)
			}
			var denied *event.Event
			for i := range evs {
				if evs[i].Rule == "no-secret" {
					denied = &evs[i]
				}
			}
			if denied == nil {
				t.Fatalf("no event for the secret's open; events: %+v", evs)
			}
			if denied.Verdict != "deny" || denied.Syscall != "openat" || denied.Errno != "EACCES" || !strings.Contains(denied.Args, secret) {
				t.Errorf("event %+v", *denied)
			}
			got, _ := os.ReadFile(out)
			switch mode {
			case Enforce:
				if status == 0 || len(got) != 0 || denied.Applied != "deny" {
					t.Errorf("enforce: status %d, output %q, applied %q: the open was not denied", status, got, denied.Applied)
				}
			case Audit:
				if status != 0 || string(got) != "s3cret\n" || denied.Applied != "allow" {
					t.Errorf("audit: status %d, output %q, applied %q: the open was not allowed", status, got, denied.Applied)
				}
			}
		})
	}
}

// TestRunKeepsFDs checks that an fd open in kfv-run arrives at the same
// number in the supervised program, and that the listener does not.
func TestRunKeepsFDs(t *testing.T) {
	if len(inheritedFDs) > 0 {
		t.Logf("test binary inherited fds %v", inheritedFDs)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "in")
	if err := os.WriteFile(src, []byte("via-fd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Pretend kfv-run inherited this fd.
	saved := inheritedFDs
	inheritedFDs = append(append([]int(nil), saved...), int(f.Fd()))
	defer func() { inheritedFDs = saved }()
	fd := f.Fd()
	out := filepath.Join(dir, "out")
	allow := funcDecider(func(*orch.Request) orch.Decision { return orch.Decision{Action: profiles.VerdictAllow} })
	script := "cat <&" + strconv.Itoa(int(fd)) + " > " + out + "; ls -l /proc/$$/fd >> " + out
	status, _, err := runSupervised(t, inspectProfile("openat"), allow, Enforce, "/bin/sh", "-c", script)
	if err != nil || status != 0 {
		t.Fatalf("status %d err %v", status, err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "via-fd\n") {
		t.Errorf("fd %d did not reach the program: %q", fd, got)
	}
	if strings.Contains(string(got), "seccomp") {
		t.Errorf("the program holds a seccomp fd:\n%s", got)
	}
}

// TestLaunchWhateverTheProfileInspects: the launch handshake must not
// depend on any syscall being allowed in the kernel. With every call
// inspected, the program runs (each call answered by the supervisor);
// with every call denied, it fails fast instead of hanging.
func TestLaunchWhateverTheProfileInspects(t *testing.T) {
	everything := &profiles.Profile{Name: "all", Source: "all", DefaultAction: profiles.ActInspect, DefaultVerdict: profiles.VerdictDeny}
	var mu sync.Mutex
	seen := map[string]int{}
	allow := funcDecider(func(r *orch.Request) orch.Decision {
		mu.Lock()
		seen[r.Syscall]++
		mu.Unlock()
		return orch.Decision{Action: profiles.VerdictAllow, Rule: "all"}
	})
	status, _, err := runSupervised(t, everything, allow, Enforce, "/bin/sh", "-c", "exit 7")
	if err != nil || status != 7 {
		t.Fatalf("everything inspected: status %d err %v, want 7", status, err)
	}
	if seen["read"] == 0 || seen["mmap"] == 0 {
		t.Errorf("the supervisor did not see the program's calls: %v", seen)
	}
	deny := funcDecider(func(r *orch.Request) orch.Decision {
		return orch.Decision{Action: profiles.VerdictDeny, Errno: int(unix.EPERM), Rule: "none"}
	})
	status, _, err = runSupervised(t, everything, deny, Enforce, "/bin/sh", "-c", "exit 0")
	if err != nil || status == 0 {
		t.Fatalf("everything denied: status %d err %v, want a failure", status, err)
	}
}

func TestPausesOnShutdown(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"-m", "16"}, false},
		{[]string{"-no-shutdown"}, true},
		{[]string{"--no-shutdown"}, true},
		{[]string{"-action", "reboot=shutdown,shutdown=pause"}, true},
		{[]string{"--action", "shutdown=poweroff"}, false},
		{[]string{"-name", "shutdown=pause"}, false},
		{[]string{"-action"}, false},
	} {
		if got := pausesOnShutdown(c.args); got != c.want {
			t.Errorf("pausesOnShutdown(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
