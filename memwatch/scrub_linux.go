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
	if !w.baseDone {
		return rep, errors.New("memwatch: scrub before baseline")
	}
	t0 := time.Now()
	fz, err := freeze(w.pid)
	if err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	rep.Threads = len(fz.tasks)
	defer func() {
		if e := fz.thaw(); e != nil {
			err = errors.Join(err, fmt.Errorf("scrub: %w", e))
		}
		rep.Frozen = time.Since(t0)
	}()
	if err := w.restoreLocked(&rep); err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	if err := w.reprotectLocked(fz, &rep); err != nil {
		return rep, fmt.Errorf("scrub: %w", err)
	}
	// Verify with a full check, from a clean slate of reported findings.
	w.reported = map[findingKey]bool{}
	left, _, err := w.scanLocked(true)
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
	return rep, nil
}

func unrepaired(list []Finding, f Finding) bool {
	for _, u := range list {
		if u.Kind == f.Kind && u.Start <= f.Start && f.End <= u.End {
			return true
		}
	}
	return false
}

// restoreLocked writes pristine bytes into every watched page that
// differs from its baseline.
//
// Preconditions: w.mu is held; QEMU is frozen.
func (w *Watcher) restoreLocked(rep *ScrubReport) error {
	cur, want := make([]byte, PageSize), make([]byte, PageSize)
	for _, r := range w.regions {
		ents, err := w.pagemap(r)
		if err != nil {
			return err
		}
		for i := range r.pages() {
			if !w.watchesClass(r.class[i]) {
				continue
			}
			if err := w.pageSource(r, ents[i], i, cur); err != nil {
				return err
			}
			if maphash.Bytes(w.seed, cur) == r.hash[i] {
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
				return fmt.Errorf("restore %#x: %w", addr, err)
			}
			rep.PagesRestored++
			rep.BytesRestored += diffBytes(cur, want)
		}
	}
	return nil
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
		if _, err := fz.inject(t, insn, unix.SYS_MPROTECT, f.Start, f.End-f.Start, prot); err != nil {
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

// injectionPoint picks the thread that will make injected calls (the
// main thread when frozen) and a `syscall` instruction in watched text
// whose page holds its pristine bytes, preferring libc's.
//
// Preconditions: w.mu is held; QEMU is frozen; pages restored.
func (w *Watcher) injectionPoint(fz *frozen) (*task, uint64, error) {
	t := fz.tasks[w.pid]
	if t == nil {
		for _, x := range fz.tasks {
			t = x
			break
		}
	}
	if t == nil {
		return nil, 0, errors.New("no thread left to make the call")
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
