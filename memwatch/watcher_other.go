//go:build !linux

package memwatch

import (
	"context"
	"time"
)

// Watcher watches the memory of one QEMU process (Linux only).
type Watcher struct{}

// New returns ErrUnsupported off Linux.
func New(pid int, cfg Config) (*Watcher, error) { return nil, ErrUnsupported }

// SoftDirtySupported is false off Linux.
func SoftDirtySupported() (bool, error) { return false, nil }

func (w *Watcher) Close() error { return ErrUnsupported }
func (w *Watcher) Pid() int     { return 0 }
func (w *Watcher) WaitStable(ctx context.Context, quiet time.Duration) error {
	return ErrUnsupported
}
func (w *Watcher) Baseline() (Coverage, []Finding, error)              { return Coverage{}, nil, ErrUnsupported }
func (w *Watcher) Coverage() Coverage                                  { return Coverage{} }
func (w *Watcher) Scan() ([]Finding, ScanStats, error)                 { return nil, ScanStats{}, ErrUnsupported }
func (w *Watcher) ScanFull() ([]Finding, ScanStats, error)             { return nil, ScanStats{}, ErrUnsupported }
func (w *Watcher) Run(ctx context.Context, report func(Finding)) error { return ErrUnsupported }
func (w *Watcher) Scrub(ctx context.Context) (ScrubReport, error) {
	return ScrubReport{}, ErrUnsupported
}

// PagemapScanSupported is false off Linux.
func PagemapScanSupported() (bool, error) { return false, nil }

func (w *Watcher) PageScan() PageScan { return PageScanRead }
