// Package testutil holds what the tests of every package share: the
// goroutine-leak check of a package's tests, one way to wait for a state
// change, load from several goroutines, a fake clock, the heap figures memory
// tests read, and an upstream's 103 Early Hints. Only tests import it.
package testutil

import (
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// VerifyMain runs a package's tests and fails the run if any of them leaves
// a goroutine behind. Call it from TestMain.
func VerifyMain(m goleak.TestingM, opts ...goleak.Option) {
	// go-redis probes a server that refused its dials from a goroutine that
	// notices the pool's Close only after a 1 s sleep.
	opts = append(opts, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
	goleak.VerifyTestMain(m, opts...)
}

// Timeout bounds Eventually.
const Timeout = 10 * time.Second

// Eventually polls cond every millisecond until it holds, and fails the
// test naming what it waited for when Timeout passes first. It is for state
// that changes on a goroutine the test cannot join (a server's, a context
// callback's): synchronisation on observable state, never a fixed sleep.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Timeout, what, cond)
}

// EventuallyWithin is Eventually with its own bound, for a state change that
// is known to take long (a failover, then a backoff that may reach 10 s).
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// Clock is a fake clock, safe for concurrent use, that moves only when
// told to.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Heap is the runtime's figures of the live heap, in bytes and objects.
type Heap struct {
	Live    float64 // live heap
	Scan    float64 // the part of it the garbage collector scans (objects holding pointers)
	Objects float64 // live objects
}

// ReadHeap collects garbage twice (the second cycle sweeps what the first
// marked) and reads the live heap. Memory tests take the difference of two
// readings; they skip under -race, which changes every figure.
func ReadHeap() Heap {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/heap:bytes"}, {Name: "/gc/heap/objects:objects"}}
	metrics.Read(s)
	return Heap{Live: float64(s[0].Value.Uint64()), Scan: float64(s[1].Value.Uint64()), Objects: float64(s[2].Value.Uint64())}
}

// EarlyHints sends a 103 Early Hints answer as an upstream would, with a
// Link field and X-Hint-Secret: from-103, and takes both out of w's header
// again, so that neither belongs to the final answer: a proxy or cache that
// lets them through to it leaks the interim answer's fields.
func EarlyHints(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Link", "</style.css>; rel=preload")
	h.Set("X-Hint-Secret", "from-103")
	w.WriteHeader(http.StatusEarlyHints)
	h.Del("Link")
	h.Del("X-Hint-Secret")
}

// Repeat calls fn again and again in each of workers goroutines until stop is
// called or, in that goroutine, fn returns false. stop waits for them.
func Repeat(workers int, fn func() bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if !fn() {
					return
				}
			}
		})
	}
	return func() {
		close(done)
		wg.Wait()
	}
}
