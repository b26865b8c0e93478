//go:build linux

package seccompnotify

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// callerPidfds are pidfds of the processes under the filter other than
// the one the gate was made for (Gate.Pidfd): the processes QEMU's
// -daemonize forks. A performed call copies fds from the process that
// made it, never from another one with the same fd numbers.
type callerPidfds struct {
	mu  sync.Mutex
	fds map[int]*os.File // by process id
}

// maxCallerPidfds bounds the pidfds kept (-daemonize makes two processes).
const maxCallerPidfds = 16

// pidfdOf returns a pidfd of the process that made c, or nil when there
// is none (the call then fails as on a bad fd). A kept pidfd whose
// process has exited is replaced: its pid may be another process's now.
func (g *Gate) pidfdOf(c *Call) *os.File {
	if c.Req.PID == g.PID || g.PID == 0 || c.Req.PID <= 0 {
		return g.Pidfd
	}
	p := &g.others
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.fds[c.Req.PID]; ok {
		if !exited(f) {
			return f
		}
		f.Close()
		delete(p.fds, c.Req.PID)
	}
	fd, err := unix.PidfdOpen(c.Req.PID, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	// Only a caller still in its call proves the pid is its process's.
	if g.Listener.IDValid(c.N.ID) != nil {
		f.Close()
		return nil
	}
	if p.fds == nil || len(p.fds) >= maxCallerPidfds {
		for pid, old := range p.fds {
			old.Close()
			delete(p.fds, pid)
		}
		p.fds = map[int]*os.File{}
	}
	p.fds[c.Req.PID] = f
	return f
}

// Close closes the pidfds the gate opened for other processes (not
// Pidfd, which is the caller's). Call it once no call is answered any
// more.
func (g *Gate) Close() {
	p := &g.others
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid, f := range p.fds {
		f.Close()
		delete(p.fds, pid)
	}
}
