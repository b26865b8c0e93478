package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
	"kfv/memwatch"
	"kfv/memwatch/memwatchtest"
)

// These tests run memwatch inside kfv-run (enforce): the supervisor takes
// the baseline once QEMU's private monitor answers, its findings go to the
// VO as L1 findings of the resource "memory", and the built-in profile's
// [[correlate]] rule code-tampered orders scrub and link_down:all-nics.

// TestMemwatchKfvOutsideTamper: QEMU's text written from outside through
// /proc/PID/mem (an exploit that never makes a notified syscall) under
// kfv-run with the built-in profile is found within the scan period,
// scrubbed back to the ELF file's bytes, and the L1 finding takes the
// VM's NIC down (L3) through the built-in rule code-tampered; the guest
// runs on.
func TestMemwatchKfvOutsideTamper(t *testing.T) {
	forEachAccel(t, func(t *testing.T, accel string) {
		img := rawGuest(t, guest.RawOptions{Loop: true, TicksPerLine: 2})
		qargs := append(guest.RawArgs(img, accel), "-netdev", "user,id=n0", "-device", "e1000,netdev=n0,id=nic0", "-name", "kfv-memwatch,debug-threads=on")
		period := memwatch.DefaultPeriod
		r := mkStart(t, []string{"--memwatch-period", period.String()}, qargs)
		r.baseline()
		ticks := func() int { return strings.Count(r.p.stdout.String(), "KFV-RAW tick ") }
		if !waitFor(20*time.Second, func() bool { return ticks() >= 1 }) {
			t.Fatalf("loop guest printed no tick\nconsole:\n%s\nstderr:\n%s", r.p.stdout, r.p.stderr)
		}
		q := dialQMP(t, r.sock, 30*time.Second)
		entry, err := memwatchtest.EntryPoint(r.qemuPID)
		if err != nil {
			t.Fatal(err)
		}
		// _start runs once, before main: bytes there are QEMU's text,
		// and patching them harms nothing else.
		t0 := time.Now()
		mwTamper(t, r.qemuPID, entry, []byte{0xcc, 0xcc, 0xcc})
		f := r.memFinding(string(memwatch.KindModified), 5*time.Second)
		_, seen := r.waitEvent("the finding", time.Second, func(e *event.Event) bool { return e.Time.Equal(f.Time) })
		lat := f.Time.Sub(t0)
		t.Logf("tamper found by the scan that started %v after the write (the test read the event %v after the write); period %v", lat.Round(time.Microsecond), seen.Sub(t0).Round(time.Millisecond), period)
		// The scan that follows the write finds it: within one period
		// of the write. The bound is two periods: a scan made late by a
		// busy machine (2 cores shared by everything) is still on time
		// if it comes before the next one, plus 20 ms for the scheduler
		// to run the watcher's timer goroutine at all.
		// (The latency target is make bench's to measure, not a
		// test's to assert.)
		if lim := 2*period + 20*time.Millisecond; lat > lim {
			t.Logf("tamper found %v after the write, later than %v: the machine is loaded?", lat, lim)
		}
		if f.Severity != "critical" || !strings.Contains(f.Detail, fmt.Sprintf("%#x-", entry&^(memwatch.PageSize-1))) || !strings.Contains(f.Detail, "differ in text") {
			t.Errorf("finding %s %q does not name the patched text at %#x as critical", f.Severity, f.Detail, entry)
		}
		r.reaction("scrub", f, 10*time.Second)
		t.Logf("%s", r.scrubReport(f.Time))
		mwAssertPristine(t, r.qemuPID, entry)
		r.reaction("link_down:all-nics", f, 10*time.Second)
		// QEMU 7.2's "info network" does not show a NIC's link state:
		// the reaction's verdict (set_link answered for every NIC of
		// "info network") is what says it went down.
		raw, err := q.exec("human-monitor-command", map[string]string{"command-line": "info network"})
		if err != nil {
			t.Fatalf("info network: %v", err)
		}
		var info string
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatalf("info network: %v", err)
		}
		if !strings.Contains(info, "nic0: ") || !strings.Contains(info, "type=nic") {
			t.Errorf("info network does not list nic0:\n%s", info)
		}
		if s := q.started(t); s != "running" {
			t.Errorf("after the scrub QEMU is %q, want running", s)
		}
		want := ticks() + 3
		if !waitFor(10*time.Second, func() bool { return ticks() >= want }) {
			t.Errorf("the loop guest stopped after the scrub: %d ticks, want %d", ticks(), want)
		}
		// Nothing more to find once the scrub has verified its repair.
		time.Sleep(3 * period)
		var after []string
		for _, e := range r.eventsNow() {
			if e.Kind == event.KindFinding && e.Detector == "memwatch" && !e.Time.Equal(f.Time) {
				after = append(after, e.Rule+" "+e.Detail)
			}
		}
		if len(after) > 0 {
			t.Errorf("memwatch findings besides the tamper: %q", after)
		}
		if errs := errorsIn(r.eventsNow()); len(errs) > 0 {
			t.Errorf("error events: %q", errs)
		}
		r.quit(q)
		t.Logf("%s took %v", t.Name(), time.Since(r.began).Round(100*time.Millisecond))
	})
}
