//go:build linux

package seccompnotify

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestJournalCreate(t *testing.T) {
	for _, n := range []int{0, -1, maxJournalSlots + 1} {
		if _, err := CreateJournal(n); err == nil || !strings.Contains(err.Error(), "slots") {
			t.Errorf("CreateJournal(%d) = %v, want an error about slots", n, err)
		}
	}
	j, err := CreateJournal(3)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	seals, err := unix.FcntlInt(j.File().Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals != journalSeals {
		t.Errorf("seals %#x, want %#x", seals, journalSeals)
	}
	if err := unix.Ftruncate(int(j.File().Fd()), 1<<20); err == nil {
		t.Error("a journal's memfd could grow")
	}
	if err := unix.Ftruncate(int(j.File().Fd()), 0); err == nil {
		t.Error("a journal's memfd could shrink")
	}
	if _, err := unix.FcntlInt(j.File().Fd(), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); err == nil {
		t.Error("a seal could be added to a journal's memfd")
	}
	if j.Slots() != 3 || j.InUse() != 0 {
		t.Errorf("%d slots, %d in use; want 3, 0", j.Slots(), j.InUse())
	}
}

// TestJournalOpenRefuses: OpenJournal maps only a kfv journal, and says
// what is wrong with anything else.
func TestJournalOpenRefuses(t *testing.T) {
	memfd := func(t *testing.T, size int, seals int) *os.File {
		fd, err := unix.MemfdCreate("not-a-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "not-a-journal")
		t.Cleanup(func() { f.Close() })
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			t.Fatal(err)
		}
		if seals != 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}
	// journal returns a new journal's memfd after edit has changed its
	// header.
	journal := func(t *testing.T, edit func(h *journalHeader)) *os.File {
		j, err := CreateJournal(4)
		if err != nil {
			t.Fatal(err)
		}
		edit(j.header())
		f := dupFile(t, j.File())
		t.Cleanup(func() { f.Close() })
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		return f
	}
	size := journalHeaderSize + 4*journalSlotSize
	for _, tc := range []struct {
		name string
		f    func(t *testing.T) *os.File
		want string
	}{
		{"not sealed", func(t *testing.T) *os.File { return memfd(t, size, 0) }, "seals"},
		{"may grow", func(t *testing.T) *os.File { return memfd(t, size, unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL) }, "seals"},
		{"too small", func(t *testing.T) *os.File { return memfd(t, 64, journalSeals) }, "size 64"},
		{"zeros", func(t *testing.T) *os.File { return memfd(t, size, journalSeals) }, "magic"},
		{"version", func(t *testing.T) *os.File { return journal(t, func(h *journalHeader) { h.Version = 2 }) }, "version 2"},
		{"slot size", func(t *testing.T) *os.File { return journal(t, func(h *journalHeader) { h.SlotSize = 64 }) }, "slot size 64"},
		{"slots", func(t *testing.T) *os.File { return journal(t, func(h *journalHeader) { h.Slots = 5 }) }, "5 slots in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f(t)
			j, err := OpenJournal(f)
			if err == nil {
				j.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), "open journal") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one naming the journal and %q", err, tc.want)
			}
		})
	}
	t.Run("a journal", func(t *testing.T) {
		j, err := OpenJournal(journal(t, func(*journalHeader) {}))
		if err != nil {
			t.Fatal(err)
		}
		if j.Slots() != 4 || j.InUse() != 0 {
			t.Errorf("%d slots, %d in use; want 4, 0", j.Slots(), j.InUse())
		}
		j.Close()
	})
}

// TestJournalOneOwner: a journal cannot be opened while another Journal
// has it, and can once that one is closed.
func TestJournalOneOwner(t *testing.T) {
	j, err := CreateJournal(2)
	if err != nil {
		t.Fatal(err)
	}
	keep := dupFile(t, j.File())
	defer keep.Close()
	if k, err := OpenJournal(dupFile(t, keep)); !errors.Is(err, ErrJournalInUse) {
		if err == nil {
			k.Close()
		}
		t.Fatalf("OpenJournal while its creator has it: %v, want ErrJournalInUse", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	k, err := OpenJournal(dupFile(t, keep))
	if err != nil {
		t.Fatalf("OpenJournal after its owner closed it: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestJournalBookkeeping: Stage, Performed and Free act on the slot of
// their id only, and an id the journal does not hold changes nothing.
func TestJournalBookkeeping(t *testing.T) {
	j, err := CreateJournal(2)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	commit := func(id uint64) int32 {
		i := <-j.free
		n := j.begin(i)
		n.ID, n.Arch = id, unix.AUDIT_ARCH_X86_64
		j.commit(i, id)
		return i
	}
	a, b := commit(100), commit(200)
	j.Stage(200, StagePerforming)
	j.Performed(100, 7, unix.EEXIST)
	j.Stage(300, StagePerformed) // not held
	if s := j.slot(a); s.stage() != StagePerformed || s.Val != 7 || s.Errno != int32(unix.EEXIST) {
		t.Errorf("slot of 100: stage %v, result %d/%d", s.stage(), s.Val, s.Errno)
	}
	if s := j.slot(b); s.stage() != StagePerforming {
		t.Errorf("slot of 200: stage %v", s.stage())
	}
	j.Free(100)
	j.Free(100) // twice: harmless
	if j.InUse() != 1 || len(j.free) != 1 {
		t.Fatalf("%d in use, %d free after one Free, want 1, 1", j.InUse(), len(j.free))
	}
	// The slot freed is taken by 300; a late Stage for 100 must not
	// land on it.
	c := commit(300)
	if c != a {
		t.Fatalf("took slot %d, want the freed %d", c, a)
	}
	j.Stage(100, StagePerforming)
	j.Performed(100, 1, 0)
	if s := j.slot(c); s.stage() != StageReceived || s.Val != 0 {
		t.Errorf("slot of 300 after records for 100: stage %v, val %d", s.stage(), s.Val)
	}
}

// BenchmarkJournalRecord is the journal's own work per notification,
// without the kernel: take a slot, ready it, commit, free.
func BenchmarkJournalRecord(b *testing.B) {
	j, err := CreateJournal(DefaultJournalSlots)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	l := &Listener{stopped: make(chan struct{})}
	for i := range b.N {
		s, err := j.take(l)
		if err != nil {
			b.Fatal(err)
		}
		n := j.begin(s)
		n.ID = uint64(i)
		j.commit(s, n.ID)
		j.Free(n.ID)
	}
}
