package upstream

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Breaker states, as /gateway/health shows them.
const (
	BreakerClosed   = "closed"    // traffic flows
	BreakerOpen     = "open"      // no traffic until the cool-down ends
	BreakerHalfOpen = "half-open" // one probe request decides
)

// breaker is one upstream's circuit breaker: Failures consecutive failures
// (connection errors, 500/502/503/504) open it for the cool-down; then it
// lets exactly one request through (half-open): success closes it, failure
// opens it again. Caddy's passive health checks count failures in a time
// window and reopen to all traffic at once; this gives the single probe.
type breaker struct {
	threshold int64
	cooldown  time.Duration

	fails    atomic.Int64 // consecutive failures while closed
	openedAt atomic.Int64 // unix nanos when opened; 0 while closed
	probing  atomic.Bool  // a half-open probe is in flight

	mu        sync.Mutex // guards lastError
	lastError string
}

func (b *breaker) state(now time.Time) string {
	opened := b.openedAt.Load()
	switch {
	case opened == 0:
		return BreakerClosed
	case now.UnixNano()-opened < int64(b.cooldown):
		return BreakerOpen
	}
	return BreakerHalfOpen
}

// admit reports whether a request may be sent to the upstream now, taking
// the half-open probe slot when the cool-down has passed.
func (b *breaker) admit(now time.Time) bool {
	if st := b.state(now); st != BreakerHalfOpen {
		return st == BreakerClosed
	}
	return b.probing.CompareAndSwap(false, true)
}

// available is admit without taking the probe slot (for health views).
func (b *breaker) available(now time.Time) bool {
	if st := b.state(now); st != BreakerHalfOpen {
		return st == BreakerClosed
	}
	return !b.probing.Load()
}

// record books the outcome of one exchange with the upstream.
func (b *breaker) record(ok bool, cause string, now time.Time) {
	if ok {
		b.fails.Store(0)
		b.openedAt.Store(0)
		b.probing.Store(false)
		return
	}
	b.mu.Lock()
	b.lastError = cause
	b.mu.Unlock()
	if b.openedAt.Load() != 0 { // a failed probe (or a late failure): open again
		b.openedAt.Store(now.UnixNano())
		b.probing.Store(false)
		return
	}
	if b.fails.Add(1) >= b.threshold {
		b.openedAt.Store(now.UnixNano())
	}
}

// breakerSelector wraps the service's load-balancing policy so targets
// whose breaker is open never get picked, and a half-open one gets one
// probe. When every breaker is closed it adds nothing but a loop over the
// targets; otherwise it passes the policy the admitted subset.
type breakerSelector struct {
	inner    reverseproxy.Selector
	breakers map[string]*breaker // by dial address; fixed at provision
}

// Select implements reverseproxy.Selector.
func (s *breakerSelector) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	now := time.Now()
	allClosed := true
	for _, u := range pool {
		if b := s.breakers[u.Dial]; b != nil && b.openedAt.Load() != 0 {
			allClosed = false
			break
		}
	}
	if allClosed {
		return s.inner.Select(pool, r, w)
	}
	admitted := make(reverseproxy.UpstreamPool, 0, len(pool))
	for _, u := range pool {
		b := s.breakers[u.Dial]
		if b == nil || b.state(now) == BreakerClosed {
			admitted = append(admitted, u)
		}
	}
	// a half-open target takes its single probe before closed ones share
	// the rest: it is how the breaker learns the target is back
	for _, u := range pool {
		if b := s.breakers[u.Dial]; b != nil && b.state(now) == BreakerHalfOpen && u.Available() && b.admit(now) {
			return u
		}
	}
	if len(admitted) == 0 {
		return nil // Caddy answers 503: no upstream available
	}
	return s.inner.Select(admitted, r, w)
}

// recordOutcome books a round trip to host in its breaker, if it has one.
func (s *Service) recordOutcome(host string, resp *http.Response, err error) {
	b := s.breakers[host]
	if b == nil {
		return
	}
	now := time.Now()
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		b.probing.Store(false) // the client left: no verdict on the upstream
	case err != nil:
		b.record(false, "connection error", now)
	case resp.StatusCode == http.StatusInternalServerError || resp.StatusCode == http.StatusBadGateway ||
		resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		b.record(false, "answered "+resp.Status, now)
	default:
		b.record(true, "", now)
	}
}
