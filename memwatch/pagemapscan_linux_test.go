package memwatch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelAtLeast says whether the running kernel is major.minor or later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("kernel release %q", rel)
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		t.Fatalf("kernel release %q", rel)
	}
	return ma > major || ma == major && mi >= minor
}

// TestPagemapScanProbe checks the probe against the kernel's version: a
// 6.7+ kernel has PAGEMAP_SCAN, and memwatch must use it there.
func TestPagemapScanProbe(t *testing.T) {
	ok, err := PagemapScanSupported()
	if err != nil {
		t.Fatal(err)
	}
	if want := kernelAtLeast(t, 6, 7); ok != want {
		t.Fatalf("PagemapScanSupported = %v on a kernel where 6.7+ is %v", ok, want)
	}
	if !ok {
		t.Skip("no PAGEMAP_SCAN on this kernel: scans read pagemap")
	}
}

func needPagemapScan(t testing.TB) {
	t.Helper()
	if ok, err := PagemapScanSupported(); err != nil {
		t.Fatal(err)
	} else if !ok {
		t.Skip("no PAGEMAP_SCAN on this kernel (Linux 6.7+)")
	}
}

// TestPageScanChosen checks that New picks PAGEMAP_SCAN when the kernel
// has it, that the fallback can be forced, and that the baseline names
// the way chosen.
func TestPageScanChosen(t *testing.T) {
	needPagemapScan(t)
	c := startChild(t)
	for _, tc := range []struct{ ask, want PageScan }{
		{PageScanAuto, PageScanIoctl}, {PageScanIoctl, PageScanIoctl}, {PageScanRead, PageScanRead},
	} {
		w, cov := newWatcher(t, c.cmd.Process.Pid, Config{PageScan: tc.ask})
		if w.PageScan() != tc.want || cov.PageScan != tc.want {
			t.Errorf("asked %v: watcher uses %v, coverage says %v; want %v", tc.ask, w.PageScan(), cov.PageScan, tc.want)
		}
	}
	if _, err := New(c.cmd.Process.Pid, Config{PageScan: PageScan(7)}); err == nil || !strings.Contains(err.Error(), "page scan 7") {
		t.Errorf("unknown page scan: %v", err)
	}
}

// TestPageScanSamePages checks, on a child whose text was written
// through /proc/PID/mem (a private copy of a file page), that
// PAGEMAP_SCAN and reading pagemap give every watched page the same
// private and soft-dirty bits.
func TestPageScanSamePages(t *testing.T) {
	needPagemapScan(t)
	for _, tr := range trackings(t) {
		t.Run(tr.String(), func(t *testing.T) {
			c := startChild(t)
			pid := c.cmd.Process.Pid
			w, _ := newWatcher(t, pid, Config{Tracking: tr, SweepPeriod: -1})
			tamper(t, pid, c.target, []byte{0xcc})
			if tr == TrackSoftDirty {
				// Mark a page soft-dirty after the baseline's clear.
				tamper(t, pid, c.target+PageSize, readMem(t, pid, c.target+PageSize, 1))
			}
			w.mu.Lock()
			fast, err := w.pagemapScanAll()
			if err != nil {
				w.mu.Unlock()
				t.Fatalf("PAGEMAP_SCAN: %v", err)
			}
			fast = copyEntries(fast)
			slow, err := w.pagemapReadAll()
			w.mu.Unlock()
			if err != nil {
				t.Fatalf("read pagemap: %v", err)
			}
			var pages, private, dirty, diff int
			targetPrivate := false
			for ri, r := range w.regions {
				if len(fast[ri]) != r.pages() || len(slow[ri]) != r.pages() {
					t.Fatalf("region %#x: %d and %d entries for %d pages", r.Start, len(fast[ri]), len(slow[ri]), r.pages())
				}
				for i := range slow[ri] {
					f, s := fast[ri][i], slow[ri][i]
					pages++
					if f.Private() != s.Private() || (tr == TrackSoftDirty && f.SoftDirty() != s.SoftDirty()) {
						if diff++; diff <= 5 {
							t.Errorf("page %#x (%s): PAGEMAP_SCAN %#x, pagemap %#x", r.Start+uint64(i)*PageSize, r.Path, uint64(f), uint64(s))
						}
					}
					if s.Private() {
						private++
					}
					if s.SoftDirty() {
						dirty++
					}
					if addr := r.Start + uint64(i)*PageSize; addr <= c.target && c.target < addr+PageSize {
						targetPrivate = f.Private() && s.Private()
					}
				}
			}
			t.Logf("%d pages watched: %d private, %d soft-dirty; %d differ", pages, private, dirty, diff)
			if !targetPrivate {
				t.Fatalf("the written page %#x is not a private copy in both", c.target)
			}
			if tr == TrackSoftDirty && dirty == 0 {
				t.Fatal("no soft-dirty page after a write")
			}
		})
	}
}

