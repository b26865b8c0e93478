package orch

import "kfv/profiles"

// Reaction is one remedy the VO orders, for the supervisor to carry out.
type Reaction struct {
	Kind profiles.ReactionKind
	// Target is, for link_down, link_up and device_del, a QEMU device or
	// netdev id, or profiles.AllNICs; "" otherwise.
	Target string
	Rule   string    // the [[correlate]] rule that ordered it
	Chain  []Finding // the findings that caused it, oldest first
}

// String writes the reaction as profiles do: "pause", "link_down:all-nics".
func (r *Reaction) String() string {
	return profiles.ReactionSpec{Kind: r.Kind, Target: r.Target}.String()
}
