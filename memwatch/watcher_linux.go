package memwatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Watcher watches the memory of one QEMU process.
//
// Pages are fingerprinted with hash/maphash under a seed drawn at random
// for each Watcher, not with SHA-256: a scan hashes on every period, and
// maphash runs at memory speed where SHA-256 costs several times more
// CPU (see memwatchtest.Measure). The seed lives only in the
// supervisor's memory, so code running inside QEMU cannot compute a
// patch that keeps a page's fingerprint; and nothing is restored on the
// strength of a hash alone: scrub writes the file's bytes or the baseline
// copy.
type Watcher struct {
	pid   int
	pidfd *os.File
	mem   *os.File // /proc/PID/mem, read-write: memwatch alone opens it
	pmap  *os.File // /proc/PID/pagemap
	seed  maphash.Seed

	mu       sync.Mutex
	cfg      Config
	tracking Tracking
	pageScan PageScan // never PageScanAuto: chosen by New
	tcg      Range
	regions  []*region // sorted by Start
	watched  []Mapping // regions' mappings, same order
	files    map[fileKey]*watchedFile
	skip     map[Range]bool
	skipped  []Skipped
	lateDirs map[string]bool
	reported map[findingKey]bool
	sweepAt  int    // sweep cursor: index of the next page over all regions
	scanGen  uint64 // counts scans, for sameFileLocked
	baseDone bool
	cache    *baseCache // opened by Baseline; nil before

	// Reused from scan to scan, so that a steady scan allocates little.
	mapsFile *os.File // /proc/PID/maps, read with pread from 0
	mapsBuf  []byte
	lastMaps []byte // the maps text of the last diff
	pmBuf    []byte
	pmEnts   []PagemapEntry
	pmRuns   []pageRegion // PAGEMAP_SCAN's output
	pageBufs []byte       // two pages for checkLocked
	// relroLive is the RELRO baseline of one region, inflated for the
	// scan or scrub under way (relroOf); dropped when it ends.
	relroLive struct {
		r *region
		b []byte
	}
}

type fileKey struct {
	dev   string
	inode uint64
}

type watchedFile struct {
	path string
	f    *os.File // the mapped file itself, opened through /proc/PID/map_files
	img  *elfImage
	// entry holds the digests of the file's pages from the cache; nil
	// without a cache (its pages are then hashed at baseline).
	entry *cacheEntry
	// key is the file's identity and times, taken before its pages were
	// first read; settled says its ctime was then older than
	// settleWindow, so that a later change cannot share it.
	key     cacheKey
	settled bool
	// gen and same: in scan gen, the file still had key (sameFileLocked).
	gen  uint64
	same bool
}

// region is one watched mapping and its pages' baseline.
type region struct {
	Mapping
	file  *watchedFile
	class []Class
	hash  []uint64
	// relroZ is the baseline copy of the mapping when it holds RELRO
	// pages, compressed (compress/flate): RELRO is QEMU's own relocated
	// pointers, which only a scrub needs back, and kept raw it was a
	// third of an idle supervisor's memory (3.6 MiB for QEMU 7.2 and its
	// libraries, 0.3 MiB compressed).
	relroZ []byte
	// pend marks the text and rodata pages whose hash is not taken yet:
	// their file's digests came from the cache (see establish). nil
	// when none is.
	pend []bool
}

func (r *region) pages() int { return int((r.End - r.Start) / PageSize) }

type findingKey struct {
	kind       Kind
	start, end uint64
}

