package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

var (
	linuxOnce  sync.Once
	linuxBuilt *guest.Linux
	linuxErr   error
)

// benign is one benign-suite test: the Linux guest under kfv-run in
// enforce mode with the built-in profile.
type benign struct {
	t     *testing.T
	qemu  string
	linux *guest.Linux
	accel string
	dir   string // the test's temporary directory
	runs  int
	// bare makes run start QEMU itself, without kfv-run: the benign
	// matrix runs each configuration bare first, to show it works.
	bare bool
	// flags are more kfv-run flags for run.
	flags []string
}

// newBenign builds (once per test binary) the Linux guest and returns the
// test's context; it skips when QEMU is missing and fails when kfv-run or
// the guest cannot be built.
func newBenign(t *testing.T) *benign {
	t.Helper()
	needKfv(t)
	qemu := needQEMU(t)
	accel, err := guest.LinuxAccel()
	if err != nil {
		t.Fatal(err)
	}
	if accel == "kvm" {
		if p := kvmProblem(); p != "" {
			t.Skipf("%s=kvm but %s: unset it to run the Linux guest under TCG", guest.LinuxAccelEnv, p)
		}
	}
	linuxOnce.Do(func() { linuxBuilt, linuxErr = guest.BuildLinux(guestDir) })
	if linuxErr != nil {
		t.Fatalf("build the Linux guest (make guests): %v", linuxErr)
	}
	start := time.Now()
	t.Cleanup(func() { t.Logf("%s took %v", t.Name(), time.Since(start).Round(100*time.Millisecond)) })
	return &benign{t: t, qemu: qemu, linux: linuxBuilt, accel: accel, dir: t.TempDir()}
}

// args is the QEMU command line for workload, named so that QEMU names
// its threads (as libvirt has it do): the events then say which thread
// made each call.
func (b *benign) args(workload string, cmdline ...string) []string {
	a := guest.LinuxArgs(b.linux, b.accel, workload, cmdline...)
	return append(a, "-name", "guest=kfv-benign,debug-threads=on")
}

// path names a file in the test's directory.
func (b *benign) path(name string) string { return filepath.Join(b.dir, name) }

// run starts QEMU with qargs under kfv-run --mode enforce with the
// built-in profile; extra become fds 3, 4... When the test ends, after
// the process is gone, the run's event stream must hold no denial, no
// error, no reaction and no finding of severity medium or above: each is
// listed in the failure.
//
// With bare set, QEMU runs without kfv-run and nothing is checked.
func (b *benign) run(qargs []string, extra ...*os.File) *proc {
	t := b.t
	t.Helper()
	if b.bare {
		return start(t, append([]string{b.qemu}, qargs...), extra...)
	}
	b.runs++
	events := b.path(fmt.Sprintf("events-%d.jsonl", b.runs))
	// Registered before start's own cleanup, so it runs after QEMU is
	// gone and the stream is complete.
	t.Cleanup(func() { b.checkEvents(events) })
	return start(t, kfvArgs(events, append([]string{"--mode", "enforce", "--profile", "qemu"}, b.flags...), b.qemu, qargs...), extra...)
}

func (b *benign) checkEvents(path string) {
	t := b.t
	if _, err := os.Stat(path); err != nil {
		t.Errorf("no event stream: %v", err)
		return
	}
	evs := readEvents(t, path)
	if d := denials(evs); len(d) > 0 {
		t.Errorf("%d denials in a benign run (%s):\n%s", len(d), filepath.Base(path), dumpEvents(d))
	}
	var errs, plane []event.Event
	for _, e := range evs {
		switch {
		case e.Kind == "error":
			errs = append(errs, e)
		case e.Kind == event.KindReaction:
			plane = append(plane, e)
		case e.Kind == event.KindFinding && e.Severity != "low":
			// Medium or above: what the built-in ladder reacts to.
			plane = append(plane, e)
		}
	}
	if len(errs) > 0 {
		t.Errorf("%d error events (%s):\n%s", len(errs), filepath.Base(path), dumpEvents(errs))
	}
	if len(plane) > 0 {
		t.Errorf("%d reactions or findings of severity medium or above in a benign run (%s):\n%s", len(plane), filepath.Base(path), dumpPlane(plane))
	}
}

// markers parses the guest's console output.
func (b *benign) markers(p *proc) guest.Markers {
	b.t.Helper()
	m, err := guest.ParseMarkers([]byte(p.stdout.String()))
	if err != nil {
		b.t.Fatal(err)
	}
	return m
}

// waitLine waits until the console shows a line containing marker and
// returns that line from marker on.
func waitLine(t *testing.T, p *proc, marker string, timeout time.Duration) string {
	t.Helper()
	var line string
	if !waitFor(timeout, func() bool {
		// Complete lines only while QEMU runs: the console may be
		// caught mid-line ("KFV-HOTPLUG added=e" before "th0 mac=...").
		exited := false
		select {
		case <-p.done:
			exited = true
		default:
		}
		out := p.stdout.String()
		if !exited {
			out = out[:strings.LastIndexByte(out, '\n')+1]
		}
		if l := guest.Lines([]byte(out), marker); len(l) > 0 {
			line = l[0]
			return true
		}
		return exited
	}) || line == "" {
		t.Fatalf("no %q on the console within %v\nconsole:\n%s\nstderr:\n%s", marker, timeout, tail(p.stdout.String(), 40), p.stderr)
	}
	return line
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// wantDone checks the end of a workload: QEMU exited 0, the guest booted,
// ran workload and reported status=ok.
func (b *benign) wantDone(p *proc, status int, workload string) guest.Markers {
	b.t.Helper()
	m := b.markers(p)
	if status != 0 || !m.Booted || !m.Done || m.Workload != workload || m.Status != "ok" {
		b.t.Fatalf("QEMU exit %d, markers %+v, want exit 0 and %s status=ok\nconsole:\n%s\nstderr:\n%s",
			status, m, workload, tail(p.stdout.String(), 40), p.stderr)
	}
	return m
}

// netRun runs the net workload: the guest, at ip on eth0 (netArgs give
// it the NIC and its backend), sends mib MiB of the pattern to host at a
// listener the test opens on listen (an address of this host); the
// listener must receive exactly those bytes and QEMU must exit 0 with the
// workload done.
func (b *benign) netRun(netArgs []string, mib int, listen, host, ip string, extra ...*os.File) {
	t := b.t
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, bufio.NewReader(c))
		if err != nil {
			got <- "read: " + err.Error()
			return
		}
		got <- fmt.Sprintf("%d %s", n, hex.EncodeToString(h.Sum(nil)))
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	args := append(b.args(guest.WorkloadNet, fmt.Sprintf("kfv.size=%d", mib), fmt.Sprintf("kfv.port=%d", port),
		"kfv.host="+host, "kfv.ip="+ip), netArgs...)
	p := b.run(args, extra...)
	status := p.wait(t, 3*time.Minute)
	// The guest has powered off: whatever reached the listener has
	// arrived; give the copy a moment to see the end of the stream.
	want := fmt.Sprintf("%d %s", mib<<20, guest.PatternSHA256(mib))
	select {
	case g := <-got:
		if g != want {
			t.Errorf("host listener received %q, want %q (bytes sha256)", g, want)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("host listener received no complete connection (the guest's nc may report success anyway)")
	}
	m := b.wantDone(p, status, guest.WorkloadNet)
	t.Logf("sent in %s ms", m.Result["ms"])
}
