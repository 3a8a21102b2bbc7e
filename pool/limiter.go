package pool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors returned by [Limiter.Acquire]. They are distinct so the
// caller can tell "no room to even wait" from "waited too long" in logs and
// metrics; both mean the service is saturated, and the gateway answers them
// with 503 and a Retry-After header.
var (
	// ErrQueueFull means every slot is taken and the wait queue already holds
	// maxPending requests (or maxPending is 0), so the request is refused
	// without waiting.
	ErrQueueFull = errors.New("pool: service at capacity and wait queue full")
	// ErrQueueTimeout means the request waited queueTimeout in the queue
	// without a slot becoming free.
	ErrQueueTimeout = errors.New("pool: timed out waiting for a free slot")
)

// LimiterStats is a point-in-time snapshot of a [Limiter], shown per service
// by the admin /gateway/pools route. Counters are totals since creation.
type LimiterStats struct {
	// InFlight is the number of admitted requests not yet released.
	InFlight int64 `json:"in_flight"`
	// Queued is the number of requests waiting for a slot right now.
	Queued int64 `json:"queued"`
	// Admitted counts successful acquisitions (fast path and from the queue).
	Admitted uint64 `json:"admitted"`
	// Rejected counts requests refused with ErrQueueFull.
	Rejected uint64 `json:"rejected"`
	// TimedOut counts requests that left the queue with ErrQueueTimeout.
	TimedOut uint64 `json:"timed_out"`
	// Abandoned counts requests whose context ended while they waited.
	Abandoned uint64 `json:"abandoned"`
	// OverReleased counts release calls that found nothing in flight: a
	// caller bug (release called twice) that the limiter absorbed. It should
	// stay 0; see [Limiter.Acquire] for why not every double release can be
	// detected.
	OverReleased uint64 `json:"over_released"`
}

// Limiter bounds the number of concurrent requests to one service and queues
// a bounded number of extra requests in arrival order.
//
// Design: while the service is below its limit and nobody is queued,
// Acquire is one atomic load plus one compare-and-swap on the in-flight
// count, with no lock and no allocation, so a healthy service pays
// (almost) nothing for the protection. Only when the service is saturated
// does a request take the mutex and join a FIFO list of waiters; a release
// then hands its slot directly to the first waiter (the in-flight count does
// not drop in between), so no one barges past the queue and only one waiter
// is woken per release.
//
// A Limiter is safe for concurrent use. The zero value is not usable; call
// [NewLimiter].
type Limiter struct {
	// Hot fields, kept on one cache line: the fast path touches exactly
	// these (one line bouncing between cores rather than two).
	inflight atomic.Int64
	admitted atomic.Uint64
	queued   atomic.Int64 // == number of waiters in the list; written under mu
	max      int64        // <= 0: unlimited

	maxPending   int
	queueTimeout time.Duration
	releaseFn    func() // l.release, bound once so Acquire does not allocate

	mu   sync.Mutex
	head *waiter // FIFO: head is served first
	tail *waiter

	rejected     atomic.Uint64
	timedOut     atomic.Uint64
	abandoned    atomic.Uint64
	overReleased atomic.Uint64

	// queuedHook, when set (tests only), runs after a waiter joined the queue.
	queuedHook func()
}

// waiter is one queued Acquire. Fields other than ready are guarded by
// Limiter.mu.
type waiter struct {
	ready      chan struct{} // closed when a slot is handed over
	prev, next *waiter
	granted    bool
}

// NewLimiter returns a limiter admitting maxConns concurrent requests, with
// up to maxPending more waiting at most queueTimeout each.
//
// maxConns <= 0 means unlimited: Acquire never blocks or fails, but in-flight
// requests are still counted for the stats. maxPending <= 0 means no waiting:
// a request that finds every slot taken gets ErrQueueFull at once.
// queueTimeout <= 0 means a queued request waits until a slot frees up or its
// context ends.
func NewLimiter(maxConns, maxPending int, queueTimeout time.Duration) *Limiter {
	l := &Limiter{
		max:          int64(maxConns),
		maxPending:   max(maxPending, 0),
		queueTimeout: queueTimeout,
	}
	if l.max < 0 {
		l.max = 0
	}
	l.releaseFn = l.release
	return l
}