// New opens QEMU process pid for watching. pid must be QEMU at the time
// of the call (the caller's unreaped child, or a pid it holds a pidfd
// for): New opens a pidfd first, then /proc/PID/mem, then checks through
// the pidfd that the process still lives, so the files opened are that
// process's. Call Baseline once QEMU is up, then Run or Scan.
func New(pid int, cfg Config) (*Watcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("open pidfd of %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	w := &Watcher{pid: pid, pidfd: os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), cfg: cfg, seed: maphash.MakeSeed(),
		files: map[fileKey]*watchedFile{}, skip: map[Range]bool{}, lateDirs: map[string]bool{}, reported: map[findingKey]bool{}}
	for _, d := range cfg.LibraryDirs {
		w.lateDirs[filepath.Clean(d)] = true
	}
	if w.pageScan, err = choosePageScan(cfg.PageScan); err != nil {
		return nil, errors.Join(err, w.Close())
	}
	if w.mem, err = os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0); err != nil {
		return nil, errors.Join(fmt.Errorf("open memory of %d: %w", pid, err), w.Close())
	}
	if w.pmap, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err != nil {
		return nil, errors.Join(fmt.Errorf("open pagemap of %d: %w", pid, err), w.Close())
	}
	if w.mapsFile, err = os.Open(fmt.Sprintf("/proc/%d/maps", pid)); err != nil {
		return nil, errors.Join(fmt.Errorf("open maps of %d: %w", pid, err), w.Close())
	}
	if err := w.alive(); err != nil {
		return nil, errors.Join(err, w.Close())
	}
	return w, nil
}

// choosePageScan resolves PageScanAuto from what the kernel offers.
func choosePageScan(p PageScan) (PageScan, error) {
	if p == PageScanRead {
		return p, nil
	}
	ok, err := PagemapScanSupported()
	if err != nil {
		return 0, err
	}
	switch {
	case ok:
		return PageScanIoctl, nil
	case p == PageScanIoctl:
		return 0, errors.New("memwatch page scan pagemap-scan: this kernel has no PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7+); use pagemap-read")
	}
	return PageScanRead, nil
}

// PageScan says how this watcher's scans find the pages to check,
// chosen by New from Config.PageScan and the kernel (never
// PageScanAuto); Coverage.PageScan says the same.
func (w *Watcher) PageScan() PageScan { return w.pageScan }

// exitGrace is how long a failed scan waits for the process's exit before
// it counts as a scan failure.
const exitGrace = time.Second

// ErrExited is returned (wrapped) once the watched process has exited.
var ErrExited = errors.New("memwatch: process exited")

// alive checks through the pidfd that the process has not exited: a
// pidfd polls readable once its process has exited, zombie or not.
func (w *Watcher) alive() error { return w.aliveAfter(0) }

// aliveAfter is alive, waiting up to wait for the exit: a process that
// is exiting loses its memory (reads give EOF) a moment before its pidfd
// says so.
// exited turns the end of file a pagemap read meets into ErrExited: the
// kernel answers 0 bytes once the process's memory is gone (it is
// exiting; its pidfd may say so only later, when its last thread is
// done).
func (w *Watcher) exited(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("process %d: its memory is gone: %w", w.pid, ErrExited)
	}
	return err
}

func (w *Watcher) aliveAfter(wait time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(w.pidfd.Fd()), Events: unix.POLLIN}}
	deadline := time.Now().Add(wait)
	for {
		n, err := unix.Poll(fds, int(max(0, time.Until(deadline).Milliseconds())))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("process %d: %w", w.pid, os.NewSyscallError("poll", err))
		}
		if n > 0 {
			return fmt.Errorf("process %d: %w", w.pid, ErrExited)
		}
		return nil
	}
}

// Close releases the watcher's files, once the cache entries being
// written are done.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cache != nil {
		w.cache.close()
	}
	var errs []error
	for _, f := range []*os.File{w.mapsFile, w.pmap, w.mem, w.pidfd} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	for _, wf := range w.files {
		errs = append(errs, wf.f.Close())
	}
	w.files = map[fileKey]*watchedFile{}
	return errors.Join(errs...)
}

// Pid is the watched process.
func (w *Watcher) Pid() int { return w.pid }

func (w *Watcher) readMaps() ([]Mapping, error) {
	b, err := w.readMapsRaw()
	if err != nil {
		return nil, err
	}
	return ParseMaps(b)
}

// readMapsRaw reads the text of /proc/PID/maps into w.mapsBuf; the
// result is valid until the next call.
func (w *Watcher) readMapsRaw() ([]byte, error) {
	if cap(w.mapsBuf) == 0 {
		w.mapsBuf = make([]byte, 0, 64<<10)
	}
	b := w.mapsBuf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := w.mapsFile.ReadAt(b[len(b):cap(b)], int64(len(b)))
		b = b[:len(b)+n]
		if err == io.EOF || (err == nil && n == 0) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read maps: %w", err)
		}
	}
	w.mapsBuf = b
	return b, nil
}

