package supervisor

import (
	"sync"
	"testing"
)

func TestQueue(t *testing.T) {
	q := newQueue[int](3)
	if _, ok := q.pop(); ok {
		t.Fatal("pop of an empty queue")
	}
	for i := range 3 {
		if !q.push(i) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push(3) {
		t.Fatal("push past max accepted")
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("no token with items queued")
	}
	for i := range 3 {
		if v, ok := q.pop(); !ok || v != i {
			t.Fatalf("pop %d: %d %v", i, v, ok)
		}
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop after draining")
	}
	if q.items != nil {
		t.Error("a drained queue keeps its backing array")
	}
	q.push(7)
	q.close()
	if q.push(8) {
		t.Error("push after close accepted")
	}
	if v, ok := q.pop(); !ok || v != 7 {
		t.Errorf("pop after close: %d %v", v, ok)
	}
	if !q.isClosed() {
		t.Error("isClosed false after close")
	}
}

// TestQueueConcurrent pushes from several goroutines while one pops as
// the plane does: every item arrives once, in each pusher's order.
func TestQueueConcurrent(t *testing.T) {
	const pushers, each = 4, 10000
	q := newQueue[[2]int](pushers * each)
	var wg sync.WaitGroup
	for p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if !q.push([2]int{p, i}) {
					t.Errorf("push %d/%d refused", p, i)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); q.close() }()
	next := make([]int, pushers)
	for n := 0; n < pushers*each; {
		<-q.ready
		for {
			v, ok := q.pop()
			if !ok {
				break
			}
			if v[1] != next[v[0]] {
				t.Fatalf("pusher %d: got %d, want %d", v[0], v[1], next[v[0]])
			}
			next[v[0]]++
			n++
		}
	}
}
