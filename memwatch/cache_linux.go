package memwatch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The baseline cache holds, for each ELF file memwatch has watched, the
// SHA-256 digest of every page of its loadable segments as on disk,
// keyed by the file's device, inode, size, mtime and ctime. A watcher
// whose file hits the cache reads nothing of it at baseline: its text
// and rodata pages are pending, and the first check of each (the sweep,
// a private copy seen by a scan, a scrub) reads the file's page, checks
// it against the cached digest and only then takes the watcher's own
// fingerprint of it (maphash under the watcher's secret seed, which
// never leaves the supervisor). A page that no longer matches its
// digest is a finding: the cache cannot make kfv trust a changed file.
//
// ctime is part of the key because nobody can set it back: a file
// rewritten in place and given its old mtime again (touch -r,
// utimensat) still has a new ctime, so it misses and is hashed anew.
//
// The digests are not secret (anyone who can read the files can compute
// them) but they must not be forged: the directory and its entries must
// belong to kfv's user (the process's effective uid) or root and be
// writable by nobody else, or the cache is not used.

// cacheMagic starts every entry; its last field is the format version.
const cacheMagic = "kfv memwatch pages 1\n"

// maxCacheEntry bounds an entry read back: 32 bytes per 4 KiB page is
// 8 MiB for a 1 GiB file.
const maxCacheEntry = 8 << 20

// cacheKey identifies the content of a file: a file changed in any way
// has another key.
type cacheKey struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // ns since the epoch
}

