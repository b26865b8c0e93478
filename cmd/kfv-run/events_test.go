package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRenderReactionOutcome checks that a reaction's outcome is shown
// from the outcome field, and from verdict in streams written before
// outcome existed.
func TestRenderReactionOutcome(t *testing.T) {
	for _, c := range []struct {
		name, line, want string
	}{
		{"outcome", `{"time":"2026-11-26T01:22:48Z","kind":"reaction","rule":"r1","reaction":"pause","outcome":"done","verdict":""}`,
			"REACTION   pause by rule r1: done"},
		{"failed", `{"time":"2026-11-26T01:22:48Z","kind":"reaction","rule":"r1","reaction":"kill","outcome":"failed","detail":"no such process"}`,
			"REACTION   kill by rule r1: failed (no such process)"},
		{"before outcome", `{"time":"2026-11-26T01:22:48Z","kind":"reaction","rule":"r1","reaction":"scrub","verdict":"audit: not carried out"}`,
			"REACTION   scrub by rule r1: audit: not carried out"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := renderEvents(&out, strings.NewReader(c.line+"\n"), false); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), c.want) {
				t.Errorf("rendered:\n%s\nwant a line with %q", out.String(), c.want)
			}
		})
	}
}
