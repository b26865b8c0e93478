//go:build linux

package seccompnotify

import (
	"os"
	"sync/atomic"
	"unsafe"
)

// The journal's layout in its memfd (journal_linux.go). Every field a
// reader trusts after a crash is one aligned 32-bit word written last
// (State, Stage), or is covered by one: x86-64 never tears such a store.

// journalHeader is the first journalHeaderSize bytes of the memfd.
type journalHeader struct {
	Magic     [8]byte
	Version   uint32
	Slots     uint32
	SlotSize  uint32
	NotifSize uint32
	_         [104]byte
}

// slotRaw is one slot. N is where SECCOMP_IOCTL_NOTIF_RECV writes: the
// kernel copies struct seccomp_notif straight into the shared mapping.
// A slot is 128 bytes and slots start 128-aligned, so no slot (and no N)
// straddles a page: the kernel's copy into N cannot fault half-way (it
// faults before the first byte or not at all, and a copy that faults puts
// the notification back in the kernel's queue: seccomp_notify_recv).
type slotRaw struct {
	State uint32 // slotFree, slotReceiving, slotInFlight
	Stage uint32 // Stage
	Errno int32  // the performed call's errno, StagePerformed only
	_     uint32
	Val   int64 // the performed call's value, StagePerformed only
	_     [8]byte
	N     notifRaw
	_     [16]byte
}

const (
	journalHeaderSize = 128
	journalSlotSize   = 128
)

var _ = [1]struct{}{}[unsafe.Sizeof(journalHeader{})-journalHeaderSize]
var _ = [1]struct{}{}[unsafe.Sizeof(slotRaw{})-journalSlotSize]
var _ = [1]struct{}{}[unsafe.Offsetof(slotRaw{}.N)-32]

func (j *Journal) header() *journalHeader {
	return (*journalHeader)(unsafe.Pointer(&j.mem[0]))
}

func (j *Journal) slot(i int32) *slotRaw {
	return (*slotRaw)(unsafe.Pointer(&j.mem[journalHeaderSize+int(i)*journalSlotSize]))
}

func (s *slotRaw) state() uint32     { return atomic.LoadUint32(&s.State) }
func (s *slotRaw) setState(v uint32) { atomic.StoreUint32(&s.State, v) }
func (s *slotRaw) stage() Stage      { return Stage(atomic.LoadUint32(&s.Stage)) }
func (s *slotRaw) setStage(v Stage)  { atomic.StoreUint32(&s.Stage, uint32(v)) }

// touchPages makes a write fault on every page of mem now (a RECV into a
// slot then never waits for a page): an atomic add of 0 to the first word
// of each page, which the compiler cannot drop and which changes nothing.
// Page boundaries fall on slot boundaries, whose first word is the state.
func touchPages(mem []byte) {
	for off := 0; off < len(mem); off += os.Getpagesize() {
		atomic.AddUint32((*uint32)(unsafe.Pointer(&mem[off])), 0)
	}
}
