package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kfv/event"
	"kfv/profiles"
)

// QEMU without root: a root kfv-run runs QEMU as kfv-qemu with no
// capabilities, so a payload that needs root fails in the kernel even
// where a rule lets its calls through. Each payload runs twice under
// kfv-run with a test profile that lets its calls pass the kernel filter
// and no Landlock wall (which stops some of them on its own): with
// --run-as root, where the payload must take effect (the profile really
// lets it through and only QEMU's credentials are left), and with the
// default user, where it must not, from a device thread and from QEMU's
// main loop.
var privAttacks = []attack{
	{
		// A copy of /dev/mem, where QEMU's user may create files.
		name: "root-mknod",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			dir := worldWritable(t)
			return dir, func() (int, int, string) {
				fi, err := os.Lstat(filepath.Join(dir, "mem"))
				return one(err == nil && fi.Mode()&os.ModeCharDevice != 0, fmt.Sprintf("%s/mem: %v", dir, err))
			}
		},
	},
	{
		// A host setting, rewritten with its own value.
		name: "root-sysctl",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "/proc/sys/kernel/printk_ratelimit_burst", reported(r, "wrote")
		},
	},
	{
		// An address on the host's loopback, through route netlink.
		name: "root-netlink",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			const addr = "127.77.0.1"
			del := func() { exec.Command("ip", "addr", "del", addr+"/32", "dev", "lo").Run() }
			del()
			t.Cleanup(del)
			return addr, func() (int, int, string) {
				lo, err := net.InterfaceByName("lo")
				if err != nil {
					t.Fatal(err)
				}
				as, err := lo.Addrs()
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range as {
					if strings.HasPrefix(a.String(), addr+"/") {
						return 1, 1, "lo has " + a.String()
					}
				}
				return 0, 1, fmt.Sprintf("lo has %v", as)
			}
		},
	},
	{
		// A raw socket: the existing payload, let through by the profile.
		name:    "root-rawsock",
		payload: "raw-inet",
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", func() (int, int, string) {
				n, what := procNetSockets(t, r.qemuPID, "/proc/net/raw", 9)
				return one(n > 0, what)
			}
		},
	},
}

// TestPrivilegeDrop runs privAttacks; see there.
func TestPrivilegeDrop(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU twice per payload and thread: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("kfv-run drops QEMU's credentials only when it runs as root: run as root")
	}
	for _, c := range privAttacks {
		for _, w := range []string{"device", "main"} {
			a := c
			a.main = w == "main"
			a.kfvFlags = privFlags(a.name)
			a.check = privCheck
			t.Run(a.name+"/"+w, func(t *testing.T) {
				t.Parallel()
				t.Run("root", func(t *testing.T) { runAttack(t, qemu, a, false) })
				t.Run("kfv-qemu", func(t *testing.T) { runAttack(t, qemu, a, true) })
			})
		}
	}
}

// privFlags: enforce mode, the test profile, no wall; QEMU kept root for
// the run that must show the effect, the default user for the other.
func privFlags(name string) func(t *testing.T, r *attackRun, drop bool) []string {
	return func(t *testing.T, r *attackRun, drop bool) []string {
		flags := []string{"--mode", "enforce", "--profile", privProfile(t, r.dir), "--landlock", "off"}
		if !drop {
			flags = append(flags, "--run-as", "root")
		}
		return flags
	}
}

// privProfile is the built-in profile with the root payloads' calls let
// through the kernel filter.
func privProfile(t *testing.T, dir string) string {
	t.Helper()
	src, err := profiles.BuiltinSource("qemu")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src) + `
[[syscall]]
name = "test-root-calls-in-kernel"
names = ["mknod", "mknodat", "socket"]
action = "allow"
reason = "test: device nodes and every socket continue in the kernel, so that only QEMU's credentials stand between the payload and the host"

[[syscall]]
name = "test-root-open-in-kernel"
names = ["open"]
action = "allow"
args = [{ index = 1, op = "eq", value = 0x80002 }]
reason = "test: the legacy open with O_RDWR|O_CLOEXEC continues in the kernel (QEMU's own opens are openat, which kfv performs), so that only QEMU's credentials stand between root-sysctl and /proc/sys"
`
	path := filepath.Join(dir, "priv.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(kfvRun, "profile", "check", path).CombinedOutput(); err != nil {
		t.Fatalf("kfv-run profile check %s: %v\n%s", path, err, out)
	}
	return path
}

// privCheck: the event stream says who QEMU ran as.
func privCheck(t *testing.T, r *attackRun, evs []event.Event) {
	want := "QEMU runs as kfv-qemu "
	if !r.kfv {
		want = "--run-as root: QEMU runs as root"
	}
	for _, e := range evs {
		if strings.HasPrefix(e.Detail, want) {
			return
		}
	}
	t.Errorf("no event says %q:\n%s", want, dumpEvents(evs))
}

// worldWritable is a directory anyone may write to, removed at the end.
func worldWritable(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kfv-priv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// qemuReachable lets QEMU's user under a root kfv-run (kfv-qemu) search
// dir and the directories above it up to the temporary directory: QEMU
// looks at some of its files itself (its pidfile), with its own rights.
// The directories stay unreadable to it.
func qemuReachable(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	top := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, top+"/"); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
			t.Fatal(err)
		}
	}
}
