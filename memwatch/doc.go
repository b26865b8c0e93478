// Package memwatch watches the integrity of QEMU's memory: its mappings,
// baselines of code and read-only data, incremental scans and scrubbing.
//
// It alone opens /proc/PID/mem in kfv-run (memwatch/memwatchtest, which
// tampers with QEMU to measure memwatch, is for the bench and tests and
// is not linked into kfv-run). Its parsers (ParseMaps, ParsePagemap)
// are pure and used by the rest of kfv to learn what backs an address.
//
// # Use
//
//	w, err := memwatch.New(pid, memwatch.Config{Accel: "kvm"})
//	cov, found, err := w.Baseline() // once QEMU's main loop runs
//	go w.Run(ctx, report)           // findings as they appear
//	rep, err := w.Scrub(ctx)        // repair, QEMU frozen meanwhile
//
// # Baseline
//
// Every private, non-writable mapping of an ELF file (QEMU and each
// library it loaded) is watched. Its file is opened through
// /proc/PID/map_files (or by path, checking device and inode), and each
// page is classified from the program headers with debug/elf: text
// (executable mapping), rodata (a read-only segment) or RELRO (a page of
// a writable segment the loader made read-only after relocating it).
// Text and rodata pages must equal the file, page for page (a private
// file mapping shows the file's bytes, zeros past its end), so tampering
// done before the baseline is found. RELRO holds pointers relocated by
// the load bias: it is copied and hashed as found at baseline time (the
// copy, which only a scrub needs, is kept compressed: 0.3 of 3.6 MiB for
// QEMU 7.2), and tampering with RELRO before the baseline is not caught.
//
// The baseline reads no memory of text and rodata pages QEMU still
// shares with the page cache (pagemap says so): they are the file's
// pages by construction. It reads the files instead, unless
// Config.Cache names the baseline cache, shared by the watchers of a
// host: for each file, the SHA-256 of every page of its loadable
// segments, keyed by device, inode, size, mtime and ctime (see
// cache_linux.go). A file whose entry matches is not read at baseline;
// its pages are pending, and the first check of each (the sweep, a
// private copy, a scrub) reads the file's page, checks it against the
// digest, and takes the watcher's own hash: the first sweep period does
// the reading the baseline skipped, and a page that no longer matches
// its digest is a finding ("changed on disk since kfv hashed it"). A
// file rewritten in place, even with its mtime set back, has a new
// ctime and misses. A miss (no entry, or one that is corrupt,
// truncated, of another format version or of another version of the
// file) is hashed at baseline as without a cache, and its entry written
// in the background (temporary file and rename); a cache directory or entry
// that is not kfv's user's or root's, or that others may write, is not
// used. Coverage.Cache says what the baseline took from the cache.
//
// # Scans
//
// Every Config.Period a scan reads /proc/PID/maps and asks
// /proc/PID/pagemap which watched pages have a private copy (and, under
// soft-dirty tracking, which were written). Where the kernel has the
// PAGEMAP_SCAN ioctl (Linux 6.7+) it asks with one ioctl per range of
// watched mappings, and the kernel answers with the few runs of pages
// that match; elsewhere (Debian 12's 6.1) it reads every watched page's
// 8-byte entry and decides from its bits. Both give the same pages. New
// chooses (Config.PageScan, probed by PagemapScanSupported) and
// Coverage.PageScan names the choice. Baselines and scrubs read entries
// either way. Mappings are read from the text of /proc/PID/maps on
// every kernel: the PROCMAP_QUERY ioctl (Linux 6.11) takes an ioctl per
// mapping, and listing QEMU's (about 300) with it costs more than one
// read of maps, while listing only the executable ones misses what a
// scan must also see (a watched read-only mapping made writable,
// replaced or unmapped; a library's read-only data mapped later).
// Reading maps is therefore not a fallback for kernels without
// PROCMAP_QUERY but the one path on all kernels.
//
//   - Mappings: a watched mapping made writable, reprotected, replaced or
//     unmapped; executable memory that is anonymous, a memfd, the heap
//     or stack, writable and executable, or a file mapped after the
//     baseline from outside the library directories. Under TCG the
//     translation buffer is excluded (Config.TCGBuffer, or found as the
//     largest anonymous writable-and-executable mapping).
//   - Pages: in a read-only private file mapping, a page stops being the
//     page-cache page only when written (through mprotect, ptrace or
//     /proc/PID/mem): such private copies of text and rodata are hashed
//     on every scan. Where the kernel keeps soft-dirty bits, RELRO pages
//     written since the last scan are too; elsewhere the sweep checks
//     them.
//   - The sweep checks a slice of all pages on every scan, covering them
//     all once per Config.SweepPeriod: RELRO without soft-dirty bits, and
//     files changed in the page cache.
//
// # Scrub
//
// Scrub stops QEMU (other threads by ptrace, the main thread by SIGSTOP,
// see frozen), writes pristine bytes into every private page that
// differs from its baseline, makes a frozen QEMU thread call mprotect to
// put watched mappings back to their protection and to remove the
// execute right from stray executable memory, verifies, and resumes.
package memwatch
