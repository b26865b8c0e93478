//go:build !linux

package memwatchtest

import (
	"context"

	"kfv/memwatch"
)

// Measure returns memwatch.ErrUnsupported off Linux.
func Measure(ctx context.Context, pid int, cfg memwatch.Config, opt MeasureOptions) (Measurements, error) {
	return Measurements{}, memwatch.ErrUnsupported
}
