//go:build linux

package seccompnotify

import (
	"fmt"
	"sync"
)

// Workers run performed calls that may block (a blocking connect or
// send, a FIFO or a device that waits for its other end) beside the
// notification loop, so that the loop goes on answering QEMU's other
// threads. Each worker is a goroutine locked to an OS thread with
// file-system attributes of its own (PrepareEmulationThread): it can take
// QEMU's umask and cwd for one call without touching the rest of the
// supervisor. Workers are kept, not made per call: preparing a thread
// costs far more than the call (a thread per call measured 170 µs per
// emulated connect).
//
// The loop never waits for a worker: with every worker busy, try
// refuses, and the gate answers the call with EAGAIN.
type Workers struct {
	umask func() int
	// Error reports a worker that could not be prepared.
	Error func(error)
	tasks chan task // unbuffered: a send succeeds only into an idle worker

	mu    sync.Mutex
	count int // workers started and not failed
}

// maxWorkers bounds the calls performed beside the loop at once.
const maxWorkers = 32

// NewWorkers makes an empty set of workers; umask gives the umask each
// starts with (each call that creates something sets the caller's own).
func NewWorkers(umask func() int, report func(error)) *Workers {
	return &Workers{umask: umask, Error: report, tasks: make(chan task)}
}

// task is one call to perform: run performs and answers it; fail answers
// it when no prepared thread can.
type task struct {
	run  func()
	fail func(error)
}

// try hands t to an idle worker, or to a new one while there are fewer
// than maxWorkers, and reports whether one took it. It never blocks.
func (w *Workers) try(t task) bool {
	select {
	case w.tasks <- t:
		return true
	default:
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.count >= maxWorkers {
		return false
	}
	w.count++
	go w.work(t)
	return true
}

func (w *Workers) work(first task) {
	if err := PrepareEmulationThread(w.umask()); err != nil {
		// Without attributes of its own this thread must not perform
		// anything (a chdir or umask here would be the whole
		// supervisor's): give the slot back and answer the call with
		// the failure, so that no QEMU thread waits for it.
		w.mu.Lock()
		w.count--
		w.mu.Unlock()
		err = fmt.Errorf("prepare a worker thread: %w", err)
		if w.Error != nil {
			w.Error(err)
		}
		first.fail(err)
		return
	}
	first.run()
	for t := range w.tasks {
		t.run()
	}
}
