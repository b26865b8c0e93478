package memwatch

import (
	"fmt"
	"os"
	"unsafe"
)

// selfPagemap returns this process's pagemap entry for the page holding
// b[0].
func selfPagemap(b []byte) (PagemapEntry, error) {
	addr := addrOf(b)
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, fmt.Errorf("open own pagemap: %w", err)
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(addr/PageSize*8)); err != nil {
		return 0, fmt.Errorf("read own pagemap at %#x: %w", addr, err)
	}
	ents, err := ParsePagemap(e[:])
	if err != nil {
		return 0, err
	}
	return ents[0], nil
}

// addrOf returns the address of b[0].
func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