// WaitStable waits until QEMU's file and executable mappings have not
// changed for quiet: the dynamic loader has finished and start-up has
// loaded its modules. It is a trigger for Baseline when the caller has
// none better (QEMU answering on QMP means its main loop runs).
func (w *Watcher) WaitStable(ctx context.Context, quiet time.Duration) error {
	var last string
	since := time.Now()
	for {
		maps, err := w.readMaps()
		if err != nil {
			return err
		}
		var b []byte
		for _, m := range maps {
			if fileBacked(&m) || m.Executable() {
				b = fmt.Appendf(b, "%x-%x %s %s\n", m.Start, m.End, m.Perms, m.Path)
			}
		}
		if s := string(b); s != last {
			last, since = s, time.Now()
		} else if time.Since(since) >= quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for stable mappings: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Baseline records the pristine state of QEMU's code and read-only data.
// Call it once QEMU is up: after its dynamic loader has relocated and
// protected RELRO, i.e. once QEMU's main loop runs (QMP answers), or
// after WaitStable. Text and rodata are compared with the ELF files on
// disk, so tampering done before the baseline is returned as findings;
// RELRO is hashed as found.
func (w *Watcher) Baseline() (Coverage, []Finding, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.baseDone {
		return Coverage{}, nil, errors.New("memwatch: baseline taken already")
	}
	maps, err := w.readMaps()
	if err != nil {
		return Coverage{}, nil, err
	}
	w.cache = openCache(w.cfg.Cache)
	w.tracking = w.cfg.Tracking
	if w.tracking == TrackAuto {
		w.tracking = TrackPrivate
		if ok, err := SoftDirtySupported(); err != nil {
			return Coverage{}, nil, err
		} else if ok {
			w.tracking = TrackSoftDirty
		}
	}
	if w.cfg.Accel == "tcg" {
		w.tcg = w.cfg.TCGBuffer
		if w.tcg.End <= w.tcg.Start {
			w.tcg = tcgBuffer(maps)
		}
	}
	for _, m := range maps {
		if watchable(&m) {
			w.lateDirs[filepath.Dir(m.Path)] = true
		}
	}
	now := time.Now()
	var found []Finding
	for _, m := range maps {
		if !watchable(&m) {
			continue
		}
		f, err := w.addRegionLocked(m, now)
		if err != nil {
			return Coverage{}, nil, err
		}
		found = append(found, f...)
	}
	if w.cfg.Watch&WatchMappings != 0 {
		mf, _ := mapsDiff(w.watched, maps, w.tcg, w.lateDirs, w.skip)
		found = append(found, w.newLocked(mf, now)...)
	}
	if w.tracking == TrackSoftDirty {
		if err := clearSoftDirty(w.pid); err != nil {
			return Coverage{}, nil, err
		}
	}
	w.baseDone = true
	w.cache.start()
	return w.coverageLocked(), found, nil
}

// CacheFilled waits until the files the baseline (or a scan, for a
// library loaded later) did not find in the cache are hashed and
// written to it, and returns what the cache did. The watcher writes
// them in the background: the baseline does not wait for the cache.
func (w *Watcher) CacheFilled() CacheStats {
	w.mu.Lock()
	c := w.cache
	w.mu.Unlock()
	if c == nil {
		return CacheStats{Off: "no baseline yet"}
	}
	return c.snapshot(true)
}

// Coverage reports what the baseline covers now (libraries loaded later
// are added as they appear).
func (w *Watcher) Coverage() Coverage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.coverageLocked()
}

func (w *Watcher) coverageLocked() Coverage {
	c := Coverage{Tracking: w.tracking, PageScan: w.pageScan, Files: len(w.files), Mappings: len(w.regions), TCGBuffer: w.tcg,
		Skipped: append([]Skipped(nil), w.skipped...)}
	if w.cache != nil {
		c.Cache = w.cache.snapshot(false)
	}
	for _, r := range w.regions {
		for _, cl := range r.class {
			c.Bytes += PageSize
			switch cl {
			case ClassText:
				c.TextBytes += PageSize
				c.ComparedBytes += PageSize
			case ClassRodata:
				c.RodataBytes += PageSize
				c.ComparedBytes += PageSize
			case ClassRELRO:
				c.RELROBytes += PageSize
				c.HashedBytes += PageSize
			}
		}
	}
	return c
}

// addRegionLocked starts watching mapping m: opens its file, classifies
// its pages and records their baseline. It returns findings for text
// and rodata pages that already differ from the file. A mapping that is
// not ELF is skipped (recorded with the reason), not an error.
//
// Preconditions: w.mu is held.
func (w *Watcher) addRegionLocked(m Mapping, now time.Time) ([]Finding, error) {
	key := fileKey{m.Dev, m.Inode}
	wf := w.files[key]
	if wf == nil {
		// map_files opens the very file mapped, even if the path was
		// since replaced or deleted.
		f, err := openMapped(w.pid, m)
		if err != nil {
			w.skipLocked(m, err.Error())
			return nil, nil
		}
		img, err := readELF(f)
		if err != nil {
			w.skipLocked(m, err.Error())
			return nil, f.Close()
		}
		wf = &watchedFile{path: m.Path, f: f, img: img}
		// Before anything of the file is read: a change after this
		// shows in its key.
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err == nil {
			wf.key = keyOf(&st)
			wf.settled = time.Now().UnixNano()-wf.key.Ctime > int64(settleWindow)
		}
		wf.entry = w.cache.entry(f, img)
		w.files[key] = wf
	}
	// The load bias comes from the file's first mapping (lowest address).
	first := m
	for _, o := range w.watched {
		if o.Dev == m.Dev && o.Inode == m.Inode && o.Start < first.Start {
			first = o
		}
	}
	bias, err := wf.img.bias(first)
	if err != nil {
		w.skipLocked(m, err.Error())
		return nil, nil
	}
	r := &region{Mapping: m, file: wf}
	n := r.pages()
	r.class = make([]Class, n)
	r.hash = make([]uint64, n)
	hasRELRO := false
	for i := range n {
		r.class[i] = wf.img.classify(m.Start+uint64(i)*PageSize-bias, m.Executable())
		hasRELRO = hasRELRO || r.class[i] == ClassRELRO
	}
	var live []byte
	if hasRELRO {
		live = make([]byte, m.End-m.Start)
		if _, err := w.mem.ReadAt(live, int64(m.Start)); err != nil {
			return nil, fmt.Errorf("baseline %s relro at %#x: %w", m.Path, m.Start, err)
		}
		if r.relroZ, err = deflate(live); err != nil {
			return nil, fmt.Errorf("baseline %s relro: %w", m.Path, err)
		}
	}
	// The file's pages are hashed one at a time through one buffer: a
	// copy of every mapping at once would double the supervisor's memory
	// for the length of the baseline (QEMU's code alone is tens of MiB).
	// Pages whose digest the cache holds are not read now: the first
	// check of each takes its hash (establish).
	page := make([]byte, PageSize)
	for i := range n {
		p := page
		if r.class[i] == ClassRELRO {
			p = live[i*PageSize : (i+1)*PageSize]
		} else if wf.entry.digest(m.Offset+uint64(i)*PageSize) != nil {
			if r.pend == nil {
				r.pend = make([]bool, n)
			}
			r.pend[i] = true
			continue
		} else if err := readPage(wf.f, m.Offset+uint64(i)*PageSize, page); err != nil {
			return nil, fmt.Errorf("baseline %s: %w", m.Path, err)
		}
		r.hash[i] = maphash.Bytes(w.seed, p)
	}
	at := sort.Search(len(w.regions), func(i int) bool { return w.regions[i].Start >= m.Start })
	w.regions = append(w.regions[:at], append([]*region{r}, w.regions[at:]...)...)
	w.watched = append(w.watched[:at], append([]Mapping{m}, w.watched[at:]...)...)
	// Pages already copied in QEMU are checked now against the file.
	ents, err := w.pagemap(r)
	if err != nil {
		return nil, err
	}
	var idx []int
	for i, e := range ents {
		if e.Private() && r.class[i] != ClassRELRO {
			idx = append(idx, i)
		}
	}
	found, err := w.checkLocked(r, ents, idx, now)
	if err != nil {
		return nil, err
	}
	for i := range found {
		found[i].Detail = "differs from the file at baseline"
	}
	return found, nil
}

func (w *Watcher) skipLocked(m Mapping, why string) {
	w.skip[Range{m.Start, m.End}] = true
	w.skipped = append(w.skipped, Skipped{Mapping: m, Reason: why})
}

// openMapped opens the file behind mapping m of pid: through
// /proc/PID/map_files (which needs CAP_SYS_ADMIN or
// CAP_CHECKPOINT_RESTORE) when it can, else by path, checking that the
// file opened has the mapping's device and inode.
func openMapped(pid int, m Mapping) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err == nil {
		return f, nil
	}
	if f, err = os.Open(m.Path); err != nil {
		return nil, fmt.Errorf("open mapped file: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, errors.Join(fmt.Errorf("stat %s: %w", m.Path, os.NewSyscallError("fstat", err)), f.Close())
	}
	if dev := fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev)); st.Ino != m.Inode || dev != m.Dev {
		return nil, errors.Join(fmt.Errorf("%s is no longer the mapped file (dev %s inode %d, mapped %s inode %d)", m.Path, dev, st.Ino, m.Dev, m.Inode), f.Close())
	}
	return f, nil
}