func keyOf(st *unix.Stat_t) cacheKey {
	return cacheKey{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

// cacheEntry is the digests of one file's pages.
type cacheEntry struct {
	key  cacheKey
	segs []cacheSeg // ascending, disjoint
}

// cacheSeg is a run of file pages: page first (file offset
// first*PageSize) and the following ones.
type cacheSeg struct {
	first uint64
	dig   [][sha256.Size]byte
}

// digest returns the digest of the file page at off (page aligned), or
// nil when the entry has none.
func (e *cacheEntry) digest(off uint64) *[sha256.Size]byte {
	if e == nil {
		return nil
	}
	p := off / PageSize
	for i := range e.segs {
		s := &e.segs[i]
		if p >= s.first && p < s.first+uint64(len(s.dig)) {
			return &s.dig[p-s.first]
		}
	}
	return nil
}

// baseCache is a watcher's use of the cache directory.
type baseCache struct {
	dir string

	mu    sync.Mutex // guards stats: fill updates them
	stats CacheStats

	todo []fillJob      // misses to hash and write, by fill
	fill sync.WaitGroup // the fills under way
}

// fillJob is a file to hash and write to the cache: f is the watcher's
// file duplicated, so that the watcher may close its own meanwhile.
type fillJob struct {
	f   *os.File
	img *elfImage
	key cacheKey
}

// openCache checks dir for use as the cache, making it (mode 0700) when
// it is missing but its parent exists. It never fails: a directory that
// cannot be used turns the cache off, and stats.Off says why.
func openCache(dir string) *baseCache {
	c := &baseCache{dir: dir, stats: CacheStats{Dir: dir}}
	if dir == "" {
		c.stats.Off = "no cache directory configured"
		return c
	}
	if !filepath.IsAbs(dir) {
		c.stats.Off = fmt.Sprintf("cache directory %q is not absolute", dir)
		return c
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		c.stats.Off = fmt.Sprintf("make cache directory: %v", err)
		return c
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		c.stats.Off = fmt.Sprintf("cache directory %s: %v", dir, err)
		return c
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		c.stats.Off = fmt.Sprintf("cache directory %s is not a directory (a symbolic link is not followed)", dir)
		return c
	}
	if why := unsafeOwner(&st); why != "" {
		c.stats.Off = fmt.Sprintf("cache directory %s %s: not trusted", dir, why)
		return c
	}
	removeLeftovers(dir, time.Now())
	return c
}

// removeLeftovers removes the temporary files of writes that never
// ended (a kfv killed while it wrote an entry).
func removeLeftovers(dir string, now time.Time) {
	tmps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, p := range tmps {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && now.Sub(fi.ModTime()) > time.Minute {
			os.Remove(p)
		}
	}
}

// unsafeOwner says why a cache file or directory may not be trusted:
// "" when it belongs to this process's effective user or root and no
// one else may write it.
func unsafeOwner(st *unix.Stat_t) string {
	if euid := uint32(os.Geteuid()); st.Uid != euid && st.Uid != 0 {
		return fmt.Sprintf("belongs to uid %d (want %d or 0)", st.Uid, euid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Sprintf("is writable by its group or others (mode %#o)", st.Mode&0o7777)
	}
	return ""
}

func (c *baseCache) path(k cacheKey) string {
	return filepath.Join(c.dir, fmt.Sprintf("%x-%x.pages", k.Dev, k.Ino))
}

// entry returns the digests of the pages of img's loadable segments in
// file f when the cache holds them under f's current key. Otherwise it
// returns nil (the watcher hashes the file's pages now, as without a
// cache) and, the cache being on, queues f for start to hash and write:
// the baseline does not wait for the cache.
func (c *baseCache) entry(f *os.File, img *elfImage) *cacheEntry {
	if c == nil || c.stats.Off != "" {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	key := keyOf(&st)
	p := c.path(key)
	e, err := readEntry(p, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.stats.Hits++
		return e
	}
	if errors.Is(err, errStale) {
		c.stats.Stale++
	} else if !errors.Is(err, os.ErrNotExist) {
		c.stats.Ignored = append(c.stats.Ignored, fmt.Sprintf("%s (%s): %v", filepath.Base(p), f.Name(), err))
	}
	c.stats.Misses++
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		c.stats.Ignored = append(c.stats.Ignored, fmt.Sprintf("%s: %v", f.Name(), os.NewSyscallError("dup", err)))
		return nil
	}
	c.todo = append(c.todo, fillJob{f: os.NewFile(uintptr(fd), f.Name()), img: img, key: key})
	return nil
}

// start hashes and writes the queued misses in the background.
func (c *baseCache) start() {
	if c == nil || len(c.todo) == 0 {
		return
	}
	todo := c.todo
	c.todo = nil
	c.fill.Go(func() {
		for _, j := range todo {
			why := c.write(j)
			j.f.Close()
			c.mu.Lock()
			if why == errUnsettled {
				c.stats.Unsettled++
			} else if why != "" {
				c.stats.Ignored = append(c.stats.Ignored, why)
			} else {
				c.stats.Written++
			}
			c.mu.Unlock()
		}
	})
}

// errUnsettled is write's answer for a file changed too recently.
const errUnsettled = "unsettled"

// write hashes j's file and writes its entry; it returns why it did not,
// or "".
func (c *baseCache) write(j fillJob) string {
	// A file changed within a tick of the kernel's coarse clock before
	// it is hashed could change again and keep its ctime: no entry
	// vouches for it until it has settled.
	if time.Now().UnixNano()-j.key.Ctime <= int64(settleWindow) {
		return errUnsettled
	}
	e, err := hashEntry(j.f, j.img, j.key)
	if err != nil {
		return fmt.Sprintf("hash %s: %v", j.f.Name(), err)
	}
	// The file must not have changed before or while it was hashed: its
	// key is what the entry vouches for.
	var after unix.Stat_t
	if err := unix.Fstat(int(j.f.Fd()), &after); err != nil || keyOf(&after) != j.key {
		return fmt.Sprintf("%s changed since the baseline: not written", j.f.Name())
	}
	p := c.path(j.key)
	if err := writeEntry(c.dir, p, e); err != nil {
		return fmt.Sprintf("write %s: %v", filepath.Base(p), err)
	}
	return ""
}

// close waits for the fills under way and drops the misses not started
// (a baseline that failed).
func (c *baseCache) close() {
	c.fill.Wait()
	for _, j := range c.todo {
		j.f.Close()
	}
	c.todo = nil
}

// snapshot returns the stats, once the fills under way are done when
// wait is set.
func (c *baseCache) snapshot(wait bool) CacheStats {
	if wait {
		c.fill.Wait()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Ignored = append([]string(nil), s.Ignored...)
	return s
}

// hashEntry computes the digests of the pages of img's loadable
// segments in f, with zeros past the end of the file (what a private
// mapping shows).
func hashEntry(f *os.File, img *elfImage, key cacheKey) (*cacheEntry, error) {
	e := &cacheEntry{key: key}
	type run struct{ lo, hi uint64 } // pages [lo, hi)
	var runs []run
	for _, p := range img.loads {
		if p.Filesz == 0 {
			continue
		}
		lo, hi := pageDown(p.Off)/PageSize, pageUp(p.Off+p.Filesz)/PageSize
		if hi > pageUp(uint64(key.Size))/PageSize+1 {
			return nil, fmt.Errorf("segment at offset %#x (%d bytes) goes past the end of the file (%d bytes)", p.Off, p.Filesz, key.Size)
		}
		// Program headers are in ascending vaddr order, file offsets too
		// in practice; merge what overlaps or touches.
		if n := len(runs); n > 0 && lo <= runs[n-1].hi && hi >= runs[n-1].lo {
			runs[n-1].lo, runs[n-1].hi = min(runs[n-1].lo, lo), max(runs[n-1].hi, hi)
			continue
		}
		runs = append(runs, run{lo, hi})
	}
	// Read in chunks: a read per page would cost a system call each.
	const chunk = 64
	buf := make([]byte, chunk*PageSize)
	for _, r := range runs {
		s := cacheSeg{first: r.lo, dig: make([][sha256.Size]byte, r.hi-r.lo)}
		for i := 0; i < len(s.dig); i += chunk {
			n := min(chunk, len(s.dig)-i)
			b := buf[:n*PageSize]
			if err := readPage(f, (r.lo+uint64(i))*PageSize, b); err != nil {
				return nil, err
			}
			for j := range n {
				s.dig[i+j] = sha256.Sum256(b[j*PageSize : (j+1)*PageSize])
			}
		}
		e.segs = append(e.segs, s)
	}
	for i := 1; i < len(e.segs); i++ {
		prev := e.segs[i-1]
		if e.segs[i].first < prev.first+uint64(len(prev.dig)) {
			return nil, fmt.Errorf("loadable segments overlap out of order at page %d", e.segs[i].first)
		}
	}
	return e, nil
}

// encode is the entry as stored: the magic, the key, the segments
// (first page, count, digests), and the SHA-256 of all that.
func (e *cacheEntry) encode() []byte {
	b := []byte(cacheMagic)
	b = binary.LittleEndian.AppendUint64(b, e.key.Dev)
	b = binary.LittleEndian.AppendUint64(b, e.key.Ino)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.key.Size))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.key.Mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.key.Ctime))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(e.segs)))
	for _, s := range e.segs {
		b = binary.LittleEndian.AppendUint64(b, s.first)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s.dig)))
		for _, d := range s.dig {
			b = append(b, d[:]...)
		}
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// errStale is an entry of the file's device and inode with another
// size, mtime or ctime: the file changed (or the inode is another
// file's now).
var errStale = errors.New("written for another version of the file")

