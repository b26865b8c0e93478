package main

import (
	"fmt"
	"sort"
)

// series is one measured quantity over the measured rounds.
type series struct {
	Unit     string    `json:"unit"`
	Values   []float64 `json:"values"`             // one per measured round that succeeded
	Failures []string  `json:"failures,omitempty"` // why the other rounds gave no value
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
}

func newSeries(unit string) *series { return &series{Unit: unit} }

func (s *series) add(v float64) { s.Values = append(s.Values, v) }

func (s *series) fail(format string, args ...any) {
	s.Failures = append(s.Failures, fmt.Sprintf(format, args...))
}

// ok says whether the series has a value.
func (s *series) ok() bool { return s != nil && len(s.Values) > 0 }

// finish computes median, min and max.
func (s *series) finish() {
	if len(s.Values) == 0 {
		// JSON has no NaN: an empty series stays at zero, and ok()
		// tells it apart.
		s.Median, s.Min, s.Max = 0, 0, 0
		return
	}
	v := append([]float64(nil), s.Values...)
	sort.Float64s(v)
	s.Min, s.Max = v[0], v[len(v)-1]
	if n := len(v); n%2 == 1 {
		s.Median = v[n/2]
	} else {
		s.Median = (v[n/2-1] + v[n/2]) / 2
	}
}

// ratio is a's median over b's, 0 when either is missing.
func ratio(a, b *series) float64 {
	if !a.ok() || !b.ok() || b.Median == 0 {
		return 0
	}
	return a.Median / b.Median
}