// pagemap reads the pagemap entries of r's pages.
func (w *Watcher) pagemap(r *region) ([]PagemapEntry, error) {
	b := make([]byte, r.pages()*8)
	if _, err := w.pmap.ReadAt(b, int64(r.Start/PageSize*8)); err != nil {
		return nil, fmt.Errorf("read pagemap at %#x: %w", r.Start, w.exited(err))
	}
	return ParsePagemap(b)
}

// pagemapAll reads the pagemap entries of every region's pages and
// returns them per region. Regions close to each other (a library's
// mappings, libraries mapped side by side) are read in one pread: the
// kernel's cost is per page walked, and a read per region would cost a
// system call each.
func (w *Watcher) pagemapAll() ([][]PagemapEntry, error) {
	if w.pageScan == PageScanIoctl {
		return w.pagemapScanAll()
	}
	return w.pagemapReadAll()
}

// maxGap is the gap, in pages, between two watched mappings that one
// pagemap read or PAGEMAP_SCAN spans rather than split in two.
const maxGap = 256

// pagemapReadAll is pagemapAll by reading /proc/PID/pagemap.
func (w *Watcher) pagemapReadAll() ([][]PagemapEntry, error) {
	total := 0
	for _, r := range w.regions {
		total += r.pages()
	}
	out := make([][]PagemapEntry, len(w.regions))
	if cap(w.pmEnts) < total {
		w.pmEnts = make([]PagemapEntry, 0, total)
	}
	w.pmEnts = w.pmEnts[:0]
	for lo := 0; lo < len(w.regions); {
		hi := lo + 1
		for hi < len(w.regions) && w.regions[hi].Start-w.regions[hi-1].End <= maxGap*PageSize {
			hi++
		}
		start, end := w.regions[lo].Start, w.regions[hi-1].End
		n := int((end - start) / PageSize * 8)
		if cap(w.pmBuf) < n {
			w.pmBuf = make([]byte, n)
		}
		b := w.pmBuf[:n]
		if _, err := w.pmap.ReadAt(b, int64(start/PageSize*8)); err != nil {
			return nil, fmt.Errorf("read pagemap at %#x: %w", start, w.exited(err))
		}
		for ri := lo; ri < hi; ri++ {
			r := w.regions[ri]
			at := len(w.pmEnts)
			off := int((r.Start - start) / PageSize * 8)
			for i := range r.pages() {
				w.pmEnts = append(w.pmEnts, PagemapEntry(binary.LittleEndian.Uint64(b[off+i*8:])))
			}
			out[ri] = w.pmEnts[at:len(w.pmEnts):len(w.pmEnts)]
		}
		lo = hi
	}
	return out, nil
}

