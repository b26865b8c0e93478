package memwatch

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The PAGEMAP_SCAN ioctl of /proc/PID/pagemap (Linux 6.7,
// fs/proc/task_mmu.c). Headers older than 6.7 (Debian 12's) do not
// define it, so its ABI is written out here, with the values of
// include/uapi/linux/fs.h; Documentation/admin-guide/mm/pagemap.rst
// describes it.
const (
	// _IOWR('f', 16, struct pm_scan_arg): 3<<30 | 96<<16 | 'f'<<8 | 16.
	pagemapScanIoctl = 0xc0606610

	// Page categories (PAGE_IS_*), asked for in pm_scan_arg's masks and
	// returned in page_region.categories.
	pageIsWPAllowed = 1 << 0
	pageIsWritten   = 1 << 1
	pageIsFile      = 1 << 2 // a page-cache page (not anonymous)
	pageIsPresent   = 1 << 3
	pageIsSwapped   = 1 << 4
	pageIsPFNZero   = 1 << 5
	pageIsHuge      = 1 << 6
	pageIsSoftDirty = 1 << 7
)

// pmScanArg is struct pm_scan_arg (96 bytes, all __u64).
type pmScanArg struct {
	size              uint64 // sizeof(struct pm_scan_arg): the kernel refuses any other
	flags             uint64 // PM_SCAN_*: 0, only read (no write-protection)
	start             uint64 // first address, page aligned
	end               uint64 // end of the range (exclusive)
	walkEnd           uint64 // written by the kernel: where the walk stopped
	vec               uint64 // address of the page_region array
	vecLen            uint64 // its length in entries
	maxPages          uint64 // 0: no limit
	categoryInverted  uint64 // categories that match when 0 rather than 1
	categoryMask      uint64 // all of these must match
	categoryAnyofMask uint64 // at least one of these must match (0: no test)
	returnMask        uint64 // categories reported (runs of pages merge when these agree)
}

// pageRegion is struct page_region: a run of matching pages.
type pageRegion struct {
	start, end, categories uint64
}

// pagemapScan asks the kernel, through the pagemap file fd of a process,
// for the runs of pages in [start, end) that match q, into vec. The kernel
// walks the page tables of the VMAs in the range (not each page's
// 8-byte entry, as a read does), merges adjacent matching pages whose
// returned categories agree into one page_region, and stops when vec is
// full: it returns the number of runs written and walk_end, the address
// where it stopped (end when the whole range was walked).
func pagemapScan(fd uintptr, q pmScanArg, start, end uint64, vec []pageRegion) (int, uint64, error) {
	q.size = uint64(unsafe.Sizeof(q))
	q.start, q.end = start, end
	q.vec = uint64(uintptr(unsafe.Pointer(&vec[0])))
	q.vecLen = uint64(len(vec))
	n, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, pagemapScanIoctl, uintptr(unsafe.Pointer(&q)))
	runtime.KeepAlive(vec)
	if errno != 0 {
		return 0, 0, os.NewSyscallError("ioctl PAGEMAP_SCAN", errno)
	}
	return int(n), q.walkEnd, nil
}
