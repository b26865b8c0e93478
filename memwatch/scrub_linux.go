package memwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Scrub repairs QEMU's memory while all its threads are frozen: it
// writes the pristine bytes back into every watched page that differs
// from the baseline (the file's bytes for text and rodata, the baseline
// copy for RELRO), sets watched mappings back to their baseline
// protection, removes the execute right from stray executable memory
// (by making a frozen QEMU thread call mprotect), checks everything
// again, and resumes QEMU.
//
// The caller must be allowed to ptrace QEMU: its parent, or root (or
// CAP_SYS_PTRACE), and with Yama, ptrace_scope 0 or 1 for a parent. A
// QEMU thread running injected code when frozen resumes at the same
// address: if that memory is no longer executable, the thread faults
// and QEMU dies, which a supervisor treats as a crash.
//
// Scrub holds the watcher's lock, so no scan runs meanwhile; ctx bounds
// only the wait for that lock's holder to start it.
func (w *Watcher) Scrub(ctx context.Context) (ScrubReport, error) {
	type result struct {
		rep ScrubReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		// ptrace binds the tracees to this OS thread. The thread is
		// never unlocked: it ends with this goroutine, and should a
		// detach have failed, the kernel detaches its tracees then.
		runtime.LockOSThread()
		w.mu.Lock()
		defer w.mu.Unlock()
		if err := ctx.Err(); err != nil {
			done <- result{err: fmt.Errorf("scrub: %w", err)}
			return
		}
		rep, err := w.scrubLocked()
		done <- result{rep, err}
	}()
	r := <-done
	return r.rep, r.err
}

// Preconditions: w.mu is held, on a locked OS thread.
func (w *Watcher) scrubLocked() (rep ScrubReport, err error) {
	defer w.dropRELROLocked()
	if !w.baseDone {
		return rep, errors.New("memwatch: scrub before baseline")
	}
	t0 := time.Now()
	fz, err := freeze(w.pid)
	if err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	rep.Threads = len(fz.tasks) + 1
	defer func() {
		if e := fz.thaw(); e != nil {
			err = errors.Join(err, fmt.Errorf("scrub: %w", e))
		}
		rep.Frozen = time.Since(t0)
	}()
	restored, err := w.restoreLocked(&rep)
	if err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	if err := w.reprotectLocked(fz, &rep); err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	left, err := w.verifyLocked(restored)
	if err != nil {
		return rep, fmt.Errorf("scrub: verify: %w", err)
	}
	rep.Verified = true
	for _, f := range left {
		if !unrepaired(rep.Unrepaired, f) {
			rep.Verified = false
			rep.Unrepaired = append(rep.Unrepaired, f)
		}
	}
	// What was repaired may be reported again if it comes back; what
	// was not stays reported.
	w.reported = map[findingKey]bool{}
	w.lastMaps = nil
	for _, f := range rep.Unrepaired {
		if f.Kind == KindModified {
			for a := f.Start; a < f.End; a += PageSize {
				w.reported[findingKey{KindModified, a, a + PageSize}] = true
			}
		} else {
			w.reported[findingKey{f.Kind, f.Start, f.End}] = true
		}
	}
	return rep, nil
}

// pageRef names page i of a region.
type pageRef struct {
	r *region
	i int
}

// verifyLocked checks again the pages restored and the mappings, and
// returns what is still wrong.
//
// Preconditions: w.mu is held; QEMU is frozen.
func (w *Watcher) verifyLocked(restored []pageRef) ([]Finding, error) {
	var left []Finding
	cur, want := make([]byte, PageSize), make([]byte, PageSize)
	for _, p := range restored {
		addr := p.r.Start + uint64(p.i)*PageSize
		if _, err := w.mem.ReadAt(cur, int64(addr)); err != nil {
			return nil, fmt.Errorf("read memory at %#x: %w", addr, err)
		}
		if h, ok, err := w.refLocked(p.r, p.i, want); err != nil {
			return nil, err
		} else if !ok || maphash.Bytes(w.seed, cur) != h {
			left = append(left, Finding{Kind: KindModified, Start: addr, End: addr + PageSize, Mapping: p.r.Mapping,
				Class: p.r.class[p.i], Time: time.Now(), Detail: "still differs after restore"})
		}
	}
	maps, err := w.readMaps()
	if err != nil {
		return nil, err
	}
	if w.cfg.Watch&WatchMappings != 0 {
		mf, _ := mapsDiff(w.watched, maps, w.tcg, w.lateDirs, w.skip)
		left = append(left, mf...)
	}
	return left, nil
}

func unrepaired(list []Finding, f Finding) bool {
	for _, u := range list {
		if u.Kind == f.Kind && u.Start <= f.Start && f.End <= u.End {
			return true
		}
	}
	return false
}