// pageSource reads what QEMU sees in page i of r: its private copy from
// /proc/PID/mem when it has one, otherwise the page-cache page of the
// file (which is what a shared or not-yet-faulted page maps).
func (w *Watcher) pageSource(r *region, e PagemapEntry, i int, buf []byte) error {
	addr := r.Start + uint64(i)*PageSize
	if e.Private() {
		if _, err := w.mem.ReadAt(buf, int64(addr)); err != nil {
			return fmt.Errorf("read memory at %#x: %w", addr, err)
		}
		return nil
	}
	return readPage(r.file.f, r.Offset+uint64(i)*PageSize, buf)
}

// pristine returns the bytes page i of r must hold: the baseline copy
// for RELRO, the file's page for the rest, provided the file still
// hashes as at baseline (or, for a page still pending, matches its
// cached digest).
func (w *Watcher) pristine(r *region, i int, buf []byte) error {
	if r.class[i] == ClassRELRO {
		live, err := w.relroOf(r)
		if err != nil {
			return err
		}
		copy(buf, live[i*PageSize:])
		if maphash.Bytes(w.seed, buf) != r.hash[i] {
			return fmt.Errorf("baseline copy of %s's RELRO at %#x does not hash as at baseline", r.Path, r.Start+uint64(i)*PageSize)
		}
		return nil
	}
	if err := readPage(r.file.f, r.Offset+uint64(i)*PageSize, buf); err != nil {
		return err
	}
	if r.pending(i) {
		if !w.establish(r, i, buf) {
			return fmt.Errorf("%s changed on disk at offset %#x since kfv hashed it (cached digest)", r.Path, r.Offset+uint64(i)*PageSize)
		}
		return nil
	}
	if maphash.Bytes(w.seed, buf) != r.hash[i] {
		return fmt.Errorf("%s changed on disk at offset %#x since the baseline", r.Path, r.Offset+uint64(i)*PageSize)
	}
	return nil
}

