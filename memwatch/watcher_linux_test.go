package memwatch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newWatcher(t *testing.T, pid int, cfg Config) (*Watcher, Coverage) {
	t.Helper()
	w, err := New(pid, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	cov, found, err := w.Baseline()
	if err != nil {
		t.Fatalf("Baseline: %v", err)
	}
	if len(found) > 0 {
		t.Fatalf("findings at baseline: %v", found)
	}
	cov.Cache = w.CacheFilled() // entries written in the background
	if cov.TextBytes == 0 || cov.Files == 0 {
		t.Fatalf("baseline covers no text: %+v", cov)
	}
	return w, cov
}

// tamper writes b at addr in pid through /proc/PID/mem, as a debugger
// or an exploit with a write primitive would, and returns what was there.
func tamper(t *testing.T, pid int, addr uint64, b []byte) []byte {
	t.Helper()
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open memory of %d: %v", pid, err)
	}
	defer f.Close()
	old := make([]byte, len(b))
	if _, err := f.ReadAt(old, int64(addr)); err != nil {
		t.Fatalf("read %#x: %v", addr, err)
	}
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		t.Fatalf("write %#x: %v", addr, err)
	}
	return old
}

func readMem(t *testing.T, pid int, addr uint64, n int) []byte {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		t.Fatalf("read %#x: %v", addr, err)
	}
	return b
}

func trackings(t *testing.T) []Tracking {
	ts := []Tracking{TrackPrivate, TrackFull}
	ok, err := SoftDirtySupported()
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		ts = append(ts, TrackSoftDirty)
	} else {
		t.Log("soft-dirty tracking not tested: this kernel is built without CONFIG_MEM_SOFT_DIRTY")
	}
	return ts
}

// pageScans are the ways of finding pages this kernel offers.
func pageScans(t *testing.T) []PageScan {
	ps := []PageScan{PageScanRead}
	if ok, err := PagemapScanSupported(); err != nil {
		t.Fatal(err)
	} else if ok {
		ps = append(ps, PageScanIoctl)
	} else {
		t.Log("PAGEMAP_SCAN not tested: this kernel has none (Linux 6.7+)")
	}
	return ps
}

func TestWatcherTamperAndScrub(t *testing.T) {
	for _, tr := range trackings(t) {
		for _, ps := range pageScans(t) {
			t.Run(tr.String()+"/"+ps.String(), func(t *testing.T) { testTamperAndScrub(t, Config{Tracking: tr, PageScan: ps, SweepPeriod: -1}) })
		}
	}
}

func testTamperAndScrub(t *testing.T, cfg Config) {
	c := startChild(t)
	pid := c.cmd.Process.Pid
	w, _ := newWatcher(t, pid, cfg)
	if found, _, err := w.Scan(); err != nil || len(found) > 0 {
		t.Fatalf("clean scan: %v %v", found, err)
	}
	patch := []byte{0xcc, 0xcc, 0xcc}
	old := tamper(t, pid, c.target, patch)
	found, _, err := w.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Kind != KindModified || found[0].Class != ClassText ||
		found[0].Start > c.target || found[0].End <= c.target || found[0].Differing != diffBytes(old, patch) {
		t.Fatalf("after patching %#x: findings %v", c.target, found)
	}
	// Reported once, not on every scan.
	if again, _, err := w.Scan(); err != nil || len(again) > 0 {
		t.Fatalf("second scan: %v %v", again, err)
	}
	rep, err := w.Scrub(context.Background())
	if err != nil {
		t.Fatalf("Scrub: %v", err)
	}
	if !rep.Verified || rep.PagesRestored != 1 || rep.BytesRestored != found[0].Differing {
		t.Fatalf("scrub report %+v", rep)
	}
	if got := readMem(t, pid, c.target, len(old)); !bytes.Equal(got, old) {
		t.Fatalf("after scrub %#x holds % x, want % x", c.target, got, old)
	}
	c.ticking(t)
	if found, _, err := w.Scan(); err != nil || len(found) > 0 {
		t.Fatalf("scan after scrub: %v %v", found, err)
	}
}

func TestWatcherExecMappingAndScrub(t *testing.T) {
	c := startChild(t)
	pid := c.cmd.Process.Pid
	w, _ := newWatcher(t, pid, Config{Accel: "kvm"})
	if err := c.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var addr uint64
	if _, err := fmt.Sscanf(c.next(t, "rwx "), "rwx %x", &addr); err != nil {
		t.Fatal(err)
	}
	found, _, err := w.Scan()
	if err != nil {
		t.Fatal(err)
	}
	var hit *Finding
	for i := range found {
		if found[i].Kind == KindExecMapping && found[i].Start <= addr && addr < found[i].End {
			hit = &found[i]
		}
	}
	if hit == nil {
		t.Fatalf("no exec-mapping finding for %#x: %v", addr, found)
	}
	rep, err := w.Scrub(context.Background())
	if err != nil {
		t.Fatalf("Scrub: %v", err)
	}
	if !rep.Verified || len(rep.Reprotected) == 0 {
		t.Fatalf("scrub report %+v", rep)
	}
	if perms := permsAt(t, pid, addr); strings.Contains(perms, "x") {
		t.Fatalf("after scrub %#x is %s", addr, perms)
	}
	c.ticking(t)
}

func TestWatcherRun(t *testing.T) {
	c := startChild(t)
	pid := c.cmd.Process.Pid
	w, _ := newWatcher(t, pid, Config{Period: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Finding, 16)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx, func(f Finding) { got <- f }) }()
	time.Sleep(30 * time.Millisecond)
	tamper(t, pid, c.target+8, []byte{0x90})
	t0 := time.Now()
	select {
	case f := <-got:
		if f.Kind != KindModified {
			t.Fatalf("finding %v", f)
		}
		t.Logf("found in %v: %v", time.Since(t0), f)
	case <-time.After(2 * time.Second):
		t.Fatal("no finding within 2s")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func permsAt(t *testing.T, pid int, addr uint64) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	maps, err := ParseMaps(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if m.Start <= addr && addr < m.End {
			return m.Perms
		}
	}
	return "unmapped"
}
