package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kfv/guest"
)

// TestDivert: make install-divert into a scratch root (DESTDIR, with a
// dpkg database of its own, so that this machine's QEMU is untouched)
// puts kfv in QEMU's place; calling QEMU's path then runs the VM under
// kfv in the emulator model, probes answer exactly as QEMU does, and make
// uninstall-divert puts QEMU back.
func TestDivert(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if _, err := exec.LookPath("dpkg-divert"); err != nil {
		t.Skip("no dpkg-divert: not a Debian system")
	}
	root := worldDir(t, "kfv-divert-")
	bin := filepath.Join(root, "usr", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var", "lib", "dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The distribution's QEMU, as a link to the one under test (QEMU
	// finds its data next to the binary it really is).
	qemuAt := filepath.Join(bin, "qemu-system-x86_64")
	if err := os.Symlink(qemu, qemuAt); err != nil {
		t.Fatal(err)
	}
	// make install takes BIN/kfv-run: the binary under test, by that name.
	bin2 := t.TempDir()
	self, err := os.ReadFile(kfvRun)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin2, "kfv-run"), self, 0o755); err != nil {
		t.Fatal(err)
	}
	make := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "-s", "-o", "build", target, "DESTDIR="+root, "BIN="+bin2, "PREFIX=/usr/local")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("install-divert")
	if target, err := os.Readlink(qemuAt); err != nil || filepath.Base(target) != "kfv-run" {
		t.Fatalf("%s after install-divert: %q, %v; want a link to kfv-run", qemuAt, target, err)
	}
	if target, err := os.Readlink(qemuAt + ".distrib"); err != nil || target != qemu {
		t.Fatalf("the real QEMU is not put aside: %q, %v", target, err)
	}
	list, err := exec.Command("dpkg-divert", "--admindir", filepath.Join(root, "var", "lib", "dpkg"), "--list").CombinedOutput()
	if err != nil || !bytes.Contains(list, []byte("local diversion of /usr/bin/qemu-system-x86_64 to /usr/bin/qemu-system-x86_64.distrib")) {
		t.Fatalf("dpkg-divert --list: %v\n%s", err, list)
	}
	// kfv's settings: the scratch root's event directory; no qemu key,
	// so that kfv finds the QEMU put aside for it.
	events := filepath.Join(root, "events")
	if err := os.Mkdir(events, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "kfv.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("events = %q\nmode = \"enforce\"\n", events+"/{vm}.jsonl")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KFV_CONFIG", cfg)

	for _, probe := range [][]string{{"-version"}, {"-help"}, {"-machine", "help"}, {"-device", "help"}} {
		want, werr := exec.Command(qemu, probe...).CombinedOutput()
		got, gerr := exec.Command(qemuAt, probe...).CombinedOutput()
		if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
			t.Errorf("%s %s: output differs from QEMU's (%v, %v)\ngot:\n%s\nwant:\n%s", qemuAt, strings.Join(probe, " "), gerr, werr, lastLines(string(got), 5), lastLines(string(want), 5))
		}
	}

	// libvirt's capability probe: QMP on a QEMU without a machine.
	probeQMP := func(bin string) map[string]string {
		t.Helper()
		sock := filepath.Join(t.TempDir(), "probe.sock")
		p := start(t, []string{bin, "-S", "-no-user-config", "-nodefaults", "-display", "none", "-machine", "none,accel=tcg", "-qmp", "unix:" + sock + ",server=on,wait=off"})
		q := dialQMP(t, sock, 20*time.Second)
		out := map[string]string{}
		for _, cmd := range []string{"query-version", "query-machines", "query-cpu-definitions", "query-commands"} {
			r, err := q.exec(cmd, nil)
			if err != nil {
				t.Fatalf("%s %s: %v", bin, cmd, err)
			}
			out[cmd] = string(r)
		}
		q.exec("quit", nil)
		p.wait(t, 20*time.Second)
		return out
	}
	want, got := probeQMP(qemu), probeQMP(qemuAt)
	for cmd := range want {
		if got[cmd] != want[cmd] {
			t.Errorf("QMP %s through %s differs from QEMU's:\ngot  %.300s\nwant %.300s", cmd, qemuAt, got[cmd], want[cmd])
		}
	}

	img := rawGuest(t, guest.RawOptions{ExitCode: 7})
	p := start(t, append([]string{qemuAt}, append(guest.RawArgs(img, "tcg"), "-name", "diverted")...))
	if st := p.wait(t, 60*time.Second); st != guest.RawExitStatus(7) {
		t.Fatalf("the VM through the diverted path: exit %d, want the guest's %d\nstderr:\n%s", st, guest.RawExitStatus(7), p.stderr)
	}
	evPath := filepath.Join(events, "diverted.jsonl")
	if !waitFor(10*time.Second, func() bool {
		b, _ := os.ReadFile(evPath)
		return bytes.Contains(b, []byte("no process uses the filter any more"))
	}) {
		t.Fatalf("no supervisor events at %s: the VM did not run under kfv's emulator model", evPath)
	}
	evs := readEvents(t, evPath)
	if !hasLifecycle(evs, "exec "+qemuAt+".distrib") && !hasLifecycle(evs, qemuAt+".distrib") {
		t.Errorf("the events do not name the QEMU put aside (%s.distrib):\n%s", qemuAt, dumpEvents(evs))
	}
	if d := denials(evs); len(d) > 0 {
		t.Errorf("%d denials for a benign guest:\n%s", len(d), dumpEvents(d))
	}

	make("uninstall-divert")
	if target, err := os.Readlink(qemuAt); err != nil || target != qemu {
		t.Errorf("%s after uninstall-divert: %q, %v; want QEMU back", qemuAt, target, err)
	}
	if _, err := os.Lstat(qemuAt + ".distrib"); err == nil {
		t.Errorf("%s.distrib is still there", qemuAt)
	}
	if list, _ := exec.Command("dpkg-divert", "--admindir", filepath.Join(root, "var", "lib", "dpkg"), "--list").CombinedOutput(); len(bytes.TrimSpace(list)) > 0 {
		t.Errorf("diversions left: %s", list)
	}
}
