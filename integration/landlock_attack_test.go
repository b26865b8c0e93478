package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/profiles"
)

// The Landlock wall is a second line behind kfv's decisions: it must stop
// what a profile lets through by mistake. Each payload here runs twice
// under kfv-run with a test profile that lets the payload's calls through
// the kernel filter: with --landlock off, where the payload must take
// effect (so the profile really lets it through and only the wall is
// left), and with the wall (the default), where it must not, from a
// device thread and from QEMU's main loop.
var wallAttacks = []struct {
	attack
	// abi is the Landlock ABI the wall needs for this payload.
	abi int
}{
	{attack: attack{
		name: "bypath",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			dir := t.TempDir() // outside the VM's resources
			for _, f := range []string{"a", "t"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("kfv"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return dir, func() (int, int, string) {
				var seen []string
				exists := func(name string, ok func(os.FileInfo) bool) {
					if fi, err := os.Lstat(filepath.Join(dir, name)); err == nil && ok(fi) {
						seen = append(seen, name)
					}
				}
				any := func(os.FileInfo) bool { return true }
				exists("made", func(fi os.FileInfo) bool { return fi.IsDir() })
				exists("renamed", any)
				exists("linked", any)
				exists("sym", func(fi os.FileInfo) bool { return fi.Mode()&os.ModeSymlink != 0 })
				exists("fifo", func(fi os.FileInfo) bool { return fi.Mode()&os.ModeNamedPipe != 0 })
				exists("t", func(fi os.FileInfo) bool { return fi.Size() == 0 })
				return len(seen), 6, fmt.Sprintf("in %s: %v of mkdir, rename, link, symlink, mknod, truncate", dir, seen)
			}
		},
		check: wallCheck("mkdir"),
	}, abi: 1},
	{attack: attack{
		// An O_PATH fd needs no access right, in the kernel or under
		// Landlock; a reopen through /proc/self/fd/N asks for the access
		// on the file it reaches, which the wall checks as a path.
		name: "opath-reopen",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			file := filepath.Join(t.TempDir(), "other") // outside the VM's resources
			if err := os.WriteFile(file, []byte("kfv"), 0o600); err != nil {
				t.Fatal(err)
			}
			return file, func() (int, int, string) {
				b, _ := os.ReadFile(file)
				return one(strings.HasSuffix(string(b), "kfv-opath"), fmt.Sprintf("%s holds %q", file, b))
			}
		},
		check: wallCheck("openat"),
	}, abi: 1},
	{attack: attack{
		// SIGKILL to a neighbour without a kill call: F_SETOWN,
		// F_SETSIG, O_ASYNC, with a profile that allows every fcntl.
		name:    "sigio-wall",
		payload: "sigio-kill",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			return strconv.Itoa(n.cmd.Process.Pid), neighborGone(n)
		},
		check: wallCheck("fcntl"),
	}, abi: 6},
}

// TestLandlockWall runs wallAttacks; see there.
func TestLandlockWall(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU twice per payload and thread: skipped with -short")
	}
	abi, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	for _, c := range wallAttacks {
		for _, w := range []string{"device", "main"} {
			a := c.attack
			a.main = w == "main"
			a.kfvFlags = wallFlags(a.name)
			t.Run(a.name+"/"+w, func(t *testing.T) {
				t.Parallel()
				if e != 0 || int(abi) < c.abi {
					t.Skipf("the kernel's Landlock (ABI %d, %v) cannot build the wall %s needs (ABI %d)", abi, e, a.name, c.abi)
				}
				t.Run("no-wall", func(t *testing.T) { runAttack(t, qemu, a, false) })
				t.Run("wall", func(t *testing.T) { runAttack(t, qemu, a, true) })
			})
		}
	}
}

