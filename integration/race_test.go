package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/profiles"
	"kfv/seccompnotify"
)

// The TOCTOU race tests (emulation instead of continue). The racer
// (integration/race/racer.c) rewrites a path or address buffer from one
// thread while another makes the call with it. Under kfv-run, whose
// supervisor emulates allowed opens and connects, no call may reach the
// forbidden object; under a naive supervisor that checks the buffer and
// answers CONTINUE (kept below as a test helper), some do, which shows the
// race is real on this machine.

const raceAttempts = 100000

// buildRacer compiles the racer once per source version into the guest
// cache.
func buildRacer(t *testing.T) string {
	t.Helper()
	src := filepath.Join(repoRoot, "integration", "race", "racer.c")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	out := filepath.Join(guestDir, "racer-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not in PATH: run 'make deps' (installs gcc)")
	}
	if err := os.MkdirAll(guestDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := out + ".tmp"
	if o, err := exec.Command("gcc", "-O2", "-pthread", "-Wall", "-o", tmp, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc racer.c: %v\n%s", err, o)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	return out
}

type raceResult struct{ attempts, allowed, forbidden, denied int }

func parseRace(t *testing.T, out string) raceResult {
	t.Helper()
	var r raceResult
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "attempts=%d allowed=%d forbidden=%d denied=%d", &r.attempts, &r.allowed, &r.forbidden, &r.denied); err != nil {
		t.Fatalf("racer output %q: %v", out, err)
	}
	return r
}

// raceFiles makes an allowed and a forbidden file with paths of equal
// length.
func raceFiles(t *testing.T) (allowed, forbidden string) {
	dir := t.TempDir()
	allowed, forbidden = filepath.Join(dir, "allowed"), filepath.Join(dir, "secret!")
	for p, c := range map[string]string{allowed: "allowed\n", forbidden: "secret\n"} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return allowed, forbidden
}

// raceListeners starts two TCP listeners that accept and drop
// connections.
func raceListeners(t *testing.T) (allowed, forbidden string) {
	var addrs []string
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs[0], addrs[1]
}

