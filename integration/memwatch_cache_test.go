package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"kfv/memwatch"
	"kfv/memwatch/memwatchtest"
)

// TestMemwatchCacheSameFindings: on QEMU running the raw loop guest, a
// watcher whose baseline came from a filled cache (the second VM of a
// host) and one without a cache run side by side: the sweep of every
// page (which takes the cached watcher's pending hashes against the
// digests) finds nothing in either, a write into QEMU's text is found
// by both with the same range and count of bytes, and after the cached
// watcher's scrub neither finds anything.
func TestMemwatchCacheSameFindings(t *testing.T) {
	forEachAccel(t, func(t *testing.T, accel string) {
		m := mwLoopGuest(t, accel)
		dir := filepath.Join(t.TempDir(), "cache")
		first, err := memwatch.New(m.pid, memwatch.Config{Accel: accel, Cache: dir})
		if err != nil {
			t.Fatal(err)
		}
		cov, found, err := first.Baseline()
		if err != nil || len(found) > 0 {
			t.Fatalf("first baseline: %v %v", found, err)
		}
		if st := first.CacheFilled(); st.Off != "" || st.Misses != cov.Files || st.Written != cov.Files {
			t.Fatalf("empty cache: %+v for %d files", st, cov.Files)
		}
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}

		const sweep = 2 * time.Second
		_, chOff := mwWatch(t, m.pid, memwatch.Config{Accel: accel, SweepPeriod: sweep})
		w, ch := mwWatch(t, m.pid, memwatch.Config{Accel: accel, Cache: dir, SweepPeriod: sweep})
		if c := w.Coverage(); c.Cache.Hits != c.Files || c.Cache.Misses != 0 {
			t.Fatalf("filled cache: %+v for %d files", c.Cache, c.Files)
		}
		m.waitTicks(t, 27) // about three seconds: the sweep went round
		for name, c := range map[string]<-chan memwatch.Finding{"without cache": chOff, "from the cache": ch} {
			select {
			case f := <-c:
				t.Fatalf("benign run, watcher %s: %v", name, f)
			default:
			}
		}

		entry, err := memwatchtest.EntryPoint(m.pid)
		if err != nil {
			t.Fatal(err)
		}
		mwTamper(t, m.pid, entry, []byte{0xcc, 0xcc, 0xcc})
		modified := func(f memwatch.Finding) bool { return f.Kind == memwatch.KindModified }
		fOff, _ := mwExpect(t, chOff, time.Second, modified)
		f, lat := mwExpect(t, ch, time.Second, modified)
		t.Logf("found from the cache after %v: %v; without cache: %v", lat, f, fOff)
		if f.Start != fOff.Start || f.End != fOff.End || f.Class != fOff.Class || f.Differing != fOff.Differing || f.Differing == 0 {
			t.Fatalf("findings differ: from the cache %v, without cache %v", f, fOff)
		}
		rep, err := w.Scrub(context.Background())
		if err != nil || !rep.Verified || rep.PagesRestored != 1 || rep.BytesRestored != f.Differing {
			t.Fatalf("scrub from the cache: %+v %v", rep, err)
		}
		mwAssertPristine(t, m.pid, entry)
		m.waitTicks(t, 3)
		for name, c := range map[string]<-chan memwatch.Finding{"without cache": chOff, "from the cache": ch} {
			select {
			case f := <-c:
				t.Errorf("after the scrub, watcher %s: %v", name, f)
			default:
			}
		}
	})
}
