package profiles

import (
	"fmt"
	"time"
)

// MaxWindow bounds the durations a profile may give (windows,
// cool-downs, hold bounds): state older than a day is not correlation.
const MaxWindow = 24 * time.Hour

// ParseDuration reads a duration as profiles write it: Go's syntax
// ("500ms", "10s", "1m30s"), positive and at most MaxWindow.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want a number and a unit, such as \"500ms\", \"10s\" or \"2m\"", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	if d > MaxWindow {
		return 0, fmt.Errorf("duration %q is longer than %s", s, MaxWindow)
	}
	return d, nil
}
