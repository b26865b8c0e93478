package orch

import (
	"time"

	"kfv/profiles"
)

// HRSCMemory is the resource of memwatch findings: QEMU's memory.
const HRSCMemory = "memory"

// Finding is what a detector concluded about one call or one observation.
type Finding struct {
	Time     time.Time
	Layer    Layer
	HRSC     string // e.g. "vcpu0", "block-worker", "main-loop", "memory"
	Detector string // a detector's name: profiles.DetSignature, DetOrigin...
	Severity profiles.Severity
	Syscall  string // "" for findings that are not about a call (memwatch)
	TID      int
	Rule     string // the profile rule or detector that produced it
	Detail   string
}
