//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"kfv/event"
	"kfv/memwatch"
	"kfv/orch"
	"kfv/profiles"
	"kfv/qmp"
)

// memwatch in the supervisor: once QEMU's private monitor answers (its
// dynamic loader has finished), a watcher takes a baseline of QEMU's code
// and read-only data, scans it continuously, and sends what it finds to the
// VO as L1 findings of the memory resource; the scrub reaction repairs
// QEMU's memory while it keeps serving its guest.

// stateDir is kfv's state directory, made by make install.
const stateDir = "/var/lib/kfv"

// MemwatchCacheDir is memwatch's baseline cache directory for the
// memwatch_cache setting: "" for none when it is "off", the setting
// when it names a directory, and by default memwatch-cache in kfv's
// state directory for root when that exists, else in kfv's runtime
// directory (lost at reboot: the first VM after one hashes again).
func MemwatchCacheDir(setting string) string {
	switch setting {
	case "off":
		return ""
	case "":
	default:
		return setting
	}
	if fi, err := os.Stat(stateDir); err == nil && fi.IsDir() && os.Geteuid() == 0 {
		return filepath.Join(stateDir, memwatchCacheName)
	}
	return filepath.Join(runtimeDir(), memwatchCacheName)
}

// memwatchCacheName is the cache's directory in kfv's state or runtime
// directory; reapStale leaves it alone.
const memwatchCacheName = "memwatch-cache"

// memSeverity is how much each kind of memwatch finding weighs.
func memSeverity(k memwatch.Kind) profiles.Severity {
	switch k {
	case memwatch.KindModified, memwatch.KindExecMapping:
		return profiles.SevCritical // code changed, or foreign code can run
	case memwatch.KindWritable, memwatch.KindPerms, memwatch.KindReplaced:
		return profiles.SevHigh // the way to change code was opened
	}
	return profiles.SevMedium
}

func memFinding(f memwatch.Finding) orch.Finding {
	detail := fmt.Sprintf("%s %#x-%#x %s %s", f.Kind, f.Start, f.End, f.Mapping.Perms, f.Mapping.Backing())
	if f.Differing > 0 {
		detail += fmt.Sprintf(" (%d bytes differ in %s)", f.Differing, f.Class)
	}
	if f.Detail != "" {
		detail += ": " + f.Detail
	}
	t := f.Time
	if t.IsZero() {
		t = time.Now()
	}
	return orch.Finding{Time: t, Layer: orch.L1, HRSC: orch.HRSCMemory, Detector: profiles.DetMemwatch, Severity: memSeverity(f.Kind), Rule: "memwatch:" + string(f.Kind), Detail: detail}
}