// restoreLocked writes pristine bytes into every watched page of QEMU
// that differs from its baseline, and returns the pages it wrote. It
// reads the pages QEMU holds a private copy of: only those can differ
// from the file, which the scans and the sweep check (a file changed on
// disk since the baseline cannot be repaired from it anyway).
//
// Preconditions: w.mu is held; QEMU is frozen.
func (w *Watcher) restoreLocked(rep *ScrubReport) ([]pageRef, error) {
	var restored []pageRef
	cur, want := make([]byte, PageSize), make([]byte, PageSize)
	for _, r := range w.regions {
		ents, err := w.pagemap(r)
		if err != nil {
			return nil, err
		}
		for i := range r.pages() {
			if !w.watchesClass(r.class[i]) || !ents[i].Private() {
				continue
			}
			if err := w.pageSource(r, ents[i], i, cur); err != nil {
				return nil, err
			}
			if h, ok, err := w.refLocked(r, i, want); err != nil {
				return nil, err
			} else if ok && maphash.Bytes(w.seed, cur) == h {
				continue
			}
			addr := r.Start + uint64(i)*PageSize
			if err := w.pristine(r, i, want); err != nil {
				rep.Unrepaired = append(rep.Unrepaired, Finding{Kind: KindModified, Start: addr, End: addr + PageSize,
					Mapping: r.Mapping, Class: r.class[i], Time: time.Now(), Detail: err.Error()})
				continue
			}
			// A write through /proc/PID/mem goes through read-only
			// protection (FOLL_FORCE), into QEMU's private copy.
			if _, err := w.mem.WriteAt(want, int64(addr)); err != nil {
				return nil, fmt.Errorf("restore %#x: %w", addr, err)
			}
			restored = append(restored, pageRef{r, i})
			rep.PagesRestored++
			rep.BytesRestored += diffBytes(cur, want)
		}
	}
	return restored, nil
}

// reprotectLocked sets watched mappings back to their baseline
// protection and removes the execute right from stray executable
// memory, by injecting mprotect into a frozen QEMU thread.
//
// Preconditions: w.mu is held; QEMU is frozen (fz), on its tracer thread.
func (w *Watcher) reprotectLocked(fz *frozen, rep *ScrubReport) error {
	maps, err := w.readMaps()
	if err != nil {
		return err
	}
	found, _ := mapsDiff(w.watched, maps, w.tcg, w.lateDirs, w.skip)
	var t *task
	var insn uint64
	for _, f := range found {
		var prot uint64
		switch f.Kind {
		case KindWritable, KindPerms:
			prot = protOf(strings.TrimPrefix(f.Detail, "was "))
		case KindExecMapping:
			prot = protOf(f.Mapping.Perms) &^ unix.PROT_EXEC
		default:
			rep.Unrepaired = append(rep.Unrepaired, f)
			continue
		}
		if t == nil {
			if t, insn, err = w.injectionPoint(fz); err != nil {
				return err
			}
		}
		var done func()
		if w.cfg.Injecting != nil {
			done = w.cfg.Injecting(t.tid, unix.SYS_MPROTECT, [3]uint64{f.Start, f.End - f.Start, prot})
		}
		_, err := fz.inject(t, insn, unix.SYS_MPROTECT, f.Start, f.End-f.Start, prot)
		if done != nil {
			done()
		}
		if err != nil {
			return fmt.Errorf("mprotect %#x-%#x in QEMU: %w", f.Start, f.End, err)
		}
		rep.Reprotected = append(rep.Reprotected, f)
	}
	return nil
}

// protOf turns maps permissions into PROT_ bits.
func protOf(perms string) uint64 {
	var p uint64
	if strings.Contains(perms, "r") {
		p |= unix.PROT_READ
	}
	if strings.Contains(perms, "w") {
		p |= unix.PROT_WRITE
	}
	if strings.Contains(perms, "x") {
		p |= unix.PROT_EXEC
	}
	return p
}

// injectionPoint picks the thread that will make injected calls and a `syscall` instruction in watched text
// whose page holds its pristine bytes, preferring libc's.
//
// Preconditions: w.mu is held; QEMU is frozen; pages restored.
func (w *Watcher) injectionPoint(fz *frozen) (*task, uint64, error) {
	// A traced thread other than the main one (see frozen): the lowest
	// thread id, QEMU's first helper thread.
	var t *task
	for _, x := range fz.tasks {
		if t == nil || x.tid < t.tid {
			t = x
		}
	}
	if t == nil {
		return nil, 0, errors.New("no thread besides the main one to make the call")
	}
	var best uint64
	buf := make([]byte, PageSize)
	for _, r := range w.regions {
		isLibc := strings.Contains(r.Path, "/libc.so") || strings.Contains(r.Path, "/libc-")
		if !r.Executable() || (best != 0 && !isLibc) {
			continue
		}
		for i := range r.pages() {
			if err := w.pristine(r, i, buf); err != nil {
				continue
			}
			// The instruction must not straddle the page end.
			if j := bytes.Index(buf, syscallInsn); j >= 0 {
				best = r.Start + uint64(i)*PageSize + uint64(j)
				break
			}
		}
		if best != 0 && isLibc {
			break
		}
	}
	if best == 0 {
		return nil, 0, errors.New("no syscall instruction in QEMU's text")
	}
	return t, best, nil
}
