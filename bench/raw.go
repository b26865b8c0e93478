package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"kfv/event"
	"kfv/guest"
)

// rawKVM times the raw-code hello guest from QEMU's start to its exit
// under KVM, in every configuration, so that the KVM path (VM creation,
// vCPU set-up, KVM ioctls under the filter) is measured even where the
// Linux guest runs under TCG. It returns the reason instead when KVM is
// not usable here.
func (c *config) rawKVM() (*wlRow, []*denialRow, string, error) {
	if p := kvmProblem(); p != "" {
		logf("  skipped: %s", p)
		return nil, nil, p, nil
	}
	row := newRow("raw (KVM)", "QEMU start to exit", "ms")
	den := newDenials()
	want := guest.RawExitStatus(rawExitCode)
	events := filepath.Join(c.work, "raw-events.jsonl")
	// A run takes a fraction of a second but varies a lot with the
	// host's load (VM creation), so it gets three times the rounds.
	rounds := 3 * c.rounds
	for round := 0; round <= rounds; round++ {
		for _, cfg := range guestConfigs {
			p, err := runProc(c.guestArgv(cfg, events, guest.RawArgs(c.rawPath, "kvm")), runOpts{timeout: time.Minute})
			if err == nil && p.status != want {
				err = fmt.Errorf("exit status %d, want %d: %s", p.status, want, tail(p.stderr, 300))
			}
			var denied []event.Event
			if err == nil && isKfv(cfg) {
				evs, rerr := readEvents(events)
				if rerr != nil {
					err = rerr
				}
				for _, e := range evs {
					if e.Kind == event.KindDecision && e.Verdict == "deny" {
						denied = append(denied, e)
					}
				}
			}
			if rerr := os.Remove(events); rerr != nil && !os.IsNotExist(rerr) {
				return nil, nil, "", fmt.Errorf("remove raw events: %w", rerr)
			}
			if err != nil {
				logf("  raw %s round %d: %v", cfg, round, err)
			}
			if round == 0 {
				continue
			}
			if err != nil {
				row.cell(cfg).S.fail("round %d: %v", round, err)
				continue
			}
			row.cell(cfg).S.add(float64(p.elapsed.Microseconds()) / 1000)
			if isKfv(cfg) {
				den.add(cfg, "raw (KVM)", denied)
			}
		}
	}
	row.finish()
	return row, den.rows(), "", nil
}
