//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Journal records the notifications a supervisor has received and not yet
// answered, in shared memory that outlives the supervisor: a sealed memfd
// that a keeper holds beside its copy of the listener. The kernel
// delivers a notification to SECCOMP_IOCTL_NOTIF_RECV once; after that it
// waits for an answer by id (and, with WAIT_KILLABLE_RECV, its thread can
// only be killed). A supervisor that dies holding received notifications
// leaves those threads blocked until someone answers their ids: the
// journal is where a new supervisor finds them (Resume).
//
// A Listener that uses a journal (UseJournal) receives each notification
// straight into a free slot of the mapping, so there is no moment at which
// the kernel has handed a notification over and the journal has not got
// it. The slot is freed when the notification is answered (Continue,
// Fail, Return, AddFD with send) or found gone (IDValid, a failed answer).
// Between the two, the gate may record how far it got with a performed
// call (Stage, Performed), so that a new supervisor never performs twice
// a call that is not idempotent.
//
// A journal belongs to one listener (one filter) and to one supervisor at
// a time: two live supervisors on one journal would overwrite each other's
// slots. The kernel enforces the second: each Journal holds a write lock
// (F_OFD_SETLK) on an open file description of the memfd of its own,
// which the kernel drops when its process dies, so OpenJournal fails
// while the previous owner lives.
type Journal struct {
	f     *os.File
	lock  *os.File // the memfd opened again, holding the owner's lock
	mem   []byte
	slots int

	free chan int32 // indexes of free slots; capacity slots, never blocks a send

	// mu guards byID, orphans and the writes of Stage and Performed, so
	// that a record for an id never lands in a slot freed and taken again
	// for another one.
	mu      sync.Mutex
	byID    map[uint64]int32 // received, not yet answered
	orphans []int32          // found in use by OpenJournal, until Resume
}

// Stage is how far the supervisor got with a received notification. A new
// supervisor acts on it (Resume): see docs/architecture.md, "Takeover: the
// in-flight journal".
type Stage uint32

const (
	// StageReceived: nothing done outside the kernel yet. Decide the
	// call again from the start.
	StageReceived Stage = iota
	// StagePerforming: a performed call was started; its effect (a
	// directory made, a socket connected) may or may not have happened.
	// Never perform it again unless it is idempotent.
	StagePerforming
	// StagePerformed: performed, with the result in Val and Errno; the
	// answer may not have been sent. Send that result, perform nothing.
	StagePerformed
)

func (s Stage) String() string {
	switch s {
	case StageReceived:
		return "received"
	case StagePerforming:
		return "performing"
	case StagePerformed:
		return "performed"
	}
	return fmt.Sprintf("stage(%d)", uint32(s))
}

// Slot states. A slot is slotReceiving from just before RECV into it
// until the id is registered; a supervisor killed in between leaves it so,
// with N all zero (RECV had not returned: the notification is still in
// the kernel's queue, or back in it) or N complete (RECV had returned).
const (
	slotFree uint32 = iota
	slotReceiving
	slotInFlight
)

// InFlight is a notification a previous supervisor received and did not
// answer, whose caller still waits (Resume).
type InFlight struct {
	Notif Notif
	Stage Stage
	// Val and Errno are the performed call's result (StagePerformed).
	Val   int64
	Errno unix.Errno
}

// DefaultJournalSlots is more than kfv ever holds in flight: the loop's
// one call, maxWorkers performed beside it, and the calls held for the
// VO.
const DefaultJournalSlots = 256

// maxJournalSlots bounds a journal found in a memfd (OpenJournal).
const maxJournalSlots = 1 << 16

var journalMagic = [8]byte{'k', 'f', 'v', 'j', 'r', 'n', 'l', 0}

const journalVersion = 1

// journalSeals are the seals a journal's memfd must carry: nobody can
// shrink it under a mapping (a SIGBUS in the supervisor) or grow it, and
// nobody can add a seal (F_SEAL_FUTURE_WRITE would keep the next
// supervisor from mapping it writable).
const journalSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// CreateJournal makes a journal of slots slots in a new memfd (close-on-
// exec, sealed at its size). Hand File to the keeper.
func CreateJournal(slots int) (*Journal, error) {
	if slots < 1 || slots > maxJournalSlots {
		return nil, fmt.Errorf("create journal: %d slots, want 1 to %d", slots, maxJournalSlots)
	}
	fd, err := unix.MemfdCreate("kfv-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create(kfv-journal)", err)
	}
	f := os.NewFile(uintptr(fd), "kfv-journal")
	size := journalHeaderSize + slots*journalSlotSize
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		f.Close()
		return nil, os.NewSyscallError("ftruncate(kfv-journal)", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, journalSeals); err != nil {
		f.Close()
		return nil, os.NewSyscallError("fcntl(kfv-journal, F_ADD_SEALS)", err)
	}
	lock, err := lockJournal(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("create journal: %w", err)
	}
	mem, err := mapJournal(f, size)
	if err != nil {
		lock.Close()
		f.Close()
		return nil, err
	}
	j := newJournal(f, lock, mem, slots)
	h := j.header()
	h.Version, h.Slots, h.SlotSize, h.NotifSize = journalVersion, uint32(slots), journalSlotSize, 80
	h.Magic = journalMagic // last: a header without it is not a journal
	for i := range slots {
		j.free <- int32(i)
	}
	return j, nil
}

