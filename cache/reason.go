package cache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Reason says why a request was not answered from the cache, or why an answer was not stored. The
// set is fixed, so it can label a metric; its name is also the Cache-Status `detail` of the answer
// it explains. New reasons (e.g. one for tags) are added at the end, before numReasons.
type Reason uint8

// Reasons. ReasonNone is no reason (stored, or served from the cache).
const (
	ReasonNone Reason = iota
	// The answer could not be stored (RFC 9111 §3 and the gateway's stricter rules).
	ReasonNoFreshness    // no freshness information and no validator: never reusable
	ReasonNoStore        // response Cache-Control: no-store
	ReasonPrivate        // response Cache-Control: private
	ReasonSetCookie      // the answer sets a cookie
	ReasonAuthorization  // a request with Authorization, and no public, s-maxage or must-revalidate
	ReasonTooLarge       // larger than max_item_size
	ReasonStatus         // a status that is not stored (206, 304, 1xx, or not heuristically cacheable)
	ReasonVaryStar       // Vary: *
	ReasonMustUnderstand // must-understand with a status the cache does not understand
	ReasonTrailer        // the answer announces trailers
	ReasonMethod         // not a GET
	ReasonPurged         // a purge or invalidation covering it came while it was fetched
	ReasonRefused        // the store could not take it (larger than the store, or closing)
	ReasonIncomplete     // the answer broke off, or its client left before it was complete
	// The request was not answered from the cache.
	ReasonRequestNoCache // request no-cache, max-age or min-fresh sent a fresh entry upstream
	ReasonRequestNoStore // request Cache-Control: no-store
	ReasonRequestBody    // a GET or HEAD with a body
	ReasonRange          // a Range the stored entries cannot answer
	ReasonPrecondition   // If-Match / If-Unmodified-Since, or Upgrade: passed through
	ReasonHitForMiss     // the URL's last answer was not storable: fetched without waiting on others
	ReasonRedisError     // a local miss could not ask the Redis tier: it was down (failing, backing off)
	numReasons
)

var reasonNames = [numReasons]string{
	"", "no-freshness", "no-store", "private", "set-cookie", "authorization", "too-large", "status",
	"vary-star", "must-understand", "trailer", "method", "purged", "refused", "incomplete",
	"request-no-cache", "request-no-store", "request-body", "range", "precondition", "hit-for-miss",
	"redis-error",
}

// String returns the reason's metric label and Cache-Status detail.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons lists every reason but ReasonNone, in order.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// reasonCounts counts reasons per service. Services are the configured ones (the caller's routes),
// so the map stays as small as the config.
type reasonCounts struct {
	m sync.Map // service → *[numReasons]atomic.Int64
}

func (rc *reasonCounts) add(service string, r Reason) {
	if r == ReasonNone || r >= numReasons {
		return
	}
	v, ok := rc.m.Load(service)
	if !ok {
		v, _ = rc.m.LoadOrStore(service, new([numReasons]atomic.Int64))
	}
	v.(*[numReasons]atomic.Int64)[r].Add(1)
}

// snapshot returns service → reason → count, non-zero counts only.
func (rc *reasonCounts) snapshot() map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	rc.m.Range(func(k, v any) bool {
		counts := v.(*[numReasons]atomic.Int64)
		m := map[string]int64{}
		for r := range counts {
			if n := counts[r].Load(); n > 0 {
				m[Reason(r).String()] = n
			}
		}
		if len(m) > 0 {
			out[k.(string)] = m
		}
		return true
	})
	return out
}

// Decision is what the cache last did with a URL's answer, as the admin API shows it.
type Decision struct {
	Time   time.Time `json:"time"`
	Status int       `json:"status,omitempty"` // the upstream's status, when there was an answer
	Stored bool      `json:"stored"`
	Reason string    `json:"reason,omitempty"` // why it was not stored or not served from the cache
}

// decisionsCap bounds the remembered decisions; the oldest is forgotten first. URLs longer than
// decisionURLMax are not remembered, so the memory stays under ~10 MiB whatever clients send.
const (
	decisionsCap   = 4096
	decisionURLMax = 2048
)

// decisions remembers the last decision per service and URL (Entry.URL form) in a fixed-size FIFO.
type decisions struct {
	mu   sync.Mutex
	m    map[decisionKey]Decision
	ring [decisionsCap]decisionKey
	next int
}

type decisionKey struct{ service, url string }

func (d *decisions) note(service, url string, dec Decision) {
	k := decisionKey{service, url}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = make(map[decisionKey]Decision, decisionsCap)
	}
	if _, ok := d.m[k]; !ok {
		if old := d.ring[d.next]; old != (decisionKey{}) {
			delete(d.m, old)
		}
		d.ring[d.next] = k
		d.next = (d.next + 1) % decisionsCap
	}
	d.m[k] = dec
}

func (d *decisions) last(service, url string) (Decision, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dec, ok := d.m[decisionKey{service, url}]
	return dec, ok
}

// explain counts a reason for service (Stats.Reasons, the metric) and remembers the decision for
// the URL when it concerns an answer.
func (c *Cache) explain(service, url string, status int, r Reason) {
	c.reasons.add(service, r)
	if url != "" && len(url)+len(service) <= decisionURLMax {
		c.decided.note(service, url, Decision{Time: c.now(), Status: status, Stored: r == ReasonNone, Reason: r.String()})
	}
}

// Reasons returns the explained-miss counters (service → reason → count), as in Stats.
func (c *Cache) Reasons() map[string]map[string]int64 { return c.reasons.snapshot() }