// raceProfile inspects openat and connect, allows only the allowed path
// or address, and lets everything else run in the kernel.
func raceProfile(t *testing.T, allowedPath, allowedAddr string) string {
	p := fmt.Sprintf(`name = "race"
[defaults]
action = "allow"
verdict = "deny"
verdict_errno = "EACCES"

[[syscall]]
names = ["open", "openat", "openat2", "creat", "connect", "sendto", "sendmsg", "sendmmsg"]
action = "inspect"
reason = "the calls the race targets"

[[syscall]]
names = ["open_by_handle_at"]
action = "deny"
reason = "an open around paths"

[[rule]]
name = "libraries"
syscalls = ["openat"]
paths = ["/etc/ld.so.cache", "/usr/lib/**", "/lib/**"]
verdict = "allow"
reason = "the racer's own start-up"

[[rule]]
name = "the-allowed-file"
syscalls = ["openat"]
paths = [%q]
verdict = "allow"
reason = "the allowed half of the race"

[[rule]]
name = "the-allowed-address"
syscalls = ["connect"]
addresses = [%q]
verdict = "allow"
reason = "the allowed half of the race"
`, allowedPath, allowedAddr)
	path := filepath.Join(t.TempDir(), "race.toml")
	if err := os.WriteFile(path, []byte(p), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRaceEmulated(t *testing.T) {
	needKfv(t)
	racer := buildRacer(t)
	allowedPath, forbiddenPath := raceFiles(t)
	allowedAddr, forbiddenAddr := raceListeners(t)
	profile := raceProfile(t, allowedPath, allowedAddr)
	for _, c := range []struct{ mode, allowed, forbidden string }{
		{"open", allowedPath, forbiddenPath},
		{"connect", allowedAddr, forbiddenAddr},
	} {
		t.Run(c.mode, func(t *testing.T) {
			events := filepath.Join(t.TempDir(), "events.jsonl")
			cmd := exec.Command(kfvRun, "--profile", profile, "--events", events, "--", racer, c.mode, c.allowed, strconv.Itoa(raceAttempts))
			cmd.Env = append(os.Environ(), "RACER_FORBIDDEN="+c.forbidden)
			start := time.Now()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("kfv-run racer: %v\n%s%s", err, out, stderr.String())
			}
			r := parseRace(t, string(out))
			t.Logf("under kfv-run: %+v in %v", r, time.Since(start).Round(time.Millisecond))
			if r.forbidden != 0 {
				t.Errorf("%d of %d %s calls reached the forbidden object under kfv-run", r.forbidden, r.attempts, c.mode)
			}
			if r.allowed == 0 || r.denied == 0 {
				t.Errorf("the race did not run both ways (allowed %d, denied %d)", r.allowed, r.denied)
			}
		})
	}
}

// TestRaceNaiveContinue runs the same racer under naiveSupervise, which
// decides on the buffer it read and answers CONTINUE. The forbidden object
// must be reached at least once: otherwise the emulated test above proves
// nothing on this machine.
func TestRaceNaiveContinue(t *testing.T) {
	racer := buildRacer(t)
	allowedPath, forbiddenPath := raceFiles(t)
	allowedAddr, forbiddenAddr := raceListeners(t)
	for _, c := range []struct{ mode, allowed, forbidden string }{
		{"open", allowedPath, forbiddenPath},
		{"connect", allowedAddr, forbiddenAddr},
	} {
		t.Run(c.mode, func(t *testing.T) {
			out := naiveSupervise(t, c.allowed, []string{racer, c.mode, c.allowed, strconv.Itoa(raceAttempts)}, "RACER_FORBIDDEN="+c.forbidden)
			r := parseRace(t, out)
			t.Logf("under a check-then-continue supervisor: %+v", r)
			if r.forbidden == 0 {
				t.Errorf("no %s reached the forbidden object in %d attempts under check-then-continue: the race was not shown", c.mode, r.attempts)
			}
		})
	}
}

// naiveLoaderEnv makes this test binary a loader for naiveSupervise: it
// loads the filter from the file named and execs its argv.
const naiveLoaderEnv = "KFV_TEST_NAIVE_LOADER"

func init() {
	if os.Getenv(naiveLoaderEnv) != "" {
		// The loading thread must be the one that execs: init runs on
		// the main thread.
		runtime.LockOSThread()
	}
}

type naiveSpec struct {
	Path string   `json:"path"`
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Prog []byte   `json:"prog"`
}

// naiveLoaderMain is the loader side of naiveSupervise.
func naiveLoaderMain(specFile string) {
	b, err := os.ReadFile(specFile)
	var spec naiveSpec
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	var prog []unix.SockFilter
	if err == nil {
		prog, err = seccompnotify.DecodeProg(spec.Prog)
	}
	if err == nil {
		err = seccompnotify.LoadAndExec(&seccompnotify.ExecSpec{Path: spec.Path, Argv: spec.Argv, Env: spec.Env, Prog: prog})
	}
	fmt.Fprintln(os.Stderr, "naive loader:", err)
	os.Exit(125)
}

// naiveSupervise runs argv under a filter that notifies openat and
// connect, and answers them the unsafe way: read the argument, compare
// it with allowed, and CONTINUE or fail. It returns argv's stdout.
func naiveSupervise(t *testing.T, allowed string, argv []string, env ...string) string {
	t.Helper()
	p, err := profiles.Parse("naive.toml", []byte(`name = "naive"
[defaults]
action = "allow"
[[syscall]]
names = ["open", "openat", "openat2", "creat", "connect", "sendto", "sendmsg", "sendmmsg"]
action = "inspect"
reason = "the race"
[[syscall]]
names = ["open_by_handle_at"]
action = "deny"
reason = "an open around paths"
`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := seccompnotify.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := json.Marshal(naiveSpec{Path: argv[0], Argv: argv, Env: append(os.Environ(), env...), Prog: seccompnotify.EncodeProg(f.Prog)})
	if err != nil {
		t.Fatal(err)
	}
	specFile := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(specFile, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), naiveLoaderEnv+"="+specFile, "GODEBUG=asyncpreemptoff=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pidfdN, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(pidfdN), "pidfd")
	defer pidfd.Close()
	lf, err := seccompnotify.TakeListener(pidfd, cmd.Process.Pid, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l, err := seccompnotify.NewListener(lf)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var n seccompnotify.Notif
		for {
			if err := l.Receive(&n); err != nil {
				return
			}
			ok := true
			switch f.Names[n.Nr] {
			case "openat":
				s, err := seccompnotify.ReadString(n.PID, n.Args[1], 4096)
				ok = err == nil && (s == allowed || !strings.HasPrefix(s, filepath.Dir(allowed)))
			case "connect":
				b := make([]byte, 16)
				if seccompnotify.ReadMem(n.PID, n.Args[1], b) != nil {
					ok = false
					break
				}
				sa, err := seccompnotify.ParseSockaddr(b)
				ok = err == nil && (sa.Addr.String() == allowed)
			}
			var rerr error
			if ok {
				rerr = l.Continue(n.ID) // the mistake this helper exists to show
			} else {
				rerr = l.Fail(n.ID, unix.EACCES)
			}
			if rerr != nil && !errors.Is(rerr, seccompnotify.ErrGone) {
				t.Errorf("answer: %v", rerr)
			}
		}
	}()
	out, err := io.ReadAll(stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("racer under the naive supervisor: %v", err)
	}
	l.Shutdown()
	<-done
	l.Close()
	return string(out)
}
