package memwatch

import (
	"fmt"
	"time"
)

// Tracking chooses how a scan finds the watched pages to check.
type Tracking int

const (
	// TrackAuto picks TrackSoftDirty where the kernel supports
	// soft-dirty bits, TrackPrivate elsewhere.
	TrackAuto Tracking = iota
	// TrackSoftDirty checks text and rodata pages that have a private
	// copy (see TrackPrivate) and RELRO pages whose soft-dirty bit says
	// they were written since the last scan; every scan then clears
	// QEMU's soft-dirty bits (writes "4" to /proc/PID/clear_refs).
	TrackSoftDirty
	// TrackPrivate checks text and rodata pages that have a private
	// copy: in a read-only private file mapping a page stops being the
	// page-cache page only when something writes to it, so a tamper
	// shows in /proc/PID/pagemap without soft-dirty support. RELRO
	// pages are private copies from the start (the loader relocated
	// them), so only the sweep checks them.
	TrackPrivate
	// TrackFull checks every watched page on every scan.
	TrackFull
)

func (t Tracking) String() string {
	switch t {
	case TrackAuto:
		return "auto"
	case TrackSoftDirty:
		return "soft-dirty"
	case TrackPrivate:
		return "private"
	case TrackFull:
		return "full"
	}
	return fmt.Sprintf("tracking(%d)", int(t))
}

// PageScan chooses how a scan learns which watched pages have a private
// copy (and, under TrackSoftDirty, which were written since the last
// scan). Both ways give the same pages; they differ in cost.
type PageScan int

const (
	// PageScanAuto picks PageScanIoctl where the kernel has
	// PAGEMAP_SCAN (Linux 6.7+, see PagemapScanSupported),
	// PageScanRead elsewhere (Debian 12's 6.1).
	PageScanAuto PageScan = iota
	// PageScanIoctl asks the kernel with the PAGEMAP_SCAN ioctl on
	// /proc/PID/pagemap for the runs of watched pages that are present
	// or swapped and not page-cache pages: one ioctl per range of
	// watched mappings, answered with the few runs that match.
	PageScanIoctl
	// PageScanRead reads the 8-byte /proc/PID/pagemap entry of every
	// watched page and decides from its bits (PagemapEntry.Private).
	PageScanRead
)

func (p PageScan) String() string {
	switch p {
	case PageScanAuto:
		return "auto"
	case PageScanIoctl:
		return "pagemap-scan"
	case PageScanRead:
		return "pagemap-read"
	}
	return fmt.Sprintf("pagescan(%d)", int(p))
}

// Watch selects what memwatch watches; the zero value watches all.
type Watch uint

const (
	WatchText     Watch = 1 << iota // executable code of QEMU and its libraries
	WatchRodata                     // their read-only data
	WatchRELRO                      // their relocated read-only data
	WatchMappings                   // stray executable memory, protection changes of watched mappings
	WatchAll      = WatchText | WatchRodata | WatchRELRO | WatchMappings
)

// Defaults of Config.
//
// The period trades detection latency for CPU: a steady scan of QEMU
// 7.2 (44 MiB watched) costs about 0.5 ms, mostly the kernel producing
// /proc/PID/maps and /proc/PID/pagemap, so 80 ms keeps the watcher near
// 0.6% of a core while a tamper is found within 100 ms.
const (
	DefaultPeriod      = 80 * time.Millisecond
	DefaultSweepPeriod = 10 * time.Second
)

