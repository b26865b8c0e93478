package memwatchtest

import (
	"time"

	"kfv/memwatch"
)

// Measurements are memwatch's costs on one QEMU, for the bench.
type Measurements struct {
	Tracking   memwatch.Tracking
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
