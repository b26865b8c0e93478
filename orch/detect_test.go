package orch

import (
	"testing"

	"kfv/profiles"
)

// TestEveryDetectorKindCompiles checks that newDetectors makes a detector
// of every kind profiles accept in a [[detector]] table, so that a kind
// added to profiles.DetectorKinds without its code here fails.
func TestEveryDetectorKindCompiles(t *testing.T) {
	for _, kind := range profiles.DetectorKinds {
		t.Run(kind, func(t *testing.T) {
			p := &profiles.Profile{Detectors: []profiles.Detector{{Name: "d", Kind: kind, Threshold: 1, Window: 1}}}
			origin, bs, rs := newDetectors(p)
			if n := len(bs) + len(rs); n == 0 && origin == nil {
				t.Errorf("kind %q: newDetectors compiled nothing", kind)
			}
		})
	}
}
