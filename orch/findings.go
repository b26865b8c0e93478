package orch

import (
	"time"

	"kfv/profiles"
)

// Severity of a finding: SevLow, SevMedium, SevHigh, SevCritical. It is
// the profiles type, so that profiles grade their rules with it.
type Severity = profiles.Severity

const (
	SevLow      = profiles.SevLow
	SevMedium   = profiles.SevMedium
	SevHigh     = profiles.SevHigh
	SevCritical = profiles.SevCritical
)

// ParseSeverity reads a severity name: "low", "medium", "high", "critical".
func ParseSeverity(s string) (Severity, error) { return profiles.ParseSeverity(s) }

// Detector names, as findings carry them in Finding.Detector: those of
// profiles, which name them in [[detector]], [[ho]] and [[correlate]].
const (
	DetSignature = profiles.DetSignature
	DetOrigin    = profiles.DetOrigin
	DetBehaviour = profiles.DetBehaviour
	DetRate      = profiles.DetRate
	DetMemwatch  = profiles.DetMemwatch
)

// HRSCMemory is the resource of memwatch findings: QEMU's memory.
const HRSCMemory = "memory"

// Finding is what a detector concluded about one call or one observation.
type Finding struct {
	Time     time.Time
	Layer    Layer
	HRSC     string // e.g. "vcpu0", "block-worker", "main-loop", "memory"
	Detector string // DetSignature, DetOrigin, DetBehaviour, DetRate, DetMemwatch
	Severity Severity
	Syscall  string // "" for findings that are not about a call (memwatch)
	TID      int
	Rule     string // the profile rule or detector that produced it
	Detail   string
}
