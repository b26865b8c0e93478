package profiles

import (
	"fmt"
	"strings"
)

// ReactionKind is one remedy kfv can apply.
type ReactionKind int

const (
	ReactDeny              ReactionKind = iota + 1 // fail the call with an errno
	ReactHold                                      // keep the calling thread blocked until the VO decides
	ReactPause                                     // stop the VM's vCPUs (QMP stop)
	ReactContinue                                  // resume them (QMP cont)
	ReactLinkDown                                  // take a vNIC's link down (QMP set_link)
	ReactLinkUp                                    // bring it back up
	ReactDeviceDel                                 // unplug a device (QMP device_del)
	ReactRestart                                   // relaunch QEMU with the same command line
	ReactRestartCheckpoint                         // relaunch QEMU from the last clean checkpoint
	ReactKill                                      // kill QEMU
	ReactScrub                                     // restore QEMU's tampered memory (memwatch)
)

var reactionNames = [...]string{
	ReactDeny: "deny", ReactHold: "hold", ReactPause: "pause", ReactContinue: "continue",
	ReactLinkDown: "link_down", ReactLinkUp: "link_up", ReactDeviceDel: "device_del",
	ReactRestart: "restart", ReactRestartCheckpoint: "restart_checkpoint",
	ReactKill: "kill", ReactScrub: "scrub",
}

func (k ReactionKind) String() string {
	if k >= ReactDeny && k <= ReactScrub {
		return reactionNames[k]
	}
	return fmt.Sprintf("ReactionKind(%d)", int(k))
}

// ParseReactionKind reads a reaction name ("link_down").
func ParseReactionKind(s string) (ReactionKind, error) {
	for k := ReactDeny; k <= ReactScrub; k++ {
		if reactionNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown reaction %q (want one of %s)", s, strings.Join(reactionNames[1:], ", "))
}

// Targeted reports whether the reaction acts on one device or netdev
// and so needs a target.
func (k ReactionKind) Targeted() bool {
	return k == ReactLinkDown || k == ReactLinkUp || k == ReactDeviceDel
}

// AllNICs is the target of link_down and link_up that means every vNIC
// of the VM.
const AllNICs = "all-nics"

// ReactionSpec is one reaction a [[correlate]] rule orders: a kind and,
// for link_down, link_up and device_del, a target.
type ReactionSpec struct {
	Kind   ReactionKind
	Target string // a QEMU device or netdev id, or AllNICs; "" for untargeted kinds
}

func (r ReactionSpec) String() string {
	if r.Target == "" {
		return r.Kind.String()
	}
	return r.Kind.String() + ":" + r.Target
}

// ParseReaction reads a reaction as a [[correlate]] rule writes it:
// "pause", "link_down:all-nics", "device_del:net0".
func ParseReaction(s string) (ReactionSpec, error) {
	name, target, hasTarget := strings.Cut(s, ":")
	k, err := ParseReactionKind(name)
	if err != nil {
		return ReactionSpec{}, err
	}
	switch {
	case k.Targeted() && !hasTarget:
		return ReactionSpec{}, fmt.Errorf("reaction %q needs a target: %s:ID (a QEMU device or netdev id) or %s:%s", s, name, name, AllNICs)
	case !k.Targeted() && hasTarget:
		return ReactionSpec{}, fmt.Errorf("reaction %q takes no target", name)
	case k == ReactDeviceDel && target == AllNICs:
		return ReactionSpec{}, fmt.Errorf("reaction %q: device_del takes one device id, not %s", s, AllNICs)
	case hasTarget && target != AllNICs && !validQEMUID(target):
		return ReactionSpec{}, fmt.Errorf("reaction %q: %q is not a QEMU id (a letter, then letters, digits, '-', '.' or '_')", s, target)
	}
	return ReactionSpec{Kind: k, Target: target}, nil
}

// validQEMUID follows QEMU's id_wellformed: a letter, then letters,
// digits, '-', '.' and '_'.
func validQEMUID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}