// startMemwatch takes the baseline and starts the scans. Called by the
// plane once the monitor answers.
func (p *plane) startMemwatch(ctx context.Context, c *qmp.Client) {
	cfg := p.cfg.Memwatch
	if cfg == nil {
		return
	}
	mc := *cfg
	mc.Injecting = p.injected.expect
	if m := p.cfg.Metrics; m != nil {
		mc.Scanned = func(st memwatch.ScanStats, findings int) { m.Scan(st.Duration, findings) }
	}
	if mc.Accel == "" {
		mc.Accel = p.accel
	}
	if mc.Accel == "" {
		mc.Accel = queryAccel(ctx, c)
	}
	if mc.Accel == "" {
		mc.Accel = "tcg"
	}
	pid, _ := p.proc.current()
	w, err := memwatch.New(pid, mc)
	if err != nil {
		// A guest that ends at once (a raw guest that exits, a quit
		// right after the monitor answered) takes QEMU away before
		// its memory is opened: not an error either.
		if !p.proc.gone(exitGrace) {
			p.em.emitErr(fmt.Errorf("memwatch: %w", err))
		}
		return
	}
	t0 := time.Now()
	cov, found, err := w.Baseline()
	took := time.Since(t0)
	if err != nil {
		w.Close()
		// QEMU ending (quit soon after its monitor answered) takes its
		// memory away under the baseline: a lifecycle fact, not an error.
		if errors.Is(err, memwatch.ErrExited) || p.proc.gone(exitGrace) {
			p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "memwatch", Detail: "QEMU exited while memwatch took its baseline: nothing to watch"})
			return
		}
		p.em.emitErr(fmt.Errorf("memwatch baseline: %w", err))
		return
	}
	p.memMu.Lock()
	p.mem = w
	p.memMu.Unlock()
	p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "memwatch", Detail: fmt.Sprintf(
		"memwatch baseline (%s) in %v: %d files, %d mappings, %d bytes (text %d, rodata %d, RELRO %d; %d compared with the files on disk, %d hashed as found), tracking %s, pages found by %s, scan every %v; %s",
		mc.Accel, took.Round(time.Microsecond), cov.Files, cov.Mappings, cov.Bytes, cov.TextBytes, cov.RodataBytes, cov.RELROBytes, cov.ComparedBytes, cov.HashedBytes, cov.Tracking, cov.PageScan, mc.Period, cov.Cache)})
	// A cache that cannot be trusted or used is kfv's to fix, not the
	// VM's: a warning, and the baseline reads the files.
	if mc.Cache != "" && cov.Cache.Off != "" {
		p.em.emit(&event.Event{Kind: event.KindWarning, Source: "memwatch", Detail: "memwatch baseline cache not used: " + cov.Cache.Off})
	}
	for _, why := range cov.Cache.Ignored {
		p.em.emit(&event.Event{Kind: event.KindWarning, Source: "memwatch", Detail: "memwatch baseline cache: entry not used: " + why})
	}
	if cov.Cache.Misses > 0 {
		// The misses are written in the background; one that could not
		// be is said once it is known.
		go func() {
			st := w.CacheFilled()
			if ctx.Err() != nil || len(st.Ignored) <= len(cov.Cache.Ignored) {
				return
			}
			for _, why := range st.Ignored[len(cov.Cache.Ignored):] {
				p.em.emit(&event.Event{Kind: event.KindWarning, Source: "memwatch", Detail: "memwatch baseline cache: " + why})
			}
		}()
	}
	for _, f := range found {
		p.observeFromBeside(memFinding(f))
	}
	go func() {
		err := w.Run(ctx, func(f memwatch.Finding) { p.observeFromBeside(memFinding(f)) })
		if err == nil || errors.Is(err, memwatch.ErrExited) || ctx.Err() != nil {
			return
		}
		// QEMU's memory goes before its pidfd reports the exit: a scan
		// failing then is QEMU ending, not an error.
		if p.proc.gone(exitGrace) {
			return
		}
		p.em.emitErr(fmt.Errorf("memwatch: %w", err))
	}()
}

// observeFromBeside queues a finding from a goroutine other than the loop
// (memwatch): it may wait a little for room, never forever.
func (p *plane) observeFromBeside(f orch.Finding) {
	for deadline := time.Now().Add(time.Second); !p.in.push(planeItem{findings: []orch.Finding{f}}); {
		if p.in.isClosed() {
			return
		}
		if time.Now().After(deadline) {
			p.em.emitErr(fmt.Errorf("the vertical orchestrator is behind: memwatch finding not correlated: %s", f.Detail))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrub carries out the scrub reaction.
func (p *plane) scrub() error {
	p.memMu.Lock()
	w := p.mem
	p.memMu.Unlock()
	if w == nil {
		return errors.New("memwatch is not running for this VM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), reactionTimeout)
	defer cancel()
	rep, err := w.Scrub(ctx)
	detail := fmt.Sprintf("scrub: %d threads frozen for %v, %d pages (%d bytes) restored, %d mappings reprotected, verified %v",
		rep.Threads, rep.Frozen.Round(time.Microsecond), rep.PagesRestored, rep.BytesRestored, len(rep.Reprotected), rep.Verified)
	for _, f := range rep.Unrepaired {
		detail += fmt.Sprintf("; not repaired: %s %#x-%#x %s", f.Kind, f.Start, f.End, f.Mapping.Path)
	}
	p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "memwatch", Detail: detail})
	if err != nil {
		return err
	}
	if !rep.Verified || len(rep.Unrepaired) > 0 {
		return errors.New("scrub could not restore QEMU's memory: " + detail)
	}
	return nil
}

func (p *plane) stopMemwatch() {
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if p.mem != nil {
		if err := p.mem.Close(); err != nil {
			p.em.emitErr(fmt.Errorf("memwatch close: %w", err))
		}
		p.mem = nil
	}
}
