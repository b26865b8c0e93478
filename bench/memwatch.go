package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"kfv/guest"
	"kfv/memwatch"
	"kfv/memwatch/memwatchtest"
	"kfv/qmp"
)

// Section 5, memwatch: its costs measured with memwatchtest.Measure on a bare
// QEMU running the raw-code loop guest (an idle VM: a tick line every few
// hundred ms), once per accelerator and round.

// memwatchIdle and memwatchTampers size each round's Measure.
const (
	memwatchIdle    = 3 * time.Second
	memwatchTampers = 10
)

// mwRow is memwatch's costs under one accelerator.
type mwRow struct {
	Accel      string  `json:"accel"`
	Tracking   string  `json:"tracking"`
	Period     string  `json:"period"`
	WatchedMiB *series `json:"watched_mib"`
	FullScan   *series `json:"full_scan_us_per_mib"` // a full scan (every watched page read and hashed), per MiB
	Scan       *series `json:"steady_scan_us"`       // a steady scan: maps, pagemap, tracked pages, the sweep's slice
	CPU        *series `json:"cpu_percent"`          // the watcher's CPU on an idle VM, % of one core
	LatMedian  *series `json:"latency_median_ms"`    // detection latency of a tamper, median of the round's tampers
	LatMax     *series `json:"latency_max_ms"`       // and the largest
	Frozen     *series `json:"scrub_frozen_ms"`      // how long a scrub kept QEMU frozen, median of the round
	Tampers    int     `json:"tampers_per_round"`
	Skip       string  `json:"skipped,omitempty"`
}

// memwatchCosts measures memwatch under TCG and, where it works, KVM.
func (c *config) memwatchCosts() ([]*mwRow, error) {
	img, err := guest.BuildRaw(c.guests, guest.RawOptions{Loop: true, TicksPerLine: 2})
	if err != nil {
		return nil, fmt.Errorf("raw loop guest: %w", err)
	}
	var rows []*mwRow
	for _, accel := range []string{"tcg", "kvm"} {
		r := &mwRow{Accel: accel, Tampers: memwatchTampers, WatchedMiB: newSeries("MiB"), FullScan: newSeries("µs/MiB"), Scan: newSeries("µs"),
			CPU: newSeries("%"), LatMedian: newSeries("ms"), LatMax: newSeries("ms"), Frozen: newSeries("ms")}
		rows = append(rows, r)
		if accel == "kvm" {
			if p := kvmProblem(); p != "" {
				logf("  kvm skipped: %s", p)
				r.Skip = p
				continue
			}
		}
		for round := 0; round <= c.rounds; round++ {
			m, err := c.memwatchOnce(img, accel)
			if err != nil {
				logf("  memwatch %s round %d: %v", accel, round, err)
			} else if c.verbose {
				logf("  memwatch %s round %d: %+v", accel, round, m)
			}
			if round == 0 {
				continue
			}
			if err != nil {
				r.CPU.fail("round %d: %v", round, err)
				continue
			}
			r.Tracking, r.Period = m.Tracking.String(), m.Period.String()
			r.WatchedMiB.add(m.WatchedMiB)
			r.FullScan.add(us(m.FullScanPerMiB))
			r.Scan.add(us(m.Scan))
			r.CPU.add(100 * m.CPUShare)
			r.LatMedian.add(ms(m.LatencyMedian))
			r.LatMax.add(ms(m.LatencyMax))
			r.Frozen.add(ms(m.ScrubFrozenMedian))
		}
		for _, s := range []*series{r.WatchedMiB, r.FullScan, r.Scan, r.CPU, r.LatMedian, r.LatMax, r.Frozen} {
			s.finish()
		}
	}
	return rows, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// memwatchOnce starts a bare QEMU with the loop guest under accel, waits
// for its monitor (QEMU's main loop runs: the baseline may be taken),
// measures, and stops QEMU.
func (c *config) memwatchOnce(img, accel string) (m memwatchtest.Measurements, err error) {
	sock := filepath.Join(c.work, "memwatch-qmp.sock")
	args := append(guest.RawArgs(img, accel), "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd := exec.Command(c.qemu, args...)
	if err := cmd.Start(); err != nil {
		return m, fmt.Errorf("start QEMU: %w", err)
	}
	defer func() {
		// The loop guest never ends by itself.
		if kerr := cmd.Process.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			err = errors.Join(err, fmt.Errorf("kill QEMU: %w", kerr))
		}
		if werr := cmd.Wait(); werr != nil && cmd.ProcessState == nil {
			err = errors.Join(err, fmt.Errorf("wait for QEMU: %w", werr))
		}
		if rerr := os.Remove(sock); rerr != nil && !os.IsNotExist(rerr) {
			err = errors.Join(err, fmt.Errorf("remove QMP socket: %w", rerr))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q, err := qmp.Dial(ctx, sock, 30*time.Second)
	if err != nil {
		return m, fmt.Errorf("QEMU's monitor: %w", err)
	}
	defer func() {
		if cerr := q.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close QEMU's monitor: %w", cerr))
		}
	}()
	return memwatchtest.Measure(ctx, cmd.Process.Pid, memwatch.Config{Accel: accel}, memwatchtest.MeasureOptions{Idle: memwatchIdle, Tampers: memwatchTampers})
}
