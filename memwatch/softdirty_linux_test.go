package memwatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// TestSoftDirtySelf checks soft-dirty bits on this process: cleared by
// clear_refs, set again by a write.
func TestSoftDirtySelf(t *testing.T) {
	ok, err := SoftDirtySupported()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skip("kernel built without CONFIG_MEM_SOFT_DIRTY: memwatch uses private-copy tracking here (TestPrivateCopySelf)")
	}
	page, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(page)
	page[0] = 1
	if err := clearSoftDirty(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if e, err := selfPagemap(page); err != nil || e.SoftDirty() {
		t.Fatalf("after clear_refs: %#x %v", uint64(e), err)
	}
	page[0] = 2
	if e, err := selfPagemap(page); err != nil || !e.SoftDirty() {
		t.Fatalf("after a write: %#x %v", uint64(e), err)
	}
}

// sink keeps reads that fault pages in from being optimised away.
var sink byte

// TestPrivateCopySelf checks the tracking used without soft-dirty bits
// on this process: a read-only private file mapping shows page-cache
// pages until something writes to it, then a private copy.
func TestPrivateCopySelf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "code")
	if err := os.WriteFile(path, make([]byte, 2*PageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 2*PageSize, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	sink = m[0] + m[PageSize] // fault both pages in
	for i := range 2 {
		if e, err := selfPagemap(m[i*PageSize:]); err != nil || !e.Present() || !e.File() || e.Private() {
			t.Fatalf("page %d before any write: %#x %v", i, uint64(e), err)
		}
	}
	// Write the first page as a debugger would: through read-only
	// protection, with /proc/self/mem.
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := mem.WriteAt([]byte{0xcc}, int64(addrOf(m))); err != nil {
		t.Fatal(err)
	}
	if e, err := selfPagemap(m); err != nil || !e.Private() {
		t.Fatalf("written page: %#x %v, want a private copy", uint64(e), err)
	}
	if e, err := selfPagemap(m[PageSize:]); err != nil || e.Private() {
		t.Fatalf("untouched page: %#x %v, want the page-cache page", uint64(e), err)
	}
}