// Acquire admits the request or makes it wait in FIFO order for a slot.
//
// On success it returns a release function that must be called exactly once
// when the upstream exchange is over (typically `defer release()` right after
// the error check). The returned function is the same method value for every
// call, which is what keeps the fast path free of allocations; the price is
// that idempotence is the caller's job. A second call while nothing is in
// flight is detected and ignored (counted in OverReleased), but a second call
// while other requests hold slots would free one of theirs, so callers that
// may release from more than one place must make sure only one does.
//
// Errors: ErrQueueFull when the queue has no room, ErrQueueTimeout after
// queueTimeout in the queue, or ctx.Err() when ctx ends while waiting (the
// request then leaves the queue). If a slot is handed over at the same moment
// ctx ends or the timeout fires, the slot is passed on to the next waiter and
// the error is returned, so the caller never has to release after an error.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	if l.max <= 0 {
		l.inflight.Add(1)
		l.admitted.Add(1)
		return l.releaseFn, nil
	}
	// Fast path: nobody queued (so taking a slot cannot barge) and a slot free.
	if l.queued.Load() == 0 {
		for {
			n := l.inflight.Load()
			if n >= l.max {
				break
			}
			if l.inflight.CompareAndSwap(n, n+1) {
				l.admitted.Add(1)
				return l.releaseFn, nil
			}
		}
	}
	return l.acquireSlow(ctx)
}

// tryTake takes a slot if one is free. It does not look at the queue.
func (l *Limiter) tryTake() bool {
	for {
		n := l.inflight.Load()
		if n >= l.max {
			return false
		}
		if l.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (l *Limiter) acquireSlow(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		l.abandoned.Add(1)
		return nil, err
	}
	l.mu.Lock()
	if l.head == nil && l.tryTake() {
		l.mu.Unlock()
		l.admitted.Add(1)
		return l.releaseFn, nil
	}
	if l.queued.Load() >= int64(l.maxPending) {
		l.mu.Unlock()
		l.rejected.Add(1)
		return nil, ErrQueueFull
	}
	w := &waiter{ready: make(chan struct{})}
	l.pushLocked(w)
	// Publishing queued (above) before re-reading inflight (here) closes the
	// race with a lock-free release that decremented inflight after our
	// failed tryTake but read queued before our push: either it sees us and
	// dispatches, or we see its decrement now.
	l.dispatchLocked()
	l.mu.Unlock()
	if l.queuedHook != nil {
		l.queuedHook()
	}

	var timeout <-chan time.Time
	if l.queueTimeout > 0 {
		t := time.NewTimer(l.queueTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-w.ready:
		l.admitted.Add(1)
		return l.releaseFn, nil
	case <-ctx.Done():
		return nil, l.leave(w, ctx.Err(), &l.abandoned)
	case <-timeout:
		return nil, l.leave(w, ErrQueueTimeout, &l.timedOut)
	}
}

// leave takes w out of the queue after a timeout or cancellation. If w was
// granted a slot in the meantime, the slot is released (handed to the next
// waiter) so the caller, who gets an error, owes nothing.
func (l *Limiter) leave(w *waiter, err error, counter *atomic.Uint64) error {
	counter.Add(1)
	l.mu.Lock()
	if !w.granted {
		l.removeLocked(w)
		l.mu.Unlock()
		return err
	}
	l.mu.Unlock()
	l.release()
	return err
}

// release gives a slot back: to the first waiter if there is one, else to
// the pool of free slots.
func (l *Limiter) release() {
	if l.max <= 0 {
		l.decInflight()
		return
	}
	if l.queued.Load() == 0 {
		if !l.decInflight() {
			return
		}
		// A waiter may have queued between our load of queued and the
		// decrement; if so it may have missed the freed slot. See acquireSlow.
		if l.queued.Load() == 0 {
			return
		}
		l.mu.Lock()
		l.dispatchLocked()
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	if l.head != nil {
		// Hand the slot over: inflight stays the same.
		l.grantLocked(l.head)
		l.mu.Unlock()
		return
	}
	l.decInflight()
	l.mu.Unlock()
}

// decInflight decrements the in-flight count unless it is already 0, which
// only a double release can cause.
func (l *Limiter) decInflight() bool {
	for {
		n := l.inflight.Load()
		if n <= 0 {
			l.overReleased.Add(1)
			return false
		}
		if l.inflight.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// dispatchLocked grants free slots to waiters, first come first served.
func (l *Limiter) dispatchLocked() {
	for l.head != nil && l.tryTake() {
		l.grantLocked(l.head)
	}
}

func (l *Limiter) grantLocked(w *waiter) {
	l.removeLocked(w)
	w.granted = true
	close(w.ready)
}

func (l *Limiter) pushLocked(w *waiter) {
	w.prev = l.tail
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.queued.Add(1)
}

func (l *Limiter) removeLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
	l.queued.Add(-1)
}

// Stats returns a snapshot of the limiter's state and counters. Fields are
// read one by one without a lock, so they may be mutually off by the requests
// in transit; each one is exact on its own.
func (l *Limiter) Stats() LimiterStats {
	return LimiterStats{
		InFlight:     l.inflight.Load(),
		Queued:       l.queued.Load(),
		Admitted:     l.admitted.Load(),
		Rejected:     l.rejected.Load(),
		TimedOut:     l.timedOut.Load(),
		Abandoned:    l.abandoned.Load(),
		OverReleased: l.overReleased.Load(),
	}
}
