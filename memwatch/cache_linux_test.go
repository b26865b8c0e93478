package memwatch

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// copyFile copies src to dst (mode 0755) and returns dst.
func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func statFile(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return st
}

// entryFile is the cache entry of file p in dir.
func entryFile(t *testing.T, dir, p string) string {
	t.Helper()
	st := statFile(t, p)
	return (&baseCache{dir: dir}).path(keyOf(&st))
}

func testExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// fileOffset is the offset in its file of address addr of pid.
func fileOffset(t *testing.T, pid int, addr uint64) uint64 {
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
		if addr >= m.Start && addr < m.End {
			return m.Offset + addr - m.Start
		}
	}
	t.Fatalf("%#x is in no mapping of %d", addr, pid)
	return 0
}

// payload tampers with the child's text through /proc/PID/mem and
// restores it, scanning after each step with every watcher, and returns
// each watcher's findings, step by step.
func payload(t *testing.T, c *child, ws []*Watcher) []string {
	t.Helper()
	pid := c.cmd.Process.Pid
	out := make([]string, len(ws))
	scanAll := func(step string) {
		t.Helper()
		for i, w := range ws {
			f, _, err := w.Scan()
			if err != nil {
				t.Fatalf("%s: scan of watcher %d: %v", step, i, err)
			}
			out[i] += step + ":\n" + findingsKey(f)
		}
	}
	scanAll("clean")
	patch := []byte{0xcc, 0xcc, 0xcc}
	old := tamper(t, pid, c.target, patch)
	scanAll("tampered")
	tamper(t, pid, c.target, old)
	scanAll("restored")
	old = tamper(t, pid, c.target+4, patch)
	scanAll("tampered again")
	tamper(t, pid, c.target+4, old)
	scanAll("restored again")
	return out
}

// TestCacheSameFindings watches one child without the cache, with an
// empty cache (which it fills) and with the filled cache, with each
// tracking and each way of finding pages, and checks that all report
// the same findings of the same tampers, and nothing on clean scans.
func TestCacheSameFindings(t *testing.T) {
	for _, tr := range trackings(t) {
		for _, ps := range pageScans(t) {
			t.Run(tr.String()+"/"+ps.String(), func(t *testing.T) {
				c := startChild(t)
				pid := c.cmd.Process.Pid
				dir := filepath.Join(t.TempDir(), "cache")
				cfg := Config{Tracking: tr, PageScan: ps, SweepPeriod: -1}
				off, offCov := newWatcher(t, pid, cfg)
				cfg.Cache = dir
				cold, coldCov := newWatcher(t, pid, cfg)
				warm, warmCov := newWatcher(t, pid, cfg)
				if offCov.Cache.Off == "" {
					t.Errorf("no cache configured, yet the cache is on: %+v", offCov.Cache)
				}
				if c := coldCov.Cache; c.Off != "" || c.Misses != coldCov.Files || c.Written != coldCov.Files || c.Hits != 0 {
					t.Errorf("empty cache: %+v for %d files", c, coldCov.Files)
				}
				if c := warmCov.Cache; c.Off != "" || c.Hits != warmCov.Files || c.Misses != 0 || len(c.Ignored) != 0 {
					t.Errorf("filled cache: %+v for %d files", c, warmCov.Files)
				}
				got := payload(t, c, []*Watcher{off, cold, warm})
				if !strings.Contains(got[0], "tampered:\nmodified text") || !strings.Contains(got[0], "tampered again:\nmodified text") {
					t.Fatalf("without the cache the tampers were not found:\n%s", got[0])
				}
				if got[1] != got[0] || got[2] != got[0] {
					t.Fatalf("findings differ\nwithout cache:\n%s\nempty cache:\n%s\nfilled cache:\n%s", got[0], got[1], got[2])
				}
			})
		}
	}
}

