package pool

import (
	"math"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
)

// Backoff computes retry delays: exponential growth with full jitter,
// delay(n) drawn uniformly from [0, min(Cap, Base*2^n)). Full jitter (rather
// than a fixed or "equal" jitter) spreads the retries of many clients that
// failed at the same moment, so a recovering upstream is not hit by
// synchronised waves. The zero value means "retry at once".
type Backoff struct {
	// Base is the ceiling of the first retry's delay; it doubles per attempt.
	Base time.Duration
	// Cap bounds the ceiling; <= 0 means no bound beyond overflow.
	Cap time.Duration
}

// Delay returns the wait before retry number attempt (0 = first retry). It
// uses math/rand/v2's per-goroutine generator, so concurrent callers do not
// contend on a lock.
func (b Backoff) Delay(attempt int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	attempt = max(attempt, 0)
	ceiling := time.Duration(math.MaxInt64)
	if attempt < 63 && b.Base <= ceiling>>attempt {
		ceiling = b.Base << attempt
	}
	if b.Cap > 0 && ceiling > b.Cap {
		ceiling = b.Cap
	}
	return time.Duration(rand.Int64N(int64(ceiling)))
}

// IsIdempotent reports whether r may be sent again after a failure without
// risking a duplicated side effect: the methods RFC 9110 §9.2.2 defines as
// idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), and POST or PATCH
// carrying an Idempotency-Key header (draft-ietf-httpapi-idempotency-key),
// by which the client promises the upstream deduplicates them. It says
// nothing about the body: the caller must still be able to replay it
// (r.GetBody, or a buffered body).
func IsIdempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions,
		http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	case http.MethodPost, http.MethodPatch:
		return r.Header.Get("Idempotency-Key") != ""
	}
	return false
}

// Budget caps retries at a fraction of recent traffic, so that when an
// upstream goes down, retries add at most ratio more load instead of
// multiplying it (the "retry storm"). Over a sliding window it allows
//
//	retries <= ratio * requests + minPerSecond * window-seconds
//
// where the second term is a floor that lets a quiet service still retry.
// The window is split in 10 buckets; old buckets expire as time moves on.
//
// Request and TryRetry are lock-free: each bucket holds its counts in atomic
// words tagged with the bucket's tick, so a stale bucket is reset by the
// first writer of the new tick without losing concurrent increments.
type Budget struct {
	ratio   float64
	floor   float64 // minPerSecond * window seconds
	width   time.Duration
	start   time.Time
	now     func() time.Time // injectable clock for tests
	buckets [budgetBuckets]budgetBucket

	denied atomic.Uint64
}

// budgetStats is a snapshot of a [Budget] over its current window, for tests.
type budgetStats struct {
	// Requests counted in the window.
	Requests int64 `json:"requests"`
	// Retries granted in the window.
	Retries int64 `json:"retries"`
	// Denied counts retries refused since creation.
	Denied uint64 `json:"denied"`
}

const (
	budgetBuckets = 10
	tagBits       = 24
	countBits     = 64 - tagBits
	countMask     = 1<<countBits - 1
	tagMask       = 1<<tagBits - 1
)

type budgetBucket struct {
	requests atomic.Uint64 // tag<<countBits | count
	retries  atomic.Uint64
}

// NewBudget returns a budget allowing ratio retries per request (0.2: one
// retry per five requests) plus minPerSecond retries per second, measured
// over window (default 10s when <= 0).
func NewBudget(ratio float64, minPerSecond int, window time.Duration) *Budget {
	if window <= 0 {
		window = 10 * time.Second
	}
	width := window / budgetBuckets
	if width <= 0 {
		width = 1
	}
	return &Budget{
		ratio: max(ratio, 0),
		floor: float64(max(minPerSecond, 0)) * window.Seconds(),
		width: width,
		start: time.Now(),
		now:   time.Now,
	}
}

func (b *Budget) tick() uint64 {
	d := b.now().Sub(b.start)
	if d < 0 {
		d = 0
	}
	return uint64(d / b.width)
}

// incr adds 1 to the counter word for tick t, resetting it first if it
// belongs to an older tick. It gives up (returning false) when limit says
// the new count is not allowed (allow may be nil: always allowed).
func incr(word *atomic.Uint64, t uint64, allow func(count uint64) bool) bool {
	tag := t & tagMask
	for {
		v := word.Load()
		count := uint64(0)
		if v>>countBits == tag {
			count = v & countMask
		}
		if allow != nil && !allow(count+1) {
			return false
		}
		if word.CompareAndSwap(v, tag<<countBits|(count+1)&countMask) {
			return true
		}
	}
}

// sum adds up the counters of the window ending at tick t, starting from the
// bucket `from` ticks back (0: include the current bucket, 1: only the past
// ones).
func (b *Budget) sum(t, from uint64, field func(*budgetBucket) *atomic.Uint64) uint64 {
	var total uint64
	for i := from; i < budgetBuckets && i <= t; i++ {
		tt := t - i
		v := field(&b.buckets[tt%budgetBuckets]).Load()
		if v>>countBits == tt&tagMask {
			total += v & countMask
		}
	}
	return total
}

func reqWord(bk *budgetBucket) *atomic.Uint64   { return &bk.requests }
func retryWord(bk *budgetBucket) *atomic.Uint64 { return &bk.retries }

// Request counts one original (non-retry) request. Call it once per request
// that might be retried; it is a few atomic operations.
func (b *Budget) Request() {
	t := b.tick()
	incr(&b.buckets[t%budgetBuckets].requests, t, nil)
}

// TryRetry consumes one retry from the budget and reports whether the retry
// may go ahead. A false answer means the service has retried too much lately:
// return the failure to the client instead.
func (b *Budget) TryRetry() bool {
	t := b.tick()
	allowed := b.ratio*float64(b.sum(t, 0, reqWord)) + b.floor
	past := b.sum(t, 1, retryWord)
	ok := incr(&b.buckets[t%budgetBuckets].retries, t, func(count uint64) bool {
		return float64(past+count) <= allowed
	})
	if !ok {
		b.denied.Add(1)
	}
	return ok
}

// Stats returns the request and retry counts of the current window.
func (b *Budget) stats() budgetStats {
	t := b.tick()
	return budgetStats{
		Requests: int64(b.sum(t, 0, reqWord)),
		Retries:  int64(b.sum(t, 0, retryWord)),
		Denied:   b.denied.Load(),
	}
}
