package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// TestReload: kfv-run reload applies a running VM's profile and overlay
// as they are on disk now. A file that is not the VM's is denied to
// QEMU (a blockdev-add on a TCP monitor, which kfv does not proxy, so
// the manager's command admits nothing); a broken overlay is refused and
// the running rules stay (the open is still denied); an overlay rule
// admitting the file, reloaded, lets the same open through, with QEMU
// and the guest running all along; a profile whose kernel part differs
// is refused with that reason. Nothing else is denied and nothing reacts.
func TestReload(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	dir := t.TempDir()
	prof := profileWithout(t, dir, "repeated-denials") // two denials here are the test's
	overlay := filepath.Join(dir, "site.toml")
	writeOverlay := func(body string) {
		t.Helper()
		if err := os.WriteFile(overlay, []byte(fmt.Sprintf("extends = %q\nname = \"site\"\n%s", prof, body)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeOverlay("")
	extra := filepath.Join(dir, "extra.img")
	if err := os.WriteFile(extra, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	img := rawGuest(t, guest.RawOptions{Loop: true})
	port := freeAddr(t)
	vm := fmt.Sprintf("reload-%d", os.Getpid())
	events := filepath.Join(dir, "events.jsonl")
	qargs := append(guest.RawArgs(img, "tcg"), "-name", vm, "-qmp", "tcp:"+port+",server=on,wait=off")
	p := start(t, kfvArgs(events, []string{"--mode", "enforce", "--profile", prof, "--profile-overlay", overlay}, qemu, qargs...))
	if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
		t.Fatalf("the guest never ran\nstderr:\n%s", p.stderr)
	}
	q := dialQMPTCP(t, port, 20*time.Second)
	n := 0
	add := func() error {
		n++
		_, err := q.exec("blockdev-add", map[string]any{"driver": "file", "node-name": fmt.Sprintf("x%d", n), "filename": extra, "read-only": true})
		return err
	}
	reload := func() (string, error) {
		out, err := exec.Command(kfvRun, "reload", vm).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	// opens counts the denied opens of extra once the stream has n.
	opens := func(want int) int {
		c := 0
		waitFor(5*time.Second, func() bool {
			c = 0
			for _, e := range readEvents(t, events) {
				if e.Kind == event.KindDecision && e.Syscall == "openat" && e.Verdict == "deny" && strings.Contains(e.Args, extra) {
					c++
				}
			}
			return c >= want
		})
		return c
	}

	if err := add(); err == nil {
		t.Fatalf("blockdev-add of %s succeeded before any rule admits it", extra)
	}
	if c := opens(1); c != 1 {
		t.Fatalf("%d denied opens of %s, want 1\nevents:\n%s", c, extra, dumpPlane(readEvents(t, events)))
	}

	// A broken overlay: refused, the running rules stay.
	writeOverlay("[[rule]\n")
	if out, err := reload(); err == nil || !strings.Contains(out, "running policy stays in force") {
		t.Errorf("reload of a broken overlay: %v: %s, want refused", err, out)
	} else {
		t.Logf("broken overlay: %s", out)
	}
	if err := add(); err == nil {
		t.Errorf("blockdev-add succeeded after a refused reload")
	}
	if c := opens(2); c != 2 {
		t.Errorf("%d denied opens of %s after the refused reload, want 2", c, extra)
	}

	// A rule admitting the file: applied; the same open goes through.
	writeOverlay(fmt.Sprintf("[[rule]]\nname = \"site-extra\"\nsyscalls = [\"openat\"]\npaths = [%q]\nverdict = \"allow\"\nreason = \"a disk the site adds\"\n", extra))
	out, err := reload()
	if err != nil || !strings.Contains(out, "applied to the running VM") {
		t.Fatalf("reload of the overlay with site-extra: %v: %s", err, out)
	}
	t.Logf("reload: %s", out)
	if err := add(); err != nil {
		t.Errorf("blockdev-add after the reload: %v, want the open admitted by site-extra", err)
	}
	if !waitFor(5*time.Second, func() bool {
		for _, e := range readEvents(t, events) {
			if e.Kind == event.KindDecision && e.Syscall == "openat" && e.Rule == "site-extra" && e.Verdict == "allow" {
				return true
			}
		}
		return false
	}) {
		t.Errorf("no open admitted by site-extra in the events")
	}

	// The kernel part: getpgrp allowed in the filter instead of sent to kfv.
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prof, append(b, []byte("\n[[syscall]]\nnames = [\"getpgrp\"]\naction = \"allow\"\nreason = \"a change the running filter cannot take\"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := reload(); err == nil || !strings.Contains(out, "kernel filter") {
		t.Errorf("reload of a profile with another kernel part: %v: %s, want refused for the filter", err, out)
	} else {
		t.Logf("kernel part: %s", out)
	}

	if st := q.status(t); st != "running" {
		t.Errorf("status %q, want running", st)
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err)
	}
	p.wait(t, 30*time.Second)
	evs := readEvents(t, events)
	var applied, refused int
	for _, e := range evs {
		switch {
		case e.Kind == event.KindLifecycle && strings.HasPrefix(e.Detail, "reload: "):
			applied++
		case e.Kind == event.KindError && strings.HasPrefix(e.Detail, "reload refused: "):
			refused++
		case e.Kind == event.KindReaction:
			t.Errorf("a reaction: %s %s", e.Reaction, e.Detail)
		case e.Kind == event.KindDecision && e.Verdict == "deny" && !strings.Contains(e.Args, extra):
			t.Errorf("another denial: %s %s rule=%s %s", e.Syscall, e.Args, e.Rule, e.Detail)
		}
	}
	if applied != 1 || refused != 2 {
		t.Errorf("events: %d reloads applied, %d refused; want 1 and 2", applied, refused)
	}
}

// dialQMPTCP connects to a QMP monitor on a TCP address.
func dialQMPTCP(t *testing.T, addr string, timeout time.Duration) *qmp {
	t.Helper()
	return dialQMPNet(t, "tcp", addr, timeout)
}
