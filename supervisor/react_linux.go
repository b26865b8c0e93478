//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
)

// Reactions on the QEMU process itself: kill, and restart (relaunch with
// the same command line, or from the latest clean checkpoint). Only Run
// starts processes; the plane asks for a restart and kills QEMU, and Run
// relaunches once the old QEMU is reaped, so two QEMUs never share a disk.

// restartReq is a restart the VO ordered for the current QEMU.
type restartReq struct {
	fromCheckpoint *os.File // checkpoint to restore, nil for a cold restart
}

type restartState struct {
	mu  sync.Mutex
	req *restartReq
}

func (r *restartState) set(req *restartReq) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		r.req = req
	}
}

func (r *restartState) get() *restartReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.req
}

// process is the QEMU of one session, as the reactions that act on it
// outside QEMU see it. pid and pidfd are set before the loop and the plane
// start, and change only when the loop follows QEMU's -daemonize fork
// (follow): read them through current from any other goroutine.
type process struct {
	mu    sync.Mutex
	pid   int
	pidfd *os.File
	// started is the process kfv started (the loader, then QEMU), and
	// startedFD its pidfd; pid and pidfd differ from them once QEMU
	// daemonized.
	started   int
	startedFD *os.File
	// left are the pidfds of the processes followed away from, closed
	// with the session (a reaction may still hold one).
	left     []*os.File
	leftPIDs []int
	// emulator is set in the emulator model (QEMU is not our child).
	emulator bool
	// restart is set when the VO orders a restart of this QEMU.
	restart restartState
}

// current returns QEMU's process: the one kfv started, or the daemon it
// forked.
func (p *process) current() (int, *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid, p.pidfd
}

// follow makes pid (pidfd) QEMU's process: the child of its -daemonize
// fork, which goes on when its parent exits.
func (p *process) follow(pid int, pidfd *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd != nil && p.pidfd != p.startedFD {
		p.left = append(p.left, p.pidfd)
		p.leftPIDs = append(p.leftPIDs, p.pid)
	}
	p.pid, p.pidfd = pid, pidfd
}

// daemon returns QEMU's process now, and the processes it was before
// but the one kfv started.
func (p *process) daemon() (int, *os.File, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid, p.pidfd, append([]int(nil), p.leftPIDs...)
}

// followed reports whether QEMU's process is not the one kfv started.
func (p *process) followed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid != p.started
}

// closeAll closes the pidfds of the processes followed (not the one kfv
// started, whose owner closes it).
func (p *process) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.left {
		f.Close()
	}
	p.left = nil
	if p.pidfd != p.startedFD && p.pidfd != nil {
		p.pidfd.Close()
	}
	p.pid, p.pidfd = p.started, p.startedFD
}

// kill ends QEMU with SIGKILL through its pidfd.
func (p *process) kill() error {
	_, pidfd := p.current()
	if pidfd == nil {
		return errors.New("no QEMU process")
	}
	if err := unix.PidfdSendSignal(int(pidfd.Fd()), unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill QEMU: %w", err)
	}
	return nil
}

// requestRestart asks Run to relaunch QEMU once it is gone, then kills it.
// In the emulator model the caller (libvirt) owns QEMU's life: restart is
// a kill, and its on_crash policy decides what comes next.
func (p *process) requestRestart(em emitter, fromCheckpoint bool, ckpt *os.File) error {
	if p.emulator {
		em.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "restart under the emulator model: QEMU is killed and its manager's crash policy decides"})
		return p.kill()
	}
	req := &restartReq{}
	if fromCheckpoint {
		if ckpt == nil {
			em.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: "restart from checkpoint ordered but no clean checkpoint exists yet: restarting cold"})
		}
		req.fromCheckpoint = ckpt
	}
	p.restart.set(req)
	return p.kill()
}

// gone reports whether QEMU's process has exited, waiting up to d for
// its pidfd to say so.
// exitGrace is how long a failure that QEMU's exit causes (its monitor
// closing under kfv's handshake, its memory gone under memwatch's read)
// may come before QEMU's pidfd says it exited: QEMU tears down its
// threads and memory first, which under load took more than 200 ms.
// Only failure paths wait for it.
const exitGrace = 2 * time.Second

func (p *process) gone(d time.Duration) bool {
	_, pidfd := p.current()
	if pidfd == nil {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(d/time.Millisecond))
	return err == nil && n > 0
}
