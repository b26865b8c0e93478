//go:build linux

package supervisor

import (
	"sync"

	"kfv/seccompnotify"
)

// workers run emulated calls that may block (a blocking connect, a FIFO or
// a device that waits for its other end) beside the notification loop, so
// the loop goes on answering QEMU's other threads. Each worker is a
// goroutine locked to an OS thread with file-system attributes of its own
// (seccompnotify.PrepareEmulationThread): it can take QEMU's umask and cwd
// for one call without touching the rest of the supervisor. Workers are
// kept, not made per call: preparing a thread costs far more than the
// call (a thread per call measured 170 µs per emulated connect).
type workers struct {
	mu    sync.Mutex
	idle  int
	count int
	tasks chan func()
	umask func() int
}

// maxWorkers bounds the threads: past it, calls wait for a free worker
// (the QEMU threads that made them wait anyway).
const maxWorkers = 32

func newWorkers(umask func() int) *workers {
	return &workers{tasks: make(chan func()), umask: umask}
}

// run hands f to a worker, starting one if none is idle.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if w.idle == 0 && w.count < maxWorkers {
		w.count++
		w.idle++
		go w.work()
	}
	w.mu.Unlock()
	w.tasks <- f
}

func (w *workers) work() {
	if err := seccompnotify.PrepareEmulationThread(w.umask()); err != nil {
		// Without attributes of its own this thread must not emulate:
		// give the slot back and run nothing.
		w.mu.Lock()
		w.count--
		w.idle--
		w.mu.Unlock()
		return
	}
	for f := range w.tasks {
		w.mu.Lock()
		w.idle--
		w.mu.Unlock()
		f()
		w.mu.Lock()
		w.idle++
		w.mu.Unlock()
	}
}