// Config says what memwatch watches and how often.
type Config struct {
	// Period between scans; DefaultPeriod when zero. A tamper of text
	// is found within one period (plus the scan's own time).
	Period time.Duration
	// SweepPeriod is the time in which the sweep checks every watched
	// page once, a slice per scan; DefaultSweepPeriod when zero,
	// negative to turn the sweep off. The sweep catches what tracking
	// misses: RELRO writes without soft-dirty bits, and changes of the
	// files themselves in the page cache.
	SweepPeriod time.Duration
	Tracking    Tracking
	// PageScan is how scans find the pages to check; PageScanAuto
	// when zero. PageScanIoctl on a kernel without PAGEMAP_SCAN is an
	// error of New.
	PageScan PageScan
	Watch    Watch
	// Accel is QEMU's accelerator, "kvm" or "tcg". Under TCG the
	// translation buffer is executable by design and excluded: it is
	// TCGBuffer when set, otherwise the largest anonymous
	// writable-and-executable mapping at baseline time (see tcgBuffer).
	// Under KVM no anonymous executable memory is legitimate.
	Accel     string
	TCGBuffer Range
	// LibraryDirs are directories whose files QEMU may map executable
	// after the baseline without a finding (QEMU's modules); the
	// directories of the files mapped at baseline are always included.
	LibraryDirs []string
	// Cache is the directory of the baseline cache (see cache_linux.go):
	// digests of the pages of the ELF files QEMU maps, shared by the
	// watchers of a host so that a file watched before is not read at
	// baseline. Empty for none. It must belong to the process's
	// effective user or root and be writable by nobody else, or it is
	// not used (Coverage.Cache.Off says why).
	Cache string
	// Injecting, when set, is told of every syscall the scrub is about
	// to make a frozen QEMU thread issue (thread id, syscall number and
	// its register arguments) and calls the returned function once the
	// call is done. A supervisor whose seccomp filter sees QEMU's calls
	// uses it to recognise its own repair (an mprotect that gives code
	// back its execute right) instead of judging it an attack.
	Injecting func(tid, nr int, args [3]uint64) (done func())
	// Scanned, when set, is told of every scan Run makes: what it did and
	// how many findings it made (metrics).
	Scanned func(st ScanStats, findings int)
}

func (c Config) withDefaults() (Config, error) {
	if c.Period == 0 {
		c.Period = DefaultPeriod
	}
	if c.Period < 0 {
		return c, fmt.Errorf("memwatch period %v: must be positive", c.Period)
	}
	if c.SweepPeriod == 0 {
		c.SweepPeriod = DefaultSweepPeriod
	}
	if c.Watch == 0 {
		c.Watch = WatchAll
	}
	switch c.Accel {
	case "", "kvm", "tcg":
	default:
		return c, fmt.Errorf("memwatch accel %q: want kvm or tcg", c.Accel)
	}
	if c.Tracking < TrackAuto || c.Tracking > TrackFull {
		return c, fmt.Errorf("memwatch tracking %d: unknown", int(c.Tracking))
	}
	if c.PageScan < PageScanAuto || c.PageScan > PageScanRead {
		return c, fmt.Errorf("memwatch page scan %d: unknown", int(c.PageScan))
	}
	return c, nil
}

// Coverage is what a baseline covers, for the supervisor's start event.
type Coverage struct {
	Tracking      Tracking // the tracking in use (never TrackAuto)
	PageScan      PageScan // how scans find pages to check (never PageScanAuto)
	Files         int      // ELF files watched
	Mappings      int      // mappings watched
	Bytes         uint64   // bytes watched in all
	TextBytes     uint64
	RodataBytes   uint64
	RELROBytes    uint64
	ComparedBytes uint64 // checked against the files on disk (text, rodata)
	HashedBytes   uint64 // hashed as found (RELRO): not checked against the files
	TCGBuffer     Range  // excluded translation buffer; empty under KVM
	Skipped       []Skipped
	Cache         CacheStats // how the baseline used the cache (Config.Cache)
}

// Skipped is a mapping memwatch could not watch, and why.
type Skipped struct {
	Mapping Mapping
	Reason  string
}

// CacheStats says how a baseline used the cache.
type CacheStats struct {
	Dir string
	// Off says why the cache is not used ("" when it is): turned off, or
	// a directory that is not safe to trust.
	Off     string
	Hits    int // files whose digests came from the cache
	Misses  int // files hashed (and written to the cache)
	Written int // entries written
	// Stale counts entries found for an earlier version of a file (or
	// an earlier file with the same inode): misses, replaced.
	Stale int
	// Unsettled counts misses not written because the file had changed
	// too recently for its ctime to vouch for it (memwatch's
	// settleWindow); a later VM writes them.
	Unsettled int
	// Ignored lists entries read back and not used (corrupt, another
	// format version, unsafe owner or mode), and entries that could not
	// be written; each is also a miss.
	Ignored []string
}

func (s CacheStats) String() string {
	if s.Off != "" {
		return "cache off: " + s.Off
	}
	str := fmt.Sprintf("cache %s: %d hits, %d misses (hashed)", s.Dir, s.Hits, s.Misses)
	if s.Stale > 0 {
		str += fmt.Sprintf(", %d entries of changed files replaced", s.Stale)
	}
	if len(s.Ignored) > 0 {
		str += fmt.Sprintf(", %d entries ignored", len(s.Ignored))
	}
	return str
}