// wallFlags runs kfv-run in enforce mode with the payload's test profile,
// with or without the wall.
func wallFlags(name string) func(t *testing.T, r *attackRun, wall bool) []string {
	return func(t *testing.T, r *attackRun, wall bool) []string {
		mode := "off"
		if wall {
			mode = "best-effort"
		}
		// QEMU kept root, in both runs: the wall alone is tested, not
		// QEMU's credentials (privdrop_attack_test.go).
		return []string{"--mode", "enforce", "--profile", wallProfile(t, r.dir, name), "--landlock", mode, "--run-as", "root"}
	}
}

// wallProfile is the built-in profile with the payload's calls let
// through the kernel filter.
func wallProfile(t *testing.T, dir, name string) string {
	t.Helper()
	src, err := profiles.BuiltinSource("qemu")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	switch name {
	case "bypath":
		text += `
[[syscall]]
name = "test-bypath-in-kernel"
names = ["mkdir", "mkdirat", "rename", "renameat", "renameat2", "link", "linkat",
         "symlink", "symlinkat", "mknod", "mknodat", "truncate"]
action = "allow"
reason = "test: the by-path calls continue in the kernel, so that only the Landlock wall stands between the payload and the files"
`
	case "opath-reopen":
		text += `
[[syscall]]
name = "test-opath-in-kernel"
names = ["openat"]
action = "allow"
args = [{ index = 2, op = "masked_eq", mask = "O_PATH", value = "O_PATH" }]
reason = "test: O_PATH opens continue in the kernel"

[[syscall]]
name = "test-reopen-in-kernel"
names = ["openat"]
action = "allow"
args = [{ index = 2, op = "masked_eq", mask = "0x503", value = "0x501" }]
reason = "test: opens for appending without a controlling terminal (O_WRONLY|O_APPEND|O_NOCTTY, the payload's reopen through /proc/self/fd) continue in the kernel, so that only the Landlock wall stands between the payload and the file"
`
	case "sigio-wall":
		// Every fcntl table and rule goes; one unconditional allow
		// takes their place.
		var kept []string
		for _, block := range strings.Split(text, "\n\n") {
			if !strings.Contains(block, `["fcntl"]`) {
				kept = append(kept, block)
			}
		}
		text = strings.Join(kept, "\n\n") + `

[[syscall]]
name = "test-fcntl-in-kernel"
names = ["fcntl"]
action = "allow"
reason = "test: every fcntl command passes the kernel filter, F_SETOWN to a neighbour included, so that only the Landlock wall's signal scope stands between the payload and the neighbour"
`
	default:
		t.Fatalf("no wall profile for %s", name)
	}
	path := filepath.Join(dir, "wall-"+name+".toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(kfvRun, "profile", "check", path).CombinedOutput(); err != nil {
		t.Fatalf("kfv-run profile check %s: %v\n%s", path, err, out)
	}
	return path
}

// wallCheck asserts that the wall was built and that kfv warned about
// the calls the test profile lets QEMU make itself (sc among them).
func wallCheck(sc string) func(t *testing.T, r *attackRun, evs []event.Event) {
	return func(t *testing.T, r *attackRun, evs []event.Event) {
		var built, warned bool
		for _, e := range evs {
			built = built || strings.HasPrefix(e.Detail, "QEMU's Landlock wall: Landlock ABI")
			warned = warned || e.Kind == event.KindWarning && strings.Contains(e.Detail, "that its Landlock wall refuses") && strings.Contains(e.Detail, sc)
		}
		if !built {
			t.Errorf("no lifecycle event says the wall was built:\n%s", dumpEvents(evs))
		}
		if !warned {
			t.Errorf("no warning names %s among the calls the wall refuses:\n%s", sc, dumpEvents(evs))
		}
		if r.qemuPID > 0 {
			// The payload's calls failed in the kernel, not by kfv's
			// hand: no deny of them in the stream.
			for _, e := range evs {
				if e.Kind == event.KindDecision && e.Verdict == "deny" && e.Syscall == sc && e.TID == r.report.TID {
					t.Errorf("kfv denied %s itself (%s): the profile was to let it through", sc, e.Rule)
				}
			}
		}
	}
}
