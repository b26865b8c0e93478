package memwatchtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"kfv/memwatch"
)

// Measure watches QEMU process pid with cfg and measures memwatch's
// costs: full scans, the CPU share of Run on an idle VM, and the
// detection latency of tampers. It tampers with QEMU: it flips a byte of
// QEMU's ELF entry point (_start, which runs once before main and never
// again) through /proc/PID/mem, waits for the finding, scrubs, and
// repeats. QEMU must be up (see memwatch.Watcher.Baseline), and nothing
// else should run in the calling process during the idle measurement.
func Measure(ctx context.Context, pid int, cfg memwatch.Config, opt MeasureOptions) (m Measurements, err error) {
	if opt.FullScans <= 0 {
		opt.FullScans = 5
	}
	if opt.Idle <= 0 {
		opt.Idle = 5 * time.Second
	}
	if opt.Tampers <= 0 {
		opt.Tampers = 20
	}
	// The watcher applies the same default (memwatch.Config.Period).
	period := cfg.Period
	if period == 0 {
		period = memwatch.DefaultPeriod
	}
	w, err := memwatch.New(pid, cfg)
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
	m.Tracking, m.Period = cov.Tracking, period
	m.WatchedMiB = float64(cov.Bytes) / (1 << 20)

	var full time.Duration
	for range opt.FullScans {
		_, st, err := w.ScanFull()
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
	if err := measureLatency(ctx, w, period, opt.Tampers, &m); err != nil {
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
func idleShare(ctx context.Context, w *memwatch.Watcher, d time.Duration) (float64, error) {
	before, err := processShare(ctx, d, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
	if err != nil {
		return 0, err
	}
	var stray []memwatch.Finding
	during, err := processShare(ctx, d, func(ctx context.Context) error {
		return w.Run(ctx, func(f memwatch.Finding) { stray = append(stray, f) })
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

func measureLatency(ctx context.Context, w *memwatch.Watcher, period time.Duration, n int, m *Measurements) (err error) {
	entry, err := EntryPoint(w.Pid())
	if err != nil {
		return err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", w.Pid()), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("measure: open memory: %w", err)
	}
	defer func() { err = errors.Join(err, mem.Close()) }()
	got := make(chan memwatch.Finding, 64)
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(rctx, func(f memwatch.Finding) { got <- f }) }()
	defer func() {
		cancel()
		err = errors.Join(err, <-runErr)
	}()
	var lat, frozen []time.Duration
	b := make([]byte, 1)
	for i := range n {
		// Spread the tampers over the scan period's phase.
		time.Sleep(period + period*time.Duration(i*7%10)/10)
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
			if f.Kind != memwatch.KindModified || f.Start > entry || entry >= f.End {
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
