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

	// numReactionKinds is one past the last kind; keep it last, so that
	// reactions has a row for every kind.
	numReactionKinds
)

// reactions is the table of reaction kinds, one row a kind: its name in
// profiles and events, and whether it acts on one device or netdev and
// so takes a target. A new reaction is a constant above and its row here
// (and the supervisor's code that carries it out); TestReactionKinds
// fails for a kind without a row.
var reactions = [numReactionKinds]struct {
	name     string
	targeted bool
}{
	ReactDeny:              {name: "deny"},
	ReactHold:              {name: "hold"},
	ReactPause:             {name: "pause"},
	ReactContinue:          {name: "continue"},
	ReactLinkDown:          {name: "link_down", targeted: true},
	ReactLinkUp:            {name: "link_up", targeted: true},
	ReactDeviceDel:         {name: "device_del", targeted: true},
	ReactRestart:           {name: "restart"},
	ReactRestartCheckpoint: {name: "restart_checkpoint"},
	ReactKill:              {name: "kill"},
	ReactScrub:             {name: "scrub"},
}

var reactionNames = func() enum[ReactionKind] {
	e := enum[ReactionKind]{what: "reaction", names: make([]string, len(reactions))}
	for k, r := range reactions {
		e.names[k] = r.name
	}
	return e
}()

func (k ReactionKind) String() string { return reactionNames.name(k) }

// ReactionKinds returns every reaction kind, in the order of the table.
func ReactionKinds() []ReactionKind {
	ks := make([]ReactionKind, 0, numReactionKinds-1)
	for k := ReactionKind(1); k < numReactionKinds; k++ {
		ks = append(ks, k)
	}
	return ks
}

// ParseReactionKind reads a reaction name ("link_down").
func ParseReactionKind(s string) (ReactionKind, error) {
	if k, ok := reactionNames.lookup(s); ok {
		return k, nil
	}
	return 0, fmt.Errorf("unknown reaction %q (want one of %s)", s, strings.Join(reactionNames.list(), ", "))
}

// Targeted reports whether the reaction acts on one device or netdev
// and so needs a target.
func (k ReactionKind) Targeted() bool {
	return k > 0 && k < numReactionKinds && reactions[k].targeted
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