func copyEntries(in [][]PagemapEntry) [][]PagemapEntry {
	out := make([][]PagemapEntry, len(in))
	for i, e := range in {
		out[i] = append([]PagemapEntry(nil), e...)
	}
	return out
}

// TestPageScanSameFindings watches one child with each way of finding
// pages and checks that the two report the same tamper of text, the
// same scrub, and nothing on clean scans.
func TestPageScanSameFindings(t *testing.T) {
	needPagemapScan(t)
	for _, tr := range trackings(t) {
		t.Run(tr.String(), func(t *testing.T) {
			c := startChild(t)
			pid := c.cmd.Process.Pid
			cfg := Config{Tracking: tr, SweepPeriod: -1}
			cfg.PageScan = PageScanIoctl
			fast, _ := newWatcher(t, pid, cfg)
			cfg.PageScan = PageScanRead
			slow, _ := newWatcher(t, pid, cfg)
			scanBoth := func(what string) (string, string) {
				t.Helper()
				ff, fst, err := fast.Scan()
				if err != nil {
					t.Fatalf("%s: PAGEMAP_SCAN scan: %v", what, err)
				}
				sf, sst, err := slow.Scan()
				if err != nil {
					t.Fatalf("%s: pagemap-read scan: %v", what, err)
				}
				if fst.Private != sst.Private || fst.PagesChecked != sst.PagesChecked || fst.SoftDirty != sst.SoftDirty {
					t.Errorf("%s: stats differ: PAGEMAP_SCAN %+v, pagemap-read %+v", what, fst, sst)
				}
				return findingsKey(ff), findingsKey(sf)
			}
			if f, s := scanBoth("clean"); f != "" || s != "" {
				t.Fatalf("clean scan: PAGEMAP_SCAN %q, pagemap-read %q", f, s)
			}
			patch := []byte{0xcc, 0xcc, 0xcc}
			old := tamper(t, pid, c.target, patch)
			f, s := scanBoth("tampered")
			if f != s {
				t.Fatalf("after the tamper: PAGEMAP_SCAN found %q, pagemap-read %q", f, s)
			}
			want := fmt.Sprintf("modified %s", ClassText)
			if !strings.Contains(f, want) || strings.Count(f, "\n") != 1 {
				t.Fatalf("after the tamper: found %q, want one %q", f, want)
			}
			// Both see the page back to the file's bytes (a private copy
			// still: the fallback and the fast path both read it from
			// /proc/PID/mem and find it clean).
			tamper(t, pid, c.target, old)
			if f, s := scanBoth("restored"); f != "" || s != "" {
				t.Fatalf("after restoring: PAGEMAP_SCAN %q, pagemap-read %q", f, s)
			}
			tamper(t, pid, c.target+4, patch)
			if f, s := scanBoth("tampered again"); f != s || f == "" {
				t.Fatalf("after the second tamper: PAGEMAP_SCAN %q, pagemap-read %q", f, s)
			}
		})
	}
}

func findingsKey(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s %s %#x-%#x differing %d\n", f.Kind, f.Class, f.Start, f.End, f.Differing)
	}
	return b.String()
}

// TestPageScanExit checks that a scan by PAGEMAP_SCAN of a process that
// exited fails with ErrExited rather than finding no private copy.
func TestPageScanExit(t *testing.T) {
	needPagemapScan(t)
	c := startChild(t)
	w, _ := newWatcher(t, c.cmd.Process.Pid, Config{PageScan: PageScanIoctl, SweepPeriod: -1})
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		found, _, err := w.Scan()
		if errors.Is(err, ErrExited) {
			if len(found) > 0 {
				t.Fatalf("findings with the exit: %v", found)
			}
			return
		}
		if err == nil && len(found) > 0 {
			t.Fatalf("scan of the exiting child found %v", found)
		}
		if time.Now().After(deadline) {
			t.Fatalf("scan 5s after the kill: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// qemuBinary is the QEMU the tests and benchmarks below watch:
// $KFV_QEMU, else the system's.
func qemuBinary(tb testing.TB) string {
	tb.Helper()
	q := os.Getenv("KFV_QEMU")
	if q == "" {
		q = "/usr/bin/qemu-system-x86_64"
	}
	if _, err := os.Stat(q); err != nil {
		tb.Skipf("no QEMU to watch: %v", err)
	}
	return q
}

// startQEMU starts an idle QEMU (no machine, TCG, stopped) and returns a
// watcher with a baseline of it: QEMU and its dozens of libraries, with
// RELRO (private copies from the start) and anonymous .bss between the
// watched mappings.
func startQEMU(tb testing.TB, cfg Config) (*Watcher, Coverage) {
	tb.Helper()
	cmd := exec.Command(qemuBinary(tb), "-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-monitor", "none", "-serial", "none")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill() // the wait below reports how it ended
		_ = cmd.Wait()
	})
	cfg.Accel = "tcg" // its translation buffer is executable
	w, err := New(cmd.Process.Pid, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := w.Close(); err != nil {
			tb.Error(err)
		}
	})
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if err := w.WaitStable(ctx, 200*time.Millisecond); err != nil {
		tb.Fatal(err)
	}
	cov, found, err := w.Baseline()
	if err != nil {
		tb.Fatal(err)
	}
	if len(found) > 0 {
		tb.Fatalf("findings at baseline of QEMU: %v", found)
	}
	return w, cov
}