// OpenJournal maps the journal in f (a memfd made by CreateJournal, from
// the keeper) and, on success, takes f over. Slots in use are kept for Resume; no
// Receive overwrites them.
func OpenJournal(f *os.File) (*Journal, error) {
	name := f.Name()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", name, os.NewSyscallError("fcntl(F_GET_SEALS)", err))
	}
	if seals&journalSeals != journalSeals {
		return nil, fmt.Errorf("open journal %s: seals %#x, want %#x (shrink, grow, seal): not a kfv journal", name, seals, journalSeals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("open journal %s: %w", name, os.NewSyscallError("fstat", err))
	}
	size := int(st.Size)
	if size < journalHeaderSize+journalSlotSize || size > journalHeaderSize+maxJournalSlots*journalSlotSize {
		return nil, fmt.Errorf("open journal %s: size %d bytes is not that of a journal", name, size)
	}
	lock, err := lockJournal(f)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", name, err)
	}
	mem, err := mapJournal(f, size)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open journal %s: %w", name, err)
	}
	j := &Journal{mem: mem}
	h := j.header()
	bad := ""
	switch {
	case h.Magic != journalMagic:
		bad = fmt.Sprintf("magic %q", h.Magic[:])
	case h.Version != journalVersion:
		bad = fmt.Sprintf("version %d, kfv knows %d", h.Version, journalVersion)
	case h.SlotSize != journalSlotSize || h.NotifSize != 80:
		bad = fmt.Sprintf("slot size %d and notification size %d, kfv knows %d and 80", h.SlotSize, h.NotifSize, journalSlotSize)
	case int(h.Slots) != (size-journalHeaderSize)/journalSlotSize || size != journalHeaderSize+int(h.Slots)*journalSlotSize:
		bad = fmt.Sprintf("%d slots in %d bytes", h.Slots, size)
	}
	if bad != "" {
		unix.Munmap(mem) //nolint:errcheck // the mapping is ours and valid; the error reported is the header's
		lock.Close()
		return nil, fmt.Errorf("open journal %s: header: %s", name, bad)
	}
	j = newJournal(f, lock, mem, int(h.Slots))
	for i := range int32(j.slots) {
		if j.slot(i).state() == slotFree {
			j.free <- i
		} else {
			j.orphans = append(j.orphans, i)
		}
	}
	return j, nil
}

func newJournal(f, lock *os.File, mem []byte, slots int) *Journal {
	return &Journal{f: f, lock: lock, mem: mem, slots: slots, free: make(chan int32, slots), byID: make(map[uint64]int32)}
}

// ErrJournalInUse is returned by OpenJournal while another Journal, in
// this process or another live one, has the same memfd open.
var ErrJournalInUse = errors.New("the journal is in use by a live supervisor")

// lockJournal opens f again (a new open file description: the keeper's
// copy of f shares f's, so a lock on f's would outlive the supervisor)
// and takes a write lock on it. The kernel drops the lock when the
// description's last fd is closed: at Close, or when the process dies.
func lockJournal(f *os.File) (*os.File, error) {
	lock, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the memfd again for its lock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(lock.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		lock.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, ErrJournalInUse
		}
		return nil, os.NewSyscallError("fcntl(F_OFD_SETLK)", err)
	}
	return lock, nil
}

// mapJournal maps f shared and touches every page, so that no later
// access to the journal faults (a RECV into a slot never waits for a page).
func mapJournal(f *os.File, size int) ([]byte, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap(kfv-journal)", err)
	}
	touchPages(mem)
	return mem, nil
}

// File returns the journal's memfd, for the keeper. The Journal still
// owns it.
func (j *Journal) File() *os.File { return j.f }

// Slots returns the journal's number of slots.
func (j *Journal) Slots() int { return j.slots }

// InUse returns how many slots are not free: holding a notification
// received and not answered, found by OpenJournal and not yet resumed, or
// taken by a Receive under way.
func (j *Journal) InUse() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.slots - len(j.free)
}

// Close unmaps the journal and closes its memfd. Call it after the
// listener that uses it is closed. The slots stay in the memfd for
// whoever else holds it.
func (j *Journal) Close() error {
	err := unix.Munmap(j.mem)
	if err != nil {
		err = os.NewSyscallError("munmap(kfv-journal)", err)
	}
	j.mem = nil
	return errors.Join(err, j.lock.Close(), j.f.Close())
}

// journalSweep is how often a Receive waiting for a free slot looks for
// slots whose caller is gone.
const journalSweep = 50 * time.Millisecond

