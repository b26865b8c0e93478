package memwatch

import (
	"encoding/binary"
	"fmt"
)

// PageSize is the page size memwatch works in. x86-64 Linux maps user
// memory in 4 KiB pages; huge pages of file text are reported per 4 KiB
// page by /proc/PID/pagemap too.
const PageSize = 4096

// PagemapEntry is one 64-bit entry of /proc/PID/pagemap, describing one
// virtual page (Documentation/admin-guide/mm/pagemap.rst).
type PagemapEntry uint64

// Bits of a pagemap entry that memwatch reads.
const (
	pmSoftDirty = 1 << 55 // written since the last write of "4" to clear_refs
	pmExclusive = 1 << 56 // page mapped exactly once
	pmFile      = 1 << 61 // page is a file page or shared anonymous memory
	pmSwapped   = 1 << 62
	pmPresent   = 1 << 63
)

// Present says the page is in RAM.
func (e PagemapEntry) Present() bool { return e&pmPresent != 0 }

// Swapped says the page is in swap.
func (e PagemapEntry) Swapped() bool { return e&pmSwapped != 0 }

// File says the page is a page-cache page (or shared anonymous memory).
// In a private file mapping, a present page that is not File is a
// private copy: something wrote to it (copy on write).
func (e PagemapEntry) File() bool { return e&pmFile != 0 }

// SoftDirty says the page was written since soft-dirty bits were last
// cleared. It is always false on kernels built without
// CONFIG_MEM_SOFT_DIRTY: see SoftDirtySupported.
func (e PagemapEntry) SoftDirty() bool { return e&pmSoftDirty != 0 }

// Exclusive says the page is mapped by this process only.
func (e PagemapEntry) Exclusive() bool { return e&pmExclusive != 0 }

// Private says the page is a private (anonymous) copy: present or
// swapped, and not a page-cache page. In a read-only private file
// mapping only a write (through mprotect, ptrace or /proc/PID/mem) or a
// relocation by the dynamic loader makes one.
func (e PagemapEntry) Private() bool {
	return (e.Present() || e.Swapped()) && !e.File()
}

// ParsePagemap decodes the bytes of /proc/PID/pagemap (little-endian
// 64-bit entries). A trailing partial entry is an error.
func ParsePagemap(b []byte) ([]PagemapEntry, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("pagemap: %d bytes is not a whole number of 8-byte entries", len(b))
	}
	out := make([]PagemapEntry, len(b)/8)
	for i := range out {
		out[i] = PagemapEntry(binary.LittleEndian.Uint64(b[i*8:]))
	}
	return out, nil
}
