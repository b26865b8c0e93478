package memwatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Measurements are memwatch's costs on one QEMU, for the bench.
type Measurements struct {
	Tracking   Tracking
	Period     time.Duration
	WatchedMiB float64
	// FullScanPerMiB is the time a full scan (every watched page read and
	// hashed) takes per MiB watched.
	FullScanPerMiB time.Duration
	// Scan is the mean time of a steady-state scan (maps, pagemap,
	// tracked pages and the sweep's slice).
	Scan time.Duration
	// CPUShare is the watcher's CPU time over wall time on an idle VM
	// (the calling process's CPU time while watching, less the same
	// without watching): 0.01 is 1% of one core.
	CPUShare float64
	// Detection latency of a tamper (a byte of QEMU's text written
	// through /proc/PID/mem) with the watcher running, over Tampers.
	Tampers                     int
	LatencyMedian, LatencyMax   time.Duration
	ScrubFrozenMedian, ScrubMax time.Duration // how long QEMU stood frozen per scrub
}

// MeasureOptions sizes Measure; zero fields take the defaults.
type MeasureOptions struct {
	FullScans int           // default 5
	Idle      time.Duration // default 5 s
	Tampers   int           // default 20
}

// Measure watches QEMU process pid with cfg and measures memwatch's
// costs: full scans, the CPU share of Run on an idle VM, and the
// detection latency of tampers. It tampers with QEMU: it flips a byte of
// QEMU's ELF entry point (_start, which runs once before main and never
// again) through /proc/PID/mem, waits for the finding, scrubs, and
// repeats. For benches and tests only. QEMU must be up (see Baseline),
// and nothing else should run in the calling process during the idle
// measurement.
func Measure(ctx context.Context, pid int, cfg Config, opt MeasureOptions) (m Measurements, err error) {
	if opt.FullScans <= 0 {
		opt.FullScans = 5
	}
	if opt.Idle <= 0 {
		opt.Idle = 5 * time.Second
	}
	if opt.Tampers <= 0 {
		opt.Tampers = 20
	}
	w, err := New(pid, cfg)
	if err != nil {
		return m, err
	}
	defer func() { err = errors.Join(err, w.Close()) }()
	cov, found, err := w.Baseline()
	if err != nil {
		return m, err
	}
	if len(found) > 0 {
		return m, fmt.Errorf("measure: findings at baseline: %v", found)
	}
	m.Tracking, m.Period = cov.Tracking, w.cfg.Period
	m.WatchedMiB = float64(cov.Bytes) / (1 << 20)

	var full time.Duration
	for range opt.FullScans {
		w.mu.Lock()
		_, st, err := w.scanLocked(true)
		w.mu.Unlock()
		if err != nil {
			return m, err
		}
		full += st.Duration
	}
	m.FullScanPerMiB = time.Duration(float64(full) / float64(opt.FullScans) / m.WatchedMiB)

	var scans time.Duration
	for range opt.FullScans {
		_, st, err := w.Scan()
		if err != nil {
			return m, err
		}
		scans += st.Duration
	}
	m.Scan = scans / time.Duration(opt.FullScans)

	if m.CPUShare, err = idleShare(ctx, w, opt.Idle); err != nil {
		return m, err
	}
	if err := measureLatency(ctx, w, opt.Tampers, &m); err != nil {
		return m, err
	}
	return m, nil
}

func cpuTime() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("measure: %w", os.NewSyscallError("getrusage", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// idleShare measures the calling process's CPU time over d without
// watching, then over d with Run going, and returns the difference as a
// share of one core: the watcher's cost, without the runtime's and the
// caller's own background.
func idleShare(ctx context.Context, w *Watcher, d time.Duration) (float64, error) {
	before, err := processShare(ctx, d, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	if err != nil {
		return 0, err
	}
	var stray []Finding
	during, err := processShare(ctx, d, func(ctx context.Context) error {
		return w.Run(ctx, func(f Finding) { stray = append(stray, f) })
	})
	if err != nil {
		return 0, err
	}
	if len(stray) > 0 {
		return 0, fmt.Errorf("measure: findings on an idle VM: %v", stray)
	}
	return max(during-before, 0), nil
}

// processShare runs f for d and returns the process's CPU time over
// that wall time.
func processShare(ctx context.Context, d time.Duration, f func(context.Context) error) (float64, error) {
	c0, err := cpuTime()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := f(rctx); err != nil {
		return 0, err
	}
	c1, err := cpuTime()
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / float64(time.Since(t0)), nil
}

func measureLatency(ctx context.Context, w *Watcher, n int, m *Measurements) (err error) {
	entry, err := EntryPoint(w.pid)
	if err != nil {
		return err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", w.pid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("measure: open memory: %w", err)
	}
	defer func() { err = errors.Join(err, mem.Close()) }()
	got := make(chan Finding, 64)
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(rctx, func(f Finding) { got <- f }) }()
	defer func() {
		cancel()
		err = errors.Join(err, <-runErr)
	}()
	var lat, frozen []time.Duration
	b := make([]byte, 1)
	for i := range n {
		// Spread the tampers over the scan period's phase.
		time.Sleep(w.cfg.Period + w.cfg.Period*time.Duration(i*7%10)/10)
		if _, err := mem.ReadAt(b, int64(entry)); err != nil {
			return fmt.Errorf("measure: read entry point: %w", err)
		}
		b[0] ^= 0xff
		t0 := time.Now()
		if _, err := mem.WriteAt(b, int64(entry)); err != nil {
			return fmt.Errorf("measure: tamper: %w", err)
		}
		select {
		case f := <-got:
			if f.Kind != KindModified || f.Start > entry || entry >= f.End {
				return fmt.Errorf("measure: unexpected finding %v", f)
			}
			lat = append(lat, time.Since(t0))
		case <-time.After(5 * time.Second):
			return errors.New("measure: tamper not found within 5s")
		case <-ctx.Done():
			return ctx.Err()
		}
		rep, err := w.Scrub(ctx)
		if err != nil {
			return err
		}
		if !rep.Verified || rep.PagesRestored != 1 {
			return fmt.Errorf("measure: scrub: %+v", rep)
		}
		frozen = append(frozen, rep.Frozen)
	}
	slices.Sort(lat)
	slices.Sort(frozen)
	m.Tampers = n
	m.LatencyMedian, m.LatencyMax = lat[len(lat)/2], lat[len(lat)-1]
	m.ScrubFrozenMedian, m.ScrubMax = frozen[len(frozen)/2], frozen[len(frozen)-1]
	return nil
}

// EntryPoint returns the run-time address of pid's ELF entry point
// (AT_ENTRY in /proc/PID/auxv).
func EntryPoint(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return 0, fmt.Errorf("read auxv: %w", err)
	}
	return auxvEntry(b)
}

// auxvEntry finds AT_ENTRY in the bytes of an x86-64 auxiliary vector.
func auxvEntry(b []byte) (uint64, error) {
	const atEntry = 9
	for ; len(b) >= 16; b = b[16:] {
		k, v := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		if k == atEntry {
			return v, nil
		}
		if k == 0 {
			break
		}
	}
	return 0, errors.New("auxv: no AT_ENTRY")
}