// TestCacheScrub is the tamper and scrub test with a filled cache: the
// page scrubbed is restored from the file, checked against its digest.
func TestCacheScrub(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	c := startChild(t)
	newWatcher(t, c.cmd.Process.Pid, Config{Cache: dir, SweepPeriod: -1}) // fills it
	for _, ps := range pageScans(t) {
		t.Run(ps.String(), func(t *testing.T) { testTamperAndScrub(t, Config{Cache: dir, PageScan: ps, SweepPeriod: -1}) })
	}
}

// TestCacheBadEntry spoils the entry of the child's file in each way and
// checks the entry is ignored, the file hashed again and the entry
// rewritten, with the same findings as without the cache.
func TestCacheBadEntry(t *testing.T) {
	exe := testExe(t)
	spoil := []struct {
		name, why string
		f         func(t *testing.T, p string, b []byte) []byte
	}{
		{"empty", "not a memwatch cache entry", func(*testing.T, string, []byte) []byte { return nil }},
		{"garbage", "not a memwatch cache entry", func(t *testing.T, _ string, b []byte) []byte {
			g := make([]byte, len(b))
			if _, err := rand.Read(g); err != nil {
				t.Fatal(err)
			}
			return g
		}},
		{"truncated", "checksum mismatch", func(_ *testing.T, _ string, b []byte) []byte { return b[:len(b)/2] }},
		{"flipped", "checksum mismatch", func(_ *testing.T, _ string, b []byte) []byte {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 1
			return b
		}},
		{"version", "format \"kfv memwatch pages 9\"", func(_ *testing.T, _ string, b []byte) []byte {
			return append([]byte("kfv memwatch pages 9\n"), b[len(cacheMagic):]...)
		}},
		{"key", "", func(t *testing.T, _ string, b []byte) []byte {
			st := statFile(t, exe)
			e, err := decodeEntry(b, keyOf(&st))
			if err != nil {
				t.Fatal(err)
			}
			e.key.Ctime++ // a consistent entry, for another ctime
			return e.encode()
		}},
		{"group-writable", "writable by its group or others", func(t *testing.T, p string, b []byte) []byte {
			if err := os.Chmod(p, 0o664); err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"other owner", "belongs to uid 65534", func(t *testing.T, p string, b []byte) []byte {
			needRoot(t)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return b
		}},
	}
	c := startChild(t)
	pid := c.cmd.Process.Pid
	off, _ := newWatcher(t, pid, Config{SweepPeriod: -1, Tracking: TrackFull})
	for _, s := range spoil {
		t.Run(s.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			cfg := Config{Cache: dir, SweepPeriod: -1, Tracking: TrackFull}
			newWatcher(t, pid, cfg) // fills it
			p := entryFile(t, dir, exe)
			good, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, s.f(t, p, good), 0); err != nil {
				t.Fatal(err)
			}
			w, cov := newWatcher(t, pid, cfg)
			cs := cov.Cache
			if s.why == "" {
				if cs.Hits != 0 || cs.Misses != 1 || cs.Written != 1 || cs.Stale != 1 || len(cs.Ignored) != 0 {
					t.Fatalf("cache with a stale entry: %+v, want 1 miss, 1 stale, 1 written, none ignored", cs)
				}
			} else if cs.Hits != 0 || cs.Misses != 1 || cs.Written != 1 || len(cs.Ignored) != 1 || !strings.Contains(cs.Ignored[0], s.why) {
				t.Fatalf("cache with the entry spoilt: %+v, want 1 miss, 1 written, 1 ignored saying %q", cs, s.why)
			}
			if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, good) {
				t.Fatalf("entry not rewritten as it was (%d bytes, %d before): %v", len(b), len(good), err)
			}
			if st := statFile(t, p); st.Uid != uint32(os.Geteuid()) || st.Mode&0o077 != 0 {
				t.Errorf("rewritten entry uid %d mode %#o", st.Uid, st.Mode&0o777)
			}
			if _, cov := newWatcher(t, pid, cfg); cov.Cache.Hits != 1 || cov.Cache.Misses != 0 {
				t.Errorf("after the rewrite: %+v, want 1 hit", cov.Cache)
			}
			got := payload(t, c, []*Watcher{off, w})
			if got[0] != got[1] || !strings.Contains(got[1], "tampered:\nmodified text") {
				t.Fatalf("findings differ\nwithout cache:\n%s\nwith the spoilt entry:\n%s", got[0], got[1])
			}
		})
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
}

