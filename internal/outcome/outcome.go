// Package outcome is the vocabulary of what happened to one request through
// the gateway: how the cache took part, which kind of failure it met, and
// the Record that carries both with the status and the durations. The cache
// and upstream packages produce these values, the metrics package consumes
// them, and the gateway hands one Record per request from one to the other.
// Each is a small integer, so that recording it is an array index.
package outcome

import "time"

// Cache says how the cache took part in answering one request.
type Cache uint8

// How the cache took part.
const (
	// CacheBypass: the cache did not take part (unsafe or uncacheable method, request no-store,
	// Range requests it cannot answer from a stored 200, precondition requests).
	CacheBypass Cache = iota
	// CacheHit: answered from a fresh stored entry without contacting upstream.
	CacheHit
	// CacheMiss: forwarded upstream (and stored if allowed), or failed upstream.
	CacheMiss
	// CacheStale: a stale entry was served (stale-while-revalidate, stale-if-error, max-stale).
	CacheStale
	// CacheRevalidated: a stored entry was confirmed by a 304 and served.
	CacheRevalidated
	// CacheCollapsed: the request waited for a concurrent identical miss and got its stored answer.
	CacheCollapsed
	// NumCache bounds the values above.
	NumCache
)

var cacheNames = [NumCache]string{"bypass", "hit", "miss", "stale", "revalidated", "collapsed"}

// String returns the name of c ("hit", "miss", ...), or "invalid".
func (c Cache) String() string {
	if c >= NumCache {
		return "invalid"
	}
	return cacheNames[c]
}

// Served reports whether the answer came from a stored entry: a hit, a
// collapsed miss or a stale answer.
func (c Cache) Served() bool { return c == CacheHit || c == CacheCollapsed || c == CacheStale }

// Fetched reports whether the answer was fetched from upstream for the
// cache: a miss or a revalidation.
func (c Cache) Fetched() bool { return c == CacheMiss || c == CacheRevalidated }

// Error classifies a failed request with a bounded set of kinds.
type Error uint8

// The kinds of failure.
const (
	ErrorNone       Error = iota // the request did not fail
	ErrorUpstream                // upstream unreachable or answered with a transport error
	ErrorTimeout                 // upstream or whole-exchange timeout
	ErrorQueue                   // rejected by the service's queue (full or queue timeout)
	ErrorBadRequest              // malformed client request, or its body broke off
	ErrorNotFound                // no service for the path
	ErrorPanic                   // a handler panic was recovered
	ErrorClient                  // the client went away before the answer: not the gateway's failure
	// NumErrors bounds the values above.
	NumErrors
)

var errorNames = [NumErrors]string{"none", "upstream", "timeout", "queue", "bad_request", "not_found", "panic", "client"}

// String returns the name of e ("upstream", "timeout", ...), or "invalid".
func (e Error) String() string {
	if e >= NumErrors {
		return "invalid"
	}
	return errorNames[e]
}

// Counted reports whether e is a failure the gateway counts as an error.
func (e Error) Counted() bool { return e != ErrorNone && e != ErrorClient && e < NumErrors }

// Record describes one finished request.
type Record struct {
	// Status is the status the client got.
	Status int
	// Duration is the whole request as the client saw it.
	Duration time.Duration
	// Upstream is the time spent in upstream exchanges for this request.
	Upstream time.Duration
	// Cached says that the gateway has a cache, so that Cache counts.
	Cached bool
	// Cache is how the cache took part.
	Cache Cache
	// Error is the kind of failure, ErrorNone without one.
	Error Error
}
