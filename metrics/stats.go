package metrics

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
)

// EWMAAlpha is the weight of the newest sample in the exponentially weighted
// moving average response time: avg ← avg + 0.1·(sample − avg). With 0.1 the
// average reflects roughly the last 10-20 requests (a sample's weight halves
// after about 7 newer ones), so it follows a latency change within seconds
// under load without jumping on a single outlier; the profiler gives exact
// long-run averages and percentiles.
const EWMAAlpha = 0.1

// Stats holds the plain counters behind GET /gateway/stats: requests, cache
// hits and misses, errors and an EWMA response time, per service and in
// total. Every update is a handful of atomic operations, no locks, so it
// costs next to nothing beside the Prometheus collectors.
type Stats struct {
	total ServiceStats

	mu       sync.RWMutex
	services map[string]*ServiceStats
}

// NewStats returns empty statistics.
func NewStats() *Stats {
	return &Stats{services: make(map[string]*ServiceStats)}
}

// Service returns the handle of one service, creating it on first use;
// updates through it also update the total. Resolve handles in Provision
// and pass only configured names (or UnknownService): each name is kept for
// the lifetime of the Stats.
func (s *Stats) Service(name string) *ServiceStats {
	if name == "" {
		name = UnknownService
	}
	s.mu.RLock()
	ss, ok := s.services[name]
	s.mu.RUnlock()
	if ok {
		return ss
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.services[name]; ok {
		return ss
	}
	ss = &ServiceStats{parent: &s.total}
	s.services[name] = ss
	return ss
}

// Total returns the aggregate over all services, for readers; record
// through service handles so that both levels stay consistent.
func (s *Stats) Total() ServiceStatsSnapshot { return s.total.Snapshot() }

// Snapshot returns the totals and every service's counters, ready to be
// encoded as JSON. Counters are read one by one without a global lock, so
// under traffic the figures may be a few requests apart from each other.
func (s *Stats) Snapshot() StatsSnapshot {
	s.mu.RLock()
	out := StatsSnapshot{Services: make(map[string]ServiceStatsSnapshot, len(s.services))}
	for name, ss := range s.services {
		out.Services[name] = ss.Snapshot()
	}
	s.mu.RUnlock()
	out.Total = s.total.Snapshot()
	return out
}

// StatsSnapshot is the JSON form of Stats.
type StatsSnapshot struct {
	Total    ServiceStatsSnapshot            `json:"total"`
	Services map[string]ServiceStatsSnapshot `json:"services"`
}

// ServiceStatsSnapshot is the JSON form of one ServiceStats. AvgResponseMs
// is the EWMA (see EWMAAlpha), not the lifetime mean; the ratios are 0 when
// their denominator is.
type ServiceStatsSnapshot struct {
	Requests      uint64  `json:"requests"`
	CacheHits     uint64  `json:"cache_hits"`
	CacheMisses   uint64  `json:"cache_misses"`
	Errors        uint64  `json:"errors"`
	AvgResponseMs float64 `json:"avg_response_ms"`
	CacheHitRatio float64 `json:"cache_hit_ratio"`
	ErrorRate     float64 `json:"error_rate"`
}

// ServiceStats are one service's counters (or the total). All methods are
// safe for concurrent use, lock-free and allocation-free.
type ServiceStats struct {
	parent      *ServiceStats
	requests    atomic.Uint64
	cacheHits   atomic.Uint64
	cacheMisses atomic.Uint64
	errors      atomic.Uint64
	// ewmaNs holds the float64 bits of the EWMA in nanoseconds; 0 means no
	// sample yet, so the first sample becomes the average as is.
	ewmaNs atomic.Uint64
}

// Record counts one finished request: as failed when the gateway reports
// an error for it (a 5xx it produced or passed on), as a cache hit (served
// from a stored entry) or miss (fetched for the cache) when there is a
// cache, and folds its duration into the EWMA.
func (ss *ServiceStats) Record(r outcome.Record) {
	failed := r.Status >= 500
	hit := r.Cached && r.Cache.Served()
	miss := r.Cached && r.Cache.Fetched()
	for s := ss; s != nil; s = s.parent {
		s.requests.Add(1)
		if failed {
			s.errors.Add(1)
		}
		if hit {
			s.cacheHits.Add(1)
		} else if miss {
			s.cacheMisses.Add(1)
		}
		s.observe(r.Duration)
	}
}

// observe updates the EWMA with a compare-and-swap loop: lock-free, and a
// lost race only retries with the fresher value.
func (ss *ServiceStats) observe(d time.Duration) {
	x := float64(d)
	for {
		old := ss.ewmaNs.Load()
		next := x
		if old != 0 {
			avg := math.Float64frombits(old)
			next = avg + EWMAAlpha*(x-avg)
		}
		if ss.ewmaNs.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// Snapshot returns the current counters.
func (ss *ServiceStats) Snapshot() ServiceStatsSnapshot {
	out := ServiceStatsSnapshot{
		Requests:      ss.requests.Load(),
		CacheHits:     ss.cacheHits.Load(),
		CacheMisses:   ss.cacheMisses.Load(),
		Errors:        ss.errors.Load(),
		AvgResponseMs: math.Float64frombits(ss.ewmaNs.Load()) / 1e6,
	}
	if n := out.CacheHits + out.CacheMisses; n > 0 {
		out.CacheHitRatio = float64(out.CacheHits) / float64(n)
	}
	if out.Requests > 0 {
		out.ErrorRate = float64(out.Errors) / float64(out.Requests)
	}
	return out
}