func (r *region) pending(i int) bool { return r.pend != nil && r.pend[i] }

// establish takes the hash of pending page i of r from file, the file's
// bytes at that page, once they match the page's cached digest. It
// returns false, leaving the page pending, when they do not: the file
// changed on disk since it was hashed.
func (w *Watcher) establish(r *region, i int, file []byte) bool {
	d := r.file.entry.digest(r.Offset + uint64(i)*PageSize)
	if d == nil || sha256.Sum256(file) != *d {
		return false
	}
	r.hash[i] = maphash.Bytes(w.seed, file)
	r.pend[i] = false
	return true
}

// refLocked returns the hash page i of r must have, taking it first
// when the page is pending (want is a page buffer it may use). ok is
// false when the page is pending and its file no longer matches the
// cached digest: there is nothing pristine to compare with.
//
// Preconditions: w.mu is held.
func (w *Watcher) refLocked(r *region, i int, want []byte) (h uint64, ok bool, err error) {
	if !r.pending(i) {
		return r.hash[i], true, nil
	}
	if err := readPage(r.file.f, r.Offset+uint64(i)*PageSize, want); err != nil {
		return 0, false, err
	}
	if !w.establish(r, i, want) {
		return 0, false, nil
	}
	return r.hash[i], true, nil
}

