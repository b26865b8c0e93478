package memwatch

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

var softDirty struct {
	once sync.Once
	ok   bool
	err  error
}

// SoftDirtySupported says whether this kernel keeps soft-dirty bits
// (CONFIG_MEM_SOFT_DIRTY). Without it, clear_refs accepts "4" and
// pagemap's bit 55 stays 0, which would read as "nothing was written":
// so it is probed on a page of this process, once.
func SoftDirtySupported() (bool, error) {
	softDirty.once.Do(func() { softDirty.ok, softDirty.err = probeSoftDirty() })
	return softDirty.ok, softDirty.err
}

func probeSoftDirty() (ok bool, err error) {
	page, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false, fmt.Errorf("probe soft-dirty: %w", os.NewSyscallError("mmap", err))
	}
	defer func() {
		if e := unix.Munmap(page); e != nil {
			err = errors.Join(err, fmt.Errorf("probe soft-dirty: %w", os.NewSyscallError("munmap", e)))
		}
	}()
	page[0] = 1
	if err := clearSoftDirty(os.Getpid()); err != nil {
		return false, err
	}
	before, err := selfPagemap(page)
	if err != nil {
		return false, err
	}
	page[0] = 2
	after, err := selfPagemap(page)
	if err != nil {
		return false, err
	}
	return !before.SoftDirty() && after.SoftDirty(), nil
}

// clearSoftDirty clears the soft-dirty bits of every page of pid. The
// kernel write-protects all its page-table entries, so each page's next
// write faults once to set the bit again: the cost falls on all of
// QEMU's memory, guest RAM included, not only on the watched pages.
func clearSoftDirty(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("4"), 0); err != nil {
		return fmt.Errorf("clear soft-dirty bits: %w", err)
	}
	return nil
}
