package orch

import "kfv/profiles"

// ReactionKind is one remedy. Its names ("deny", "hold", "pause",
// "continue", "link_down", "link_up", "device_del", "restart",
// "restart_checkpoint", "kill", "scrub") are those profiles use.
type ReactionKind = profiles.ReactionKind

// The reaction kinds. (Prefixed: Allow and Deny name Actions.)
const (
	ReactDeny              = profiles.ReactDeny
	ReactHold              = profiles.ReactHold
	ReactPause             = profiles.ReactPause
	ReactContinue          = profiles.ReactContinue
	ReactLinkDown          = profiles.ReactLinkDown
	ReactLinkUp            = profiles.ReactLinkUp
	ReactDeviceDel         = profiles.ReactDeviceDel
	ReactRestart           = profiles.ReactRestart
	ReactRestartCheckpoint = profiles.ReactRestartCheckpoint
	ReactKill              = profiles.ReactKill
	ReactScrub             = profiles.ReactScrub
)

// AllNICs is the Target of link_down and link_up that means every vNIC.
const AllNICs = profiles.AllNICs

// ParseReactionKind reads a reaction name ("link_down").
func ParseReactionKind(s string) (ReactionKind, error) { return profiles.ParseReactionKind(s) }

// Reaction is one remedy the VO orders, for the supervisor to carry out.
type Reaction struct {
	Kind ReactionKind
	// Target is, for link_down, link_up and device_del, a QEMU device or
	// netdev id, or AllNICs; "" otherwise.
	Target string
	Rule   string    // the [[correlate]] rule that ordered it
	Chain  []Finding // the findings that caused it, oldest first
}

func (r *Reaction) String() string {
	s := r.Kind.String()
	if r.Target != "" {
		s += ":" + r.Target
	}
	return s
}