// TestCacheUntrustedDir checks that a cache directory someone else could
// write is not used at all: its entries are neither read nor written.
func TestCacheUntrustedDir(t *testing.T) {
	c := startChild(t)
	pid := c.cmd.Process.Pid
	for _, s := range []struct {
		name, why string
		f         func(t *testing.T, dir string) string
	}{
		{"group-writable", "is writable by its group or others (mode 0775)", func(t *testing.T, dir string) string {
			if err := os.Chmod(dir, 0o775); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"world-writable sticky", "is writable by its group or others (mode 01777)", func(t *testing.T, dir string) string {
			if err := unix.Chmod(dir, 0o1777); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"other owner", "belongs to uid 65534", func(t *testing.T, dir string) string {
			needRoot(t)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"symlink", "is not a directory", func(t *testing.T, dir string) string {
			l := dir + ".link"
			if err := os.Symlink(dir, l); err != nil {
				t.Fatal(err)
			}
			return l
		}},
	} {
		t.Run(s.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			newWatcher(t, pid, Config{Cache: dir, SweepPeriod: -1}) // fills it
			entries := func() []string {
				es, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				var n []string
				for _, e := range es {
					n = append(n, e.Name())
				}
				return n
			}
			before := entries()
			// An entry that would be found, were the directory used, and
			// spoilt so that using it would be seen.
			p := entryFile(t, dir, testExe(t))
			if err := os.WriteFile(p, []byte("spoilt"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, cov := newWatcher(t, pid, Config{Cache: s.f(t, dir), SweepPeriod: -1})
			if cs := cov.Cache; !strings.Contains(cs.Off, s.why) || cs.Hits+cs.Misses+cs.Written != 0 || len(cs.Ignored) != 0 {
				t.Fatalf("untrusted cache directory: %+v, want it off saying %q", cs, s.why)
			}
			if !strings.HasPrefix(cov.Cache.String(), "cache off: ") {
				t.Errorf("cache stats read %q", cov.Cache)
			}
			if b, _ := os.ReadFile(p); string(b) != "spoilt" || fmt.Sprint(entries()) != fmt.Sprint(before) {
				t.Errorf("the untrusted directory was written: %v, entry %q", entries(), b)
			}
		})
	}
}

// TestCacheFileTamperedOnDisk copies this test binary, watches it
// (filling the cache), tampers with the copy on disk in place (same
// size, its mtime set back) and watches it again: the copy must miss
// the cache and be hashed anew. A key of path, size and mtime alone
// would hit; the watcher would then take its pages from the old digests
// and find the file's page changed.
func TestCacheFileTamperedOnDisk(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cache")
	exe := copyFile(t, testExe(t), filepath.Join(tmp, "exe"))
	cfg := Config{Cache: dir, SweepPeriod: -1}
	c := startChildOf(t, exe)
	_, cov := newWatcher(t, c.cmd.Process.Pid, cfg)
	if cov.Cache.Written != 1 {
		t.Fatalf("first watch: %+v", cov.Cache)
	}
	off := fileOffset(t, c.cmd.Process.Pid, c.target)
	c.stop(t)

	before := statFile(t, exe)
	entry, err := os.ReadFile(entryFile(t, dir, exe))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(exe, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	orig := make([]byte, 3)
	if _, err := f.ReadAt(orig, int64(off)); err != nil {
		t.Fatal(err)
	}
	patched := []byte{orig[0] ^ 0xff, orig[1] ^ 0xff, orig[2] ^ 0xff}
	if _, err := f.WriteAt(patched, int64(off)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // past the coarse clock's tick: a new ctime
	if err := os.Chtimes(exe, time.Unix(before.Atim.Unix()), time.Unix(before.Mtim.Unix())); err != nil {
		t.Fatal(err)
	}
	after := statFile(t, exe)
	old, err := decodeEntry(entry, keyOf(&before))
	if err != nil {
		t.Fatal(err)
	}
	// The premise: only ctime tells the two contents apart.
	if old.key.Dev != after.Dev || old.key.Ino != after.Ino || old.key.Size != after.Size || old.key.Mtime != after.Mtim.Nano() || old.key.Ctime == after.Ctim.Nano() {
		t.Fatalf("cached key %+v, file now %+v: want all but ctime equal", old.key, keyOf(&after))
	}

	c = startChildOf(t, exe)
	pid := c.cmd.Process.Pid
	w, cov := newWatcher(t, pid, cfg)
	if cs := cov.Cache; cs.Hits != 0 || cs.Misses != 1 || cs.Written != 1 || cs.Stale != 1 || len(cs.Ignored) != 0 {
		t.Fatalf("tampered copy: %+v, want a miss for a stale entry", cs)
	}
	// Hashed anew: QEMU's memory is the tampered file, which is now the
	// baseline (a file tampered before QEMU maps it is memwatch's
	// reference, as without a cache).
	if found, _, err := w.ScanFull(); err != nil || len(found) != 0 {
		t.Fatalf("full scan after the rehash: %v %v", found, err)
	}
	// The original bytes written into memory differ from the file.
	target := c.target
	if got := readMem(t, pid, target, 3); !bytes.Equal(got, patched) {
		t.Fatalf("the child's text holds % x, the tampered file % x", got, patched)
	}
	tamper(t, pid, target, orig)
	found, _, err := w.Scan()
	if err != nil || len(found) != 1 || found[0].Kind != KindModified || found[0].Differing != 3 {
		t.Fatalf("after writing the original bytes back into memory: %v %v", found, err)
	}
}

// TestCacheFileChangedWhileMapped changes on disk a file the child maps,
// after the baseline, and checks that the sweep finds it with the cache
// (the page still pending: its digest), with an empty cache and without
// one (the page's hash).
func TestCacheFileChangedWhileMapped(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cache")
	lib := copyFile(t, testExe(t), filepath.Join(tmp, "lib.so"))
	c := startChildOf(t, testExe(t), childMapEnv+"="+lib)
	var base uint64
	if _, err := fmt.Sscanf(c.next(t, "mapped "), "mapped %x", &base); err != nil {
		t.Fatal(err)
	}
	pid := c.cmd.Process.Pid
	// Every scan sweeps every page.
	cfg := Config{SweepPeriod: DefaultPeriod, Tracking: TrackPrivate}
	off, _ := newWatcher(t, pid, cfg)
	cfg.Cache = dir
	cold, cov := newWatcher(t, pid, cfg)
	if cov.Cache.Written != 2 { // the test binary and the mapped copy
		t.Fatalf("empty cache: %+v", cov.Cache)
	}
	warm, cov := newWatcher(t, pid, cfg)
	if cov.Cache.Hits != 2 {
		t.Fatalf("filled cache: %+v", cov.Cache)
	}
	for i, w := range []*Watcher{off, cold} {
		if found, _, err := w.Scan(); err != nil || len(found) != 0 {
			t.Fatalf("watcher %d, clean scan: %v %v", i, found, err)
		}
	}
	// warm has not scanned: its pages of the copy are all pending.
	pending := 0
	for _, r := range warm.regions {
		for i := range r.pages() {
			if r.pending(i) {
				pending++
			}
		}
	}
	if pending == 0 {
		t.Fatal("no page pending after a baseline from the cache")
	}

	at := fileOffset(t, pid, c.target) // a page of a PT_LOAD segment
	f, err := os.OpenFile(lib, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xcc, 0xcc, 0xcc, 0xcc}, int64(at)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	page := base + at/PageSize*PageSize
	for i, w := range []*Watcher{off, cold, warm} {
		found, _, err := w.Scan()
		if err != nil || len(found) != 1 || found[0].Kind != KindModified || found[0].Start != page || found[0].End != page+PageSize ||
			found[0].Mapping.Path != lib || !strings.Contains(found[0].Detail, "changed on disk") {
			t.Fatalf("watcher %d after the change of %s at %#x (page %#x): %v %v", i, lib, at, page, found, err)
		}
		t.Logf("watcher %d: %s %#x-%#x %s: %s", i, found[0].Kind, found[0].Start, found[0].End, found[0].Class, found[0].Detail)
	}
}

// startIdleQEMU starts QEMU as startQEMU does, without the watcher.
func startIdleQEMU(tb testing.TB) int {
	tb.Helper()
	cmd := exec.Command(qemuBinary(tb), "-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-monitor", "none", "-serial", "none")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill() // the wait below reports how it ended
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// timedBaseline waits for pid's mappings to settle and times its
// baseline.
func timedBaseline(tb testing.TB, pid int, cfg Config) (*Watcher, Coverage, time.Duration) {
	tb.Helper()
	cfg.Accel = "tcg"
	w, err := New(pid, cfg)
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
	t0 := time.Now()
	cov, found, err := w.Baseline()
	d := time.Since(t0)
	if err != nil {
		tb.Fatal(err)
	}
	if len(found) > 0 {
		tb.Fatalf("findings at baseline of QEMU: %v", found)
	}
	cov.Cache = w.CacheFilled() // entries written in the background
	return w, cov, d
}

// TestCacheQEMU baselines QEMU and its libraries without the cache, with
// an empty one and with the filled one (a second VM), and checks that a
// full scan of the last, which takes every pending page's hash against
// its digest, finds nothing. It logs the baselines' times.
func TestCacheQEMU(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	var times [3]time.Duration
	var covs [3]Coverage
	var ws [3]*Watcher
	for i, cache := range []string{"", dir, dir} {
		pid := startIdleQEMU(t)
		ws[i], covs[i], times[i] = timedBaseline(t, pid, Config{Cache: cache, SweepPeriod: -1})
	}
	if c := covs[1].Cache; c.Misses != covs[1].Files || c.Written != c.Misses {
		t.Errorf("empty cache: %+v for %d files", c, covs[1].Files)
	}
	if c := covs[2].Cache; c.Hits != covs[2].Files || c.Misses != 0 {
		t.Errorf("filled cache: %+v for %d files", c, covs[2].Files)
	}
	if covs[0].Bytes != covs[2].Bytes || covs[0].ComparedBytes != covs[2].ComparedBytes {
		t.Errorf("coverage differs: without cache %+v, from the cache %+v", covs[0], covs[2])
	}
	t0 := time.Now()
	found, st, err := ws[2].ScanFull()
	full := time.Since(t0)
	if err != nil || len(found) != 0 {
		t.Fatalf("full scan after a baseline from the cache: %v %v", found, err)
	}
	for _, r := range ws[2].regions {
		for i := range r.pages() {
			if r.pending(i) {
				t.Fatalf("page %#x still pending after a full scan", r.Start+uint64(i)*PageSize)
			}
		}
	}
	t0 = time.Now()
	if _, _, err := ws[2].ScanFull(); err != nil {
		t.Fatal(err)
	}
	full2 := time.Since(t0)
	t.Logf("QEMU %s: %d files, %d mappings, %d bytes (%d compared)", qemuBinary(t), covs[0].Files, covs[0].Mappings, covs[0].Bytes, covs[0].ComparedBytes)
	t.Logf("baseline: without cache %v, empty cache %v (%s), filled cache %v (%s)", times[0], times[1], covs[1].Cache, times[2], covs[2].Cache)
	t.Logf("first full scan from the cache %v (%d pages), the next %v", full, st.PagesChecked, full2)
}

// BenchmarkBaselineQEMU times the baseline of an idle QEMU without the
// cache, with an empty cache (the first VM of a host: the misses are
// hashed and written after the baseline, reported as fill-ns/op) and
// from a filled cache (the VMs after it). cpu-ns/op is the baseline's
// own CPU time (the benchmark's thread), which a busy machine does not
// inflate as it does wall time.
func BenchmarkBaselineQEMU(b *testing.B) {
	pid := startIdleQEMU(b)
	filled := filepath.Join(b.TempDir(), "cache")
	timedBaseline(b, pid, Config{Cache: filled, SweepPeriod: -1})
	for _, bc := range []struct{ name, cache string }{{"off", ""}, {"empty", ""}, {"filled", filled}} {
		b.Run(bc.name, func(b *testing.B) {
			var fill time.Duration
			var mib float64
			cpu := threadCPU(b)
			for b.Loop() {
				dir := bc.cache
				if bc.name == "empty" {
					b.StopTimer()
					dir = filepath.Join(b.TempDir(), "cache")
					b.StartTimer()
				}
				w, err := New(pid, Config{Accel: "tcg", Cache: dir, SweepPeriod: -1})
				if err != nil {
					b.Fatal(err)
				}
				cov, _, err := w.Baseline()
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				mib = float64(cov.Bytes) / (1 << 20)
				t0 := time.Now()
				w.CacheFilled()
				fill += time.Since(t0)
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				if bc.name == "filled" && cov.Cache.Hits != cov.Files {
					b.Fatalf("filled cache: %+v", cov.Cache)
				}
				b.StartTimer()
			}
			cpu(mib)
			if bc.name == "empty" {
				b.ReportMetric(float64(fill.Nanoseconds())/float64(b.N), "fill-ns/op")
			}
		})
	}
}

// TestSweepTrustsSettledFiles: the sweep reads a page-cache page only
// when its file may have changed. With every file settled, a scan that
// sweeps every page reads next to none of them; a file changed less
// than settleWindow before kfv looked at it is read on every sweep and
// gets no cache entry; and a write to a settled file is read and found.
func TestSweepTrustsSettledFiles(t *testing.T) {
	tmp := t.TempDir()
	lib := copyFile(t, testExe(t), filepath.Join(tmp, "lib.so"))
	c := startChildOf(t, testExe(t), childMapEnv+"="+lib)
	if _, err := fmt.Sscanf(c.next(t, "mapped "), "mapped %x", new(uint64)); err != nil {
		t.Fatal(err)
	}
	pid := c.cmd.Process.Pid
	cfg := Config{SweepPeriod: DefaultPeriod, Tracking: TrackPrivate} // every scan sweeps every page
	settled, _ := newWatcher(t, pid, cfg)
	_, st, err := settled.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if st.PagesChecked*10 > st.PagesTracked {
		t.Errorf("settled files: a full sweep read %d of %d pages", st.PagesChecked, st.PagesTracked)
	}

	defer func(w time.Duration) { settleWindow = w }(settleWindow)
	settleWindow = time.Hour // every file changed "just now"
	cfg.Cache = filepath.Join(tmp, "cache")
	racy, cov := newWatcher(t, pid, cfg)
	if cov.Cache.Written != 0 || cov.Cache.Unsettled != 2 || len(cov.Cache.Ignored) != 0 {
		t.Errorf("unsettled files: cache %+v, want nothing written and 2 unsettled", cov.Cache)
	}
	if _, st, err = racy.Scan(); err != nil {
		t.Fatal(err)
	}
	if st.PagesChecked != st.PagesTracked {
		t.Errorf("unsettled files: a full sweep read %d of %d pages", st.PagesChecked, st.PagesTracked)
	}

	at := fileOffset(t, pid, c.target)
	f, err := os.OpenFile(lib, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xcc, 0xcc, 0xcc, 0xcc}, int64(at)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	found, _, err := settled.Scan()
	if err != nil || len(found) != 1 || found[0].Mapping.Path != lib || !strings.Contains(found[0].Detail, "changed on disk") {
		t.Fatalf("settled watcher after a write to %s: %v %v", lib, found, err)
	}
}
