package supervisor

import "sync"

// queue is a FIFO of at most max items whose memory follows what it
// holds. The plane's queues are deep so that a burst of findings is
// correlated rather than dropped, and a Go channel that deep takes its
// whole buffer up front: the plane's two took 1.2 MB of every idle
// supervisor's 7.
//
// Any number of goroutines push; one pops. ready holds a token while
// items are queued (pop leaves it while more remain): the popper waits
// on it, then pops one item or all of them.
type queue[T any] struct {
	mu     sync.Mutex
	items  []T // items[head:] are queued
	head   int
	max    int
	closed bool
	ready  chan struct{}
}

func newQueue[T any](max int) *queue[T] {
	return &queue[T]{max: max, ready: make(chan struct{}, 1)}
}

// push queues v and reports whether there was room (and the queue was
// open).
func (q *queue[T]) push(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.items)-q.head >= q.max {
		return false
	}
	q.items = append(q.items, v)
	q.signal()
	return true
}

// pop takes the oldest item; ok is false when there is none.
func (q *queue[T]) pop() (v T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return v, false
	}
	v = q.items[q.head]
	var zero T
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		// Empty: a burst's backing array goes back to the heap.
		q.items, q.head = nil, 0
	} else {
		q.signal()
	}
	return v, true
}

// close makes every later push fail; what is queued can still be popped.
func (q *queue[T]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.signal()
}

// isClosed reports whether close was called.
func (q *queue[T]) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// signal leaves the token in ready.
func (q *queue[T]) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
