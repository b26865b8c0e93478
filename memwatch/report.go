package memwatch

import "time"

// ScanStats says what one scan did.
type ScanStats struct {
	Duration     time.Duration
	PagesChecked int // pages read and hashed
	PagesTracked int // pages whose pagemap entry was read
	SoftDirty    int // RELRO pages found soft-dirty
	Private      int // text and rodata pages found with a private copy
}

// ScrubReport says what a scrub did.
type ScrubReport struct {
	Threads       int           // QEMU threads frozen
	Frozen        time.Duration // how long QEMU was frozen
	PagesRestored int
	BytesRestored int       // bytes that differed in the restored pages
	Reprotected   []Finding // mappings whose protection was set back or whose execute right was removed
	Unrepaired    []Finding // what scrub could not repair (replaced or unmapped code, a changed file)
	Verified      bool      // after repair, a full check found nothing but Unrepaired
}