// take returns a free slot for the next RECV. With every slot in use it
// first frees the slots of callers that are gone (a notification dropped
// without IDValid or an answer), then waits for a Free, looking again
// every journalSweep; it returns ErrClosed on Shutdown. While it waits,
// the next notification stays in the kernel's queue, where any
// supervisor on the listener can still receive it.
func (j *Journal) take(l *Listener) (int32, error) {
	select {
	case i := <-j.free:
		return i, nil
	default:
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case i := <-j.free:
			return i, nil
		case <-l.stopped:
			return -1, ErrClosed
		case <-t.C:
			j.sweep(l)
			t.Reset(journalSweep)
		}
	}
}

// sweep frees the slots whose notification is no longer valid.
func (j *Journal) sweep(l *Listener) {
	j.mu.Lock()
	ids := make([]uint64, 0, len(j.byID))
	for id := range j.byID {
		ids = append(ids, id)
	}
	j.mu.Unlock()
	for _, id := range ids {
		if err := idValid(l.fd, id); errors.Is(err, unix.ENOENT) {
			j.Free(id)
		}
	}
}

// begin readies slot i for a RECV and returns where the kernel is to
// write. The state says receiving only once the old content is gone.
func (j *Journal) begin(i int32) *notifRaw {
	s := j.slot(i)
	s.setStage(StageReceived)
	s.Errno, s.Val = 0, 0
	s.N = notifRaw{} // RECV wants a zeroed buffer
	s.setState(slotReceiving)
	return &s.N
}

// commit registers the notification just received into slot i.
func (j *Journal) commit(i int32, id uint64) {
	j.mu.Lock()
	j.byID[id] = i
	j.slot(i).setState(slotInFlight)
	j.mu.Unlock()
}

// release gives back a slot taken for a RECV that delivered nothing.
func (j *Journal) release(i int32) {
	j.slot(i).setState(slotFree)
	j.free <- i
}

// Stage records that the supervisor got as far as s with notification id.
// An id the journal does not hold (answered, gone) is ignored.
func (j *Journal) Stage(id uint64, s Stage) {
	j.mu.Lock()
	if i, ok := j.byID[id]; ok {
		j.slot(i).setStage(s)
	}
	j.mu.Unlock()
}

// Performed records the result of performed call id before it is sent:
// the stage word is written last, so a reader that sees StagePerformed
// sees the result.
func (j *Journal) Performed(id uint64, val int64, errno unix.Errno) {
	j.mu.Lock()
	if i, ok := j.byID[id]; ok {
		s := j.slot(i)
		s.Val, s.Errno = val, int32(errno)
		s.setStage(StagePerformed)
	}
	j.mu.Unlock()
}

// Free frees the slot of notification id: it is answered, or its caller
// is gone. An id the journal does not hold is ignored, so freeing twice
// is harmless.
func (j *Journal) Free(id uint64) {
	j.mu.Lock()
	i, ok := j.byID[id]
	if ok {
		delete(j.byID, id)
		j.slot(i).setState(slotFree)
	}
	j.mu.Unlock()
	if ok {
		j.free <- i
	}
}

// Resume returns the notifications that the journal's previous owner
// received and did not answer and whose callers still wait, and frees
// every other slot it found in use. l must use j (UseJournal); answer
// each InFlight through l as its Stage says (the answer frees its slot).
// Call it once, before the first Receive.
func (j *Journal) Resume(l *Listener) ([]InFlight, error) {
	if l.journal != j {
		return nil, errors.New("resume journal: the listener does not use this journal (UseJournal)")
	}
	j.mu.Lock()
	orphans := j.orphans
	j.orphans = nil
	j.mu.Unlock()
	var out []InFlight
	var errs []error
	for _, i := range orphans {
		s := j.slot(i)
		n := s.N
		if n.Arch == 0 {
			// RECV had not returned into this slot (a received
			// notification always has an audit arch): nothing was
			// handed over.
			j.release(i)
			continue
		}
		if err := idValid(l.fd, n.ID); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("resume journal slot %d (notification %d): %w", i, n.ID, os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)", err)))
				j.mu.Lock()
				j.orphans = append(j.orphans, i) // kept: a later Resume may tell
				j.mu.Unlock()
				continue
			}
			j.release(i) // answered, or its caller is gone
			continue
		}
		st := s.stage()
		if st > StagePerformed {
			// Not a stage kfv writes: it cannot tell whether a call
			// was performed, so it says it may have been.
			st = StagePerforming
		}
		f := InFlight{Notif: Notif{ID: n.ID, PID: int(n.PID), Nr: int(n.Nr), Arch: n.Arch, IP: n.IP, Args: n.Args}, Stage: st}
		if st == StagePerformed {
			f.Val, f.Errno = s.Val, unix.Errno(s.Errno)
		}
		j.mu.Lock()
		_, dup := j.byID[n.ID]
		if !dup {
			j.byID[n.ID] = i
			s.setState(slotInFlight)
		}
		j.mu.Unlock()
		if dup {
			j.release(i) // the same notification twice: one slot answers it
			continue
		}
		out = append(out, f)
	}
	return out, errors.Join(errs...)
}
