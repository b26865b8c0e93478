package orch

import (
	"time"

	"kfv/profiles"
)

// ho is the horizontal orchestrator of one layer: from the signature
// verdict and the findings on a call, the verdict for that call, from
// memory only. Without an [[ho]] policy the signature verdict stands.
type ho struct {
	layer     Layer
	detectors map[string]bool
	deny      profiles.SeverityMatch
	denyErrno int
	hold      profiles.SeverityMatch
	holdFor   time.Duration
	holdDeny  bool
	holdErrno int
}

func newHOs(p *profiles.Profile) map[Layer]*ho {
	out := map[Layer]*ho{}
	for i := range p.HO {
		pp := &p.HO[i]
		dets := pp.Detectors
		if len(dets) == 0 {
			dets = profiles.DetectorKinds // what an [[ho]] weighs when it names none
		}
		for _, l := range pp.Layers {
			out[Layer(l)] = &ho{
				layer: Layer(l), detectors: set(dets),
				deny: pp.Deny, denyErrno: pp.DenyErrno,
				hold: pp.Hold, holdFor: pp.HoldFor,
				holdDeny: pp.HoldVerdict == profiles.VerdictDeny, holdErrno: pp.HoldErrno,
			}
		}
	}
	return out
}

// verdict turns the signature verdict d into the HO's. A denial by the
// rules stands (no finding makes a call safer); an allowed call is
// denied or held when one of its findings, from a detector the policy
// weighs, meets the policy's deny or hold condition. Deny wins over hold.
func (h *ho) verdict(d Decision, fs []Finding) Decision {
	if h == nil || d.Action != profiles.VerdictAllow {
		return d
	}
	var held *Finding
	for i := range fs {
		f := &fs[i]
		if !h.detectors[f.Detector] {
			continue
		}
		if h.deny.Op != 0 && h.deny.Match(f.Severity) {
			d.Action, d.Errno, d.Rule, d.Reason = profiles.VerdictDeny, h.denyErrno, f.Rule, f.Detail
			return d
		}
		if held == nil && h.hold.Op != 0 && h.hold.Match(f.Severity) {
			held = f
		}
	}
	if held != nil {
		d.Hold, d.HoldFor, d.Rule, d.Reason = true, h.holdFor, held.Rule, held.Detail
		if h.holdDeny {
			d.Action, d.Errno = profiles.VerdictDeny, h.holdErrno
		}
	}
	return d
}
