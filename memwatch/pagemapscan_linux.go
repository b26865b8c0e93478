package memwatch

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// The queries a scan makes with PAGEMAP_SCAN.
var (
	// privateQuery matches what PagemapEntry.Private says from a
	// pagemap entry: present or swapped (any of), and not a page-cache
	// page (PAGE_IS_FILE inverted and required). The kernel sets
	// PAGE_IS_FILE exactly where a read sets bit 61 (a page that is not
	// anonymous), so the two give the same pages.
	privateQuery = pmScanArg{
		categoryInverted:  pageIsFile,
		categoryMask:      pageIsFile,
		categoryAnyofMask: pageIsPresent | pageIsSwapped,
		returnMask:        pageIsPresent | pageIsSwapped,
	}
	// softDirtyQuery matches the pages whose soft-dirty bit is set (bit
	// 55 of an entry): written since the last clear_refs, or in a VMA
	// made since.
	softDirtyQuery = pmScanArg{
		categoryMask: pageIsSoftDirty,
		returnMask:   pageIsSoftDirty,
	}
)

var pagemapScanProbe struct {
	once sync.Once
	ok   bool
	err  error
}

// PagemapScanSupported says whether this kernel has the PAGEMAP_SCAN
// ioctl (Linux 6.7+) and answers it as memwatch expects. It is probed
// once, on pages of this process: a page written (a private copy) must
// be found, a page never touched must not, and the soft-dirty category
// must be accepted. A kernel without the ioctl
// answers ENOTTY (no ioctl on pagemap) or EINVAL; both give false, as
// does a wrong answer: memwatch then reads pagemap instead.
func PagemapScanSupported() (bool, error) {
	pagemapScanProbe.once.Do(func() { pagemapScanProbe.ok, pagemapScanProbe.err = probePagemapScan() })
	return pagemapScanProbe.ok, pagemapScanProbe.err
}

func probePagemapScan() (ok bool, err error) {
	pages, err := unix.Mmap(-1, 0, 2*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false, fmt.Errorf("probe PAGEMAP_SCAN: %w", os.NewSyscallError("mmap", err))
	}
	defer func() {
		if e := unix.Munmap(pages); e != nil {
			err = errors.Join(err, fmt.Errorf("probe PAGEMAP_SCAN: %w", os.NewSyscallError("munmap", e)))
		}
	}()
	pages[0] = 1 // the first page is a private copy; the second is never touched
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return false, fmt.Errorf("probe PAGEMAP_SCAN: %w", err)
	}
	defer f.Close()
	start := addrOf(pages)
	vec := make([]pageRegion, 4)
	n, walkEnd, err := pagemapScan(f.Fd(), privateQuery, start, start+2*PageSize, vec)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe PAGEMAP_SCAN: %w", err)
	}
	want := pageRegion{start: start, end: start + PageSize, categories: pageIsPresent}
	if n != 1 || vec[0] != want || walkEnd != start+2*PageSize {
		return false, nil
	}
	// Soft-dirty tracking asks for PAGE_IS_SOFT_DIRTY too: a kernel
	// that refused the category would fail every such scan.
	if _, _, err := pagemapScan(f.Fd(), softDirtyQuery, start, start+2*PageSize, vec); errors.Is(err, unix.EINVAL) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("probe PAGEMAP_SCAN: %w", err)
	}
	return true, nil
}

// scanRuns calls fn for every run of pages in [start, end) that matches
// q, asking the kernel again from where it stopped while vec fills up.
func scanRuns(pm *os.File, q pmScanArg, start, end uint64, vec []pageRegion, fn func(pageRegion)) error {
	for start < end {
		n, walkEnd, err := pagemapScan(pm.Fd(), q, start, end, vec)
		if err != nil {
			return fmt.Errorf("scan pagemap %#x-%#x: %w", start, end, err)
		}
		for _, r := range vec[:n] {
			fn(r)
		}
		if walkEnd <= start || walkEnd > end {
			return fmt.Errorf("scan pagemap %#x-%#x: the kernel stopped at %#x", start, end, walkEnd)
		}
		start = walkEnd
	}
	return nil
}

// pagemapScanAll is pagemapAll by PAGEMAP_SCAN. The entries it returns
// hold only the bits a scan reads: present or swapped for a page with a
// private copy, soft-dirty under TrackSoftDirty. Every other page's entry
// is 0, which reads as the page-cache page (or a page never faulted in),
// as it does from a read.
func (w *Watcher) pagemapScanAll() ([][]PagemapEntry, error) {
	total := 0
	for _, r := range w.regions {
		total += r.pages()
	}
	if cap(w.pmEnts) < total {
		w.pmEnts = make([]PagemapEntry, total)
	}
	w.pmEnts = w.pmEnts[:total]
	clear(w.pmEnts)
	out := make([][]PagemapEntry, len(w.regions))
	for ri, at := 0, 0; ri < len(w.regions); ri++ {
		n := w.regions[ri].pages()
		out[ri] = w.pmEnts[at : at+n : at+n]
		at += n
	}
	if w.pmRuns == nil {
		w.pmRuns = make([]pageRegion, 512)
	}
	for lo := 0; lo < len(w.regions); {
		hi := lo + 1
		for hi < len(w.regions) && w.regions[hi].Start-w.regions[hi-1].End <= maxGap*PageSize {
			hi++
		}
		start, end := w.regions[lo].Start, w.regions[hi-1].End
		// mark sets bits in the entries of the watched pages of run; a
		// run may cover gaps between watched mappings (a library's
		// .bss is anonymous) and several mappings.
		mark := func(bits func(categories uint64) PagemapEntry) func(pageRegion) {
			return func(run pageRegion) {
				b := bits(run.categories)
				ri := lo + sort.Search(hi-lo, func(i int) bool { return w.regions[lo+i].End > run.start })
				for ; ri < hi && w.regions[ri].Start < run.end; ri++ {
					r := w.regions[ri]
					for a := max(run.start, r.Start); a < min(run.end, r.End); a += PageSize {
						out[ri][(a-r.Start)/PageSize] |= b
					}
				}
			}
		}
		private := mark(func(c uint64) PagemapEntry {
			if c&pageIsPresent != 0 {
				return pmPresent
			}
			return pmSwapped
		})
		if err := scanRuns(w.pmap, privateQuery, start, end, w.pmRuns, private); err != nil {
			return nil, err
		}
		if w.tracking == TrackSoftDirty {
			dirty := mark(func(uint64) PagemapEntry { return pmSoftDirty })
			if err := scanRuns(w.pmap, softDirtyQuery, start, end, w.pmRuns, dirty); err != nil {
				return nil, err
			}
		}
		lo = hi
	}
	// PAGEMAP_SCAN on a process whose memory is gone (it is exiting)
	// walks no VMA and finds nothing, which would read as "no private
	// copy"; a read of pagemap then meets the end of file, as the
	// fallback's reads do.
	if len(w.regions) > 0 {
		var e [8]byte
		if _, err := w.pmap.ReadAt(e[:], int64(w.regions[0].Start/PageSize*8)); err != nil {
			return nil, fmt.Errorf("read pagemap at %#x: %w", w.regions[0].Start, w.exited(err))
		}
	}
	return out, nil
}