// decodeEntry parses an entry and checks it is whole, of this version
// and for key.
func decodeEntry(b []byte, key cacheKey) (*cacheEntry, error) {
	if !bytes.HasPrefix(b, []byte(cacheMagic)) {
		if i := bytes.IndexByte(b, '\n'); i > 0 && i < 64 && bytes.HasPrefix(b, []byte("kfv memwatch pages ")) {
			return nil, fmt.Errorf("format %q, want %q", b[:i], cacheMagic[:len(cacheMagic)-1])
		}
		return nil, errors.New("not a memwatch cache entry")
	}
	if len(b) < len(cacheMagic)+5*8+4+sha256.Size {
		return nil, fmt.Errorf("truncated (%d bytes)", len(b))
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return nil, errors.New("checksum mismatch (truncated or corrupt)")
	}
	r := body[len(cacheMagic):]
	u64 := func() uint64 { v := binary.LittleEndian.Uint64(r); r = r[8:]; return v }
	u32 := func() uint32 { v := binary.LittleEndian.Uint32(r); r = r[4:]; return v }
	e := &cacheEntry{}
	e.key.Dev, e.key.Ino = u64(), u64()
	e.key.Size, e.key.Mtime, e.key.Ctime = int64(u64()), int64(u64()), int64(u64())
	if e.key != key {
		return nil, fmt.Errorf("%w (key %+v, file now %+v)", errStale, e.key, key)
	}
	nseg := u32()
	for range nseg {
		if len(r) < 12 {
			return nil, errors.New("truncated segment list")
		}
		s := cacheSeg{first: u64()}
		n := u32()
		if hi, lo := bits.Mul64(uint64(n), sha256.Size); hi != 0 || lo > uint64(len(r)) {
			return nil, errors.New("segment longer than the entry")
		}
		s.dig = make([][sha256.Size]byte, n)
		for i := range s.dig {
			copy(s.dig[i][:], r)
			r = r[sha256.Size:]
		}
		if k := len(e.segs); k > 0 && s.first < e.segs[k-1].first+uint64(len(e.segs[k-1].dig)) {
			return nil, errors.New("segments out of order")
		}
		e.segs = append(e.segs, s)
	}
	if len(r) != 0 {
		return nil, fmt.Errorf("%d bytes after the segments", len(r))
	}
	return e, nil
}

// readEntry reads the entry at p for key; an entry that is missing
// gives an error wrapping os.ErrNotExist.
func readEntry(p string, key cacheKey) (*cacheEntry, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errors.New("not a regular file")
	}
	if why := unsafeOwner(&st); why != "" {
		return nil, errors.New(why)
	}
	if st.Size > maxCacheEntry {
		return nil, fmt.Errorf("%d bytes, more than an entry may hold", st.Size)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCacheEntry+1))
	if err != nil {
		return nil, err
	}
	return decodeEntry(b, key)
}

// writeEntry writes e to p atomically: a temporary file in dir, renamed
// over p.
func writeEntry(dir, p string, e *cacheEntry) error {
	t, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = t.Write(e.encode())
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(t.Name(), p)
	}
	if err != nil {
		return errors.Join(err, os.Remove(t.Name()))
	}
	return nil
}