// TestPageScanSamePagesQEMU is TestPageScanSamePages on QEMU: many
// mappings, RELRO pages that are private copies, gaps between mappings
// that hold anonymous memory (PAGEMAP_SCAN matches it; it must not
// count), and a text page copied by a write that keeps its bytes.
func TestPageScanSamePagesQEMU(t *testing.T) {
	needPagemapScan(t)
	w, cov := startQEMU(t, Config{PageScan: PageScanIoctl, SweepPeriod: -1})
	var text *region
	for _, r := range w.regions {
		if r.class[0] == ClassText && text == nil {
			text = r
		}
	}
	if text == nil {
		t.Fatal("no text region in QEMU")
	}
	addr := text.Start + (text.End-text.Start)/2/PageSize*PageSize
	pid := w.Pid()
	tamper(t, pid, addr, readMem(t, pid, addr, 1)) // a private copy, same bytes
	w.mu.Lock()
	fast, err := w.pagemapScanAll()
	if err == nil {
		fast = copyEntries(fast)
	}
	slow, err2 := w.pagemapReadAll()
	w.mu.Unlock()
	if err != nil || err2 != nil {
		t.Fatalf("PAGEMAP_SCAN: %v; read: %v", err, err2)
	}
	var pages, private, runs, diff int
	copied := false
	for ri, r := range w.regions {
		prev := false
		for i := range slow[ri] {
			f, s := fast[ri][i], slow[ri][i]
			pages++
			if f.Private() != s.Private() {
				if diff++; diff <= 5 {
					t.Errorf("page %#x (%s %s): PAGEMAP_SCAN %#x, pagemap %#x", r.Start+uint64(i)*PageSize, r.Path, r.class[i], uint64(f), uint64(s))
				}
			}
			if s.Private() {
				private++
				if !prev {
					runs++
				}
			}
			prev = s.Private()
			if r == text && r.Start+uint64(i)*PageSize == addr {
				copied = f.Private() && s.Private()
			}
		}
	}
	t.Logf("QEMU: %d mappings, %d MiB watched (%d pages): %d private in %d runs; %d differ", cov.Mappings, cov.Bytes>>20, pages, private, runs, diff)
	if !copied {
		t.Errorf("the text page written at %#x is not a private copy in both", addr)
	}
	if private < 2 || runs < 2 {
		t.Errorf("only %d private pages in %d runs: RELRO should be private copies", private, runs)
	}
	found, _, err := w.Scan()
	if err != nil || len(found) > 0 {
		t.Fatalf("scan after a write of the same bytes: %v %v", found, err)
	}
}

// BenchmarkPageScan measures how a scan learns which watched pages of
// QEMU have a private copy (pagemapAll), and a whole steady scan (Scan:
// maps, that, the pages to hash), by PAGEMAP_SCAN and by reading
// pagemap. KFV_QEMU picks the QEMU.
func BenchmarkPageScan(b *testing.B) {
	needPagemapScan(b)
	for _, ps := range []PageScan{PageScanIoctl, PageScanRead} {
		w, cov := startQEMU(b, Config{PageScan: ps, SweepPeriod: -1, Tracking: TrackPrivate})
		mib := float64(cov.Bytes) / (1 << 20)
		b.Run(ps.String()+"/pages", func(b *testing.B) {
			cpu := threadCPU(b)
			for b.Loop() {
				w.mu.Lock()
				_, err := w.pagemapAll()
				w.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
			cpu(mib)
		})
		b.Run(ps.String()+"/scan", func(b *testing.B) {
			cpu := threadCPU(b)
			for b.Loop() {
				if found, _, err := w.Scan(); err != nil || len(found) > 0 {
					b.Fatal(found, err)
				}
			}
			cpu(mib)
		})
	}
}

// threadCPU pins the benchmark to its thread and returns a function that
// reports the thread's CPU time (user and system) per iteration: on a
// busy machine wall time counts the waits for a core too.
func threadCPU(b *testing.B) func(mib float64) {
	runtime.LockOSThread()
	var r0 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &r0); err != nil {
		b.Fatal(err)
	}
	return func(mib float64) {
		var r1 unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &r1); err != nil {
			b.Fatal(err)
		}
		runtime.UnlockOSThread()
		ns := func(r unix.Rusage) int64 { return r.Utime.Nano() + r.Stime.Nano() }
		b.ReportMetric(float64(ns(r1)-ns(r0))/float64(b.N), "cpu-ns/op")
		b.ReportMetric(mib, "MiB-watched")
	}
}
