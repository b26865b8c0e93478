package orch

import (
	"slices"
	"sync"
)

// DaemonizeForks is how many processes QEMU's -daemonize creates: the
// process started forks, its child calls setsid and forks again, and that
// grandchild is the daemon (os_daemonize, QEMU 7.2 and 10.0, measured
// with strace -f).
const DaemonizeForks = 2

// daemonizer keeps the state of a rule with Daemonize set: which
// processes have made their daemonizing fork. A fork is admitted when it
// comes from a process's main thread (the thread group leader: a payload
// on another thread cannot race it), while that process has no vCPU
// (no guest code has run in it), once per process, and at most
// DaemonizeForks in all: after them no process under the filter can
// create one, whichever thread asks.
type daemonizer struct {
	mu     sync.Mutex
	forked []int // the processes whose fork was admitted, in order
}

// admit reports whether r, which matched a Daemonize rule, is one of
// QEMU's daemonizing forks, and counts it if so.
func (dz *daemonizer) admit(r *Request) bool {
	if r.PID <= 0 || r.TID != r.PID || r.HasVCPU {
		return false
	}
	dz.mu.Lock()
	defer dz.mu.Unlock()
	if len(dz.forked) >= DaemonizeForks || slices.Contains(dz.forked, r.PID) {
		return false
	}
	dz.forked = append(dz.forked, r.PID)
	return true
}

// reset forgets the forks: a new QEMU is started (a restart).
func (dz *daemonizer) reset() {
	dz.mu.Lock()
	defer dz.mu.Unlock()
	dz.forked = nil
}
