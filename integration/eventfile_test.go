package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/guest"
)

// TestEventFileReopen: logrotate moves the event file and sends SIGHUP;
// kfv-run (standalone) and the emulator model's supervisor go on in a new
// file at the path, and the VM runs on: the signal reached neither QEMU
// nor killed the supervisor.
func TestEventFileReopen(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	rotate := func(t *testing.T, path string, signal func(), p *proc) {
		t.Helper()
		if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
			t.Fatalf("the guest never ran\nstderr:\n%s", p.stderr)
		}
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		signal()
		if !waitFor(10*time.Second, func() bool {
			b, _ := os.ReadFile(path)
			return bytes.Contains(b, []byte("event file reopened"))
		}) {
			b, _ := os.ReadFile(path + ".1")
			t.Fatalf("no new event file at %s after SIGHUP; the old one ends:\n%s", path, lastLines(string(b), 5))
		}
		ticks := strings.Count(p.stdout.String(), "tick")
		if !waitFor(10*time.Second, func() bool { return strings.Count(p.stdout.String(), "tick") > ticks }) {
			t.Errorf("the guest stopped after SIGHUP")
		}
		select {
		case <-p.done:
			t.Fatalf("QEMU exited after SIGHUP: %v\nstderr:\n%s", p.err, p.stderr)
		default:
		}
	}
	t.Run("standalone", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "vm.jsonl")
		p := start(t, kfvArgs(path, nil, qemu, guest.RawArgs(img, "tcg")...))
		rotate(t, path, func() { p.cmd.Process.Signal(syscall.SIGHUP) }, p)
	})
	t.Run("emulator", func(t *testing.T) {
		dir, link := emulatorLink(t)
		cfg, events := writeKfvConfig(t, dir, "")
		t.Setenv("KFV_CONFIG", cfg)
		p := start(t, append([]string{link}, append(guest.RawArgs(img, "tcg"), "-name", "hup")...))
		var spid int
		if !waitFor(10*time.Second, func() bool { spid = supervisorOf(p.cmd.Process.Pid); return spid != 0 }) {
			t.Fatal("no supervisor")
		}
		t.Cleanup(func() {
			p.cmd.Process.Kill()
			reap(t, spid, 20*time.Second)
		})
		rotate(t, filepath.Join(events, "hup.jsonl"), func() { syscall.Kill(spid, syscall.SIGHUP) }, p)
		if !running(spid) {
			t.Errorf("the supervisor died of SIGHUP")
		}
	})
}