// checkLocked checks pages idx (ascending) of r against the baseline and
// returns findings for the pages that differ and were not reported yet,
// one per run of adjacent pages.
//
// Preconditions: w.mu is held.
func (w *Watcher) checkLocked(r *region, ents []PagemapEntry, idx []int, now time.Time) ([]Finding, error) {
	if len(idx) == 0 {
		return nil, nil
	}
	var found []Finding
	if w.pageBufs == nil {
		w.pageBufs = make([]byte, 2*PageSize)
	}
	cur, want := w.pageBufs[:PageSize], w.pageBufs[PageSize:]
	for _, i := range idx {
		if !w.watchesClass(r.class[i]) {
			continue
		}
		addr := r.Start + uint64(i)*PageSize
		key := findingKey{KindModified, addr, addr + PageSize}
		if err := w.pageSource(r, ents[i], i, cur); err != nil {
			return nil, err
		}
		// A pending page's hash is taken now; one whose file no
		// longer matches its cached digest differs.
		ok := true
		if r.pending(i) {
			if ents[i].Private() { // cur is QEMU's copy: read the file's page
				var err error
				if _, ok, err = w.refLocked(r, i, want); err != nil {
					return nil, err
				}
			} else { // cur is the file's page, what QEMU maps
				ok = w.establish(r, i, cur)
			}
		}
		if ok && maphash.Bytes(w.seed, cur) == r.hash[i] {
			delete(w.reported, key)
			continue
		}
		if w.reported[key] {
			continue
		}
		w.reported[key] = true
		diff, detail := PageSize, ""
		if err := w.pristine(r, i, want); err != nil {
			detail = err.Error()
		} else {
			diff = diffBytes(cur, want)
		}
		if n := len(found); n > 0 && found[n-1].End == addr && found[n-1].Class == r.class[i] && found[n-1].Detail == detail {
			found[n-1].End += PageSize
			found[n-1].Differing += diff
			continue
		}
		found = append(found, Finding{Kind: KindModified, Start: addr, End: addr + PageSize, Mapping: r.Mapping,
			Class: r.class[i], Differing: diff, Time: now, Detail: detail})
	}
	return found, nil
}

func (w *Watcher) watchesClass(c Class) bool {
	switch c {
	case ClassText:
		return w.cfg.Watch&WatchText != 0
	case ClassRodata:
		return w.cfg.Watch&WatchRodata != 0
	case ClassRELRO:
		return w.cfg.Watch&WatchRELRO != 0
	}
	return false
}

// newLocked stamps maps findings and keeps those not reported yet; the
// maps conditions that have gone are forgotten, so that they are
// reported again if they come back.
//
// Preconditions: w.mu is held.
func (w *Watcher) newLocked(found []Finding, now time.Time) []Finding {
	seen := map[findingKey]bool{}
	var out []Finding
	for _, f := range found {
		k := findingKey{f.Kind, f.Start, f.End}
		seen[k] = true
		if w.reported[k] {
			continue
		}
		w.reported[k] = true
		f.Time = now
		out = append(out, f)
	}
	for k := range w.reported {
		if k.kind != KindModified && !seen[k] {
			delete(w.reported, k)
		}
	}
	return out
}

// Scan runs one scan: the mappings, the tracked pages and the sweep's
// slice. It returns the findings not reported before.
func (w *Watcher) Scan() ([]Finding, ScanStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.scanLocked(false)
}

// ScanFull runs one scan that checks every watched page, whatever the
// tracking: what a scan costs at worst. The supervisor never needs it
// (Scan and its sweep cover every page); it is exported for
// memwatchtest.Measure, which reports a full scan's cost per MiB.
func (w *Watcher) ScanFull() ([]Finding, ScanStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.scanLocked(true)
}

// scanLocked scans; full checks every page.
//
// Preconditions: w.mu is held.
func (w *Watcher) scanLocked(full bool) ([]Finding, ScanStats, error) {
	defer w.dropRELROLocked()
	var st ScanStats
	if !w.baseDone {
		return nil, st, errors.New("memwatch: scan before baseline")
	}
	t0 := time.Now()
	raw, err := w.readMapsRaw()
	if err != nil {
		return nil, st, errors.Join(err, w.alive())
	}
	var found []Finding
	// Maps unchanged since the last diff give the same findings, all
	// reported already.
	if !bytes.Equal(raw, w.lastMaps) {
		maps, err := ParseMaps(raw)
		if err != nil {
			return nil, st, err
		}
		w.lastMaps = append(w.lastMaps[:0], raw...)
		mf, late := mapsDiff(w.watched, maps, w.tcg, w.lateDirs, w.skip)
		for _, m := range late {
			f, err := w.addRegionLocked(m, t0)
			if err != nil {
				return nil, st, err
			}
			found = append(found, f...)
		}
		w.cache.start()
		if w.cfg.Watch&WatchMappings != 0 {
			found = append(found, w.newLocked(mf, t0)...)
		}
	}
	full = full || w.tracking == TrackFull
	ents, err := w.pagemapAll()
	if err != nil {
		return nil, st, errors.Join(err, w.alive())
	}
	for _, r := range w.regions {
		st.PagesTracked += r.pages()
	}
	// Soft-dirty bits are cleared right after they are read, to keep
	// short the window in which a write is neither seen now nor marked
	// for the next scan; the sweep covers that window.
	if w.tracking == TrackSoftDirty {
		if err := clearSoftDirty(w.pid); err != nil {
			return nil, st, err
		}
	}
	sweep := w.sweepSliceLocked(full)
	w.scanGen++
	for ri, r := range w.regions {
		var idx []int
		for i, e := range ents[ri] {
			c := r.class[i]
			switch {
			case full:
			case sweep(ri, i) && (c == ClassRELRO || e.Private() || !w.sameFileLocked(r.file)):
				// The sweep reads a page-cache page only when its file
				// may have changed: such a page is the file's, and the
				// file's times move with every write to it.
			case c != ClassRELRO && e.Private():
				st.Private++
			case c == ClassRELRO && w.tracking == TrackSoftDirty && e.SoftDirty():
				st.SoftDirty++
			default:
				continue
			}
			idx = append(idx, i)
		}
		st.PagesChecked += len(idx)
		f, err := w.checkLocked(r, ents[ri], idx, t0)
		if err != nil {
			return nil, st, errors.Join(err, w.alive())
		}
		found = append(found, f...)
	}
	st.Duration = time.Since(t0)
	return found, st, nil
}

// settleWindow is how old a file's ctime must be for the sweep to trust
// it: a change made within the same tick of the kernel's coarse clock
// may leave it as it was (git's "racy" files).
var settleWindow = 2 * time.Second

// sameFileLocked says whether r's file is as it was before its pages
// were first read: same device, inode, size, mtime and ctime, and a
// ctime old enough to tell. Checked once per scan, and only when the
// sweep gets to the file.
//
// Preconditions: w.mu is held.
func (w *Watcher) sameFileLocked(wf *watchedFile) bool {
	if !wf.settled {
		return false
	}
	if wf.gen != w.scanGen {
		var st unix.Stat_t
		wf.gen = w.scanGen
		wf.same = unix.Fstat(int(wf.f.Fd()), &st) == nil && keyOf(&st) == wf.key
		if !wf.same {
			// Changed: from now on every page is read when swept.
			wf.settled = false
		}
	}
	return wf.same
}

// sweepSliceLocked advances the sweep by this scan's share of the pages
// and returns the predicate "page i of region ri is in the slice".
//
// Preconditions: w.mu is held.
func (w *Watcher) sweepSliceLocked(full bool) func(ri, i int) bool {
	total := 0
	for _, r := range w.regions {
		total += r.pages()
	}
	if full || w.cfg.SweepPeriod < 0 || total == 0 {
		return func(int, int) bool { return false }
	}
	n := int((int64(total)*int64(w.cfg.Period) + int64(w.cfg.SweepPeriod) - 1) / int64(w.cfg.SweepPeriod))
	n = min(max(n, 1), total)
	lo := w.sweepAt % total
	w.sweepAt = (lo + n) % total
	// Global page index of each region's first page.
	base := make([]int, len(w.regions))
	for ri, acc := 0, 0; ri < len(w.regions); ri++ {
		base[ri] = acc
		acc += w.regions[ri].pages()
	}
	return func(ri, i int) bool {
		g := base[ri] + i
		if lo+n <= total {
			return g >= lo && g < lo+n
		}
		return g >= lo || g < (lo+n)%total
	}
}

// Run scans every period until ctx ends or the process exits, handing
// each finding to report (from Run's goroutine). It returns nil when ctx
// ends, an error wrapping ErrExited when QEMU exited, another error when
// a scan failed.
func (w *Watcher) Run(ctx context.Context, report func(Finding)) error {
	t := time.NewTicker(w.cfg.Period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		found, st, err := w.Scan()
		if w.cfg.Scanned != nil {
			w.cfg.Scanned(st, len(found))
		}
		for _, f := range found {
			report(f)
		}
		if err != nil {
			if e := w.aliveAfter(exitGrace); e != nil {
				return e
			}
			return fmt.Errorf("memwatch scan of %d: %w", w.pid, err)
		}
	}
}
