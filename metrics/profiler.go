package metrics

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
)

// RelativeAccuracy is the DDSketch accuracy of the profiler: every reported
// quantile q̂ of a latency distribution is within 1% relative error of a true
// sample value at that rank (|q̂ - q| <= 0.01·q), whatever the distribution
// and however many samples were recorded.
const RelativeAccuracy = 0.01

// MaxSketchBins bounds each sketch's store. At 1% accuracy one bin spans a
// factor of about 1.02, so 2048 bins cover a value ratio of about 10^17 —
// any realistic latency range (1 µs to hours) — with full accuracy; beyond
// it, the lowest bins are collapsed, so only the fastest quantiles lose
// accuracy, never p50/p95/p99 of a sane distribution. Each sketch therefore
// holds at most 2048 float64 counters (16 KiB), typically under 1000.
const MaxSketchBins = 2048

// windowBuckets is the number of rotating sub-sketches of the recent window.
const windowBuckets = 6

// DefaultProfileWindow is the recent window used when NewProfiler is given
// a non-positive duration.
const DefaultProfileWindow = 60 * time.Second

// Profiler keeps latency distributions per key (the root uses keys such as
// "users" and "users/hit") over the process lifetime and over a recent
// sliding window, in memory that does not grow with the number of requests:
// each Series holds one lifetime sketch and six window sub-sketches of
// bounded size, so its footprint is at most 7 × 16 KiB whatever the traffic.
//
// The window is split into six rotating buckets (10 s each for a 60 s window)
// which are merged when read; the window figures therefore cover between
// 5/6 and all of the configured window, depending on where in the current
// bucket the snapshot falls.
type Profiler struct {
	window    time.Duration
	bucketDur time.Duration
	now       func() time.Time
	start     time.Time

	mu     sync.RWMutex
	series map[string]*Series
}

// NewProfiler returns an empty profiler whose recent statistics cover
// window (DefaultProfileWindow when window <= 0).
func NewProfiler(window time.Duration) *Profiler {
	return newProfiler(window, time.Now)
}

func newProfiler(window time.Duration, now func() time.Time) *Profiler {
	if window <= 0 {
		window = DefaultProfileWindow
	}
	bucket := window / windowBuckets
	if bucket <= 0 {
		bucket = 1
	}
	return &Profiler{
		window:    window,
		bucketDur: bucket,
		now:       now,
		start:     now(),
		series:    make(map[string]*Series),
	}
}

// Series returns the handle of key, creating it on first use. Resolve the
// handles once (in Provision) and call Record on them: that skips the map
// lookup on the hot path. Keys must come from configuration, not from
// requests, since every key costs up to 112 KiB and lives as long as the
// profiler.
func (p *Profiler) Series(key string) *Series {
	p.mu.RLock()
	s, ok := p.series[key]
	p.mu.RUnlock()
	if ok {
		return s
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.series[key]; ok {
		return s
	}
	s = &Series{p: p, life: newSummary()}
	for i := range s.buckets {
		s.buckets[i] = bucket{epoch: -1, summary: newSummary()}
	}
	p.series[key] = s
	return s
}

// Record adds one duration under key. Prefer a Series handle on hot paths.
func (p *Profiler) Record(key string, d time.Duration) { p.Series(key).Record(d) }

// Snapshot returns the statistics of every key, ready to be encoded as the
// JSON of GET /gateway/profile. It copies nothing that Record mutates after
// returning, so callers may keep the result.
func (p *Profiler) Snapshot() map[string]ProfileStats {
	p.mu.RLock()
	keys := make([]string, 0, len(p.series))
	handles := make([]*Series, 0, len(p.series))
	for k, s := range p.series {
		keys = append(keys, k)
		handles = append(handles, s)
	}
	p.mu.RUnlock()
	out := make(map[string]ProfileStats, len(keys))
	for i, s := range handles {
		out[keys[i]] = s.Stats()
	}
	return out
}

// Keys returns the keys of the profiler in sorted order, for stable output.
func (p *Profiler) Keys() []string {
	p.mu.RLock()
	keys := make([]string, 0, len(p.series))
	for k := range p.series {
		keys = append(keys, k)
	}
	p.mu.RUnlock()
	sort.Strings(keys)
	return keys
}

// LatencyStats summarises a set of durations in milliseconds (JSON-friendly
// floats). Count, total, average, min and max are exact; the percentiles come
// from a DDSketch and are within RelativeAccuracy (1%) of the sample at rank
// ⌊q·(n−1)⌋ of the sorted samples (the lower nearest rank).
// All fields are zero when no sample was recorded.
type LatencyStats struct {
	Count   uint64  `json:"count"`
	TotalMs float64 `json:"total_ms"`
	AvgMs   float64 `json:"avg_ms"`
	MinMs   float64 `json:"min_ms"`
	MaxMs   float64 `json:"max_ms"`
	P50Ms   float64 `json:"p50_ms"`
	P95Ms   float64 `json:"p95_ms"`
	P99Ms   float64 `json:"p99_ms"`
}

// ProfileStats is one key's profile: lifetime statistics (inlined in JSON)
// plus the same over the recent window, whose length is given in seconds.
type ProfileStats struct {
	LatencyStats
	Window        LatencyStats `json:"window"`
	WindowSeconds float64      `json:"window_seconds"`
}

// Series is the latency record of one key. Record and Stats are safe for
// concurrent use; a mutex per series keeps contention to requests of the
// same key.
type Series struct {
	p       *Profiler
	mu      sync.Mutex
	life    summary
	buckets [windowBuckets]bucket
}

// Record adds one duration (negative ones count as 0), reading the clock
// to place it in the window. It does not allocate once the sketches' bins
// have grown to the range of the data.
func (s *Series) Record(d time.Duration) { s.RecordAt(s.p.now(), d) }

// RecordAt is Record for a caller that already holds the current time
// (typically the end time it subtracted the start from), which saves a
// clock read per request: on virtual machines time.Now can cost as much
// as the rest of Record. now only chooses the window bucket.
func (s *Series) RecordAt(now time.Time, d time.Duration) {
	if d < 0 {
		d = 0
	}
	epoch := s.p.epochAt(now)
	// Map the value to its bin once, outside the lock, and add the index
	// to both sketches (they share the mapping).
	v := float64(d)
	idx, indexed := 0, v > s.life.sketch.MinIndexableValue()
	if indexed {
		idx = s.life.sketch.Index(v)
	}
	s.mu.Lock()
	s.life.add(d, idx, indexed)
	b := &s.buckets[epoch%windowBuckets]
	if b.epoch != epoch {
		b.reset(epoch)
	}
	b.add(d, idx, indexed)
	s.mu.Unlock()
}

// Stats returns the lifetime and recent-window statistics of the series.
func (s *Series) Stats() ProfileStats {
	epoch := s.p.epoch()
	win := newSummary()
	s.mu.Lock()
	life := s.life.stats()
	for i := range s.buckets {
		b := &s.buckets[i]
		if b.epoch >= 0 && b.epoch > epoch-windowBuckets && b.epoch <= epoch {
			win.merge(&b.summary)
		}
	}
	s.mu.Unlock()
	return ProfileStats{LatencyStats: life, Window: win.stats(), WindowSeconds: s.p.window.Seconds()}
}

// epoch is the index of the current window bucket, counted on the monotonic
// clock from the profiler's creation so wall-clock jumps do not matter.
func (p *Profiler) epoch() int64 { return p.epochAt(p.now()) }

func (p *Profiler) epochAt(now time.Time) int64 {
	e := int64(now.Sub(p.start) / p.bucketDur)
	if e < 0 {
		return 0
	}
	return e
}

// summary is an exact count/total/min/max plus a bounded sketch, in
// nanoseconds.
type summary struct {
	count uint64
	// total is a float64 of nanoseconds: an int64 would overflow after
	// about 100 days at 10k requests/s of 100 ms.
	total  float64
	min    time.Duration
	max    time.Duration
	sketch *ddsketch.DDSketch
}

type bucket struct {
	epoch int64
	summary
}

func newSketch() *ddsketch.DDSketch {
	s, err := ddsketch.LogCollapsingLowestDenseDDSketch(RelativeAccuracy, MaxSketchBins)
	if err != nil {
		// Only an invalid accuracy constant can fail.
		panic("metrics: " + err.Error())
	}
	return s
}

func newSummary() summary { return summary{sketch: newSketch()} }

func (b *bucket) reset(epoch int64) {
	b.epoch = epoch
	b.count, b.total, b.min, b.max = 0, 0, 0, 0
	b.sketch.Clear() // keeps the allocated bins
}

// add records d, whose sketch bin index idx was computed by the caller
// (indexed is false for 0, which the sketch counts apart).
func (s *summary) add(d time.Duration, idx int, indexed bool) {
	if s.count == 0 || d < s.min {
		s.min = d
	}
	if d > s.max {
		s.max = d
	}
	s.count++
	s.total += float64(d)
	if indexed {
		s.sketch.GetPositiveValueStore().Add(idx)
	} else {
		_ = s.sketch.Add(float64(d)) // zero: cannot fail
	}
}

func (s *summary) merge(o *summary) {
	if o.count == 0 {
		return
	}
	if s.count == 0 || o.min < s.min {
		s.min = o.min
	}
	if o.max > s.max {
		s.max = o.max
	}
	s.count += o.count
	s.total += o.total
	_ = s.sketch.MergeWith(o.sketch) // same mapping: cannot fail
}

var quantiles = []float64{0.5, 0.95, 0.99}

func (s *summary) stats() LatencyStats {
	if s.count == 0 {
		return LatencyStats{}
	}
	st := LatencyStats{
		Count:   s.count,
		TotalMs: s.total / 1e6,
		AvgMs:   s.total / 1e6 / float64(s.count),
		MinMs:   ms(s.min),
		MaxMs:   ms(s.max),
	}
	qs, err := s.sketch.GetValuesAtQuantiles(quantiles)
	if err == nil {
		// The sketch returns a bin's representative value, which can fall
		// just outside the exact extremes; clamp for consistent output.
		clamp := func(v float64) float64 {
			return math.Min(math.Max(v/1e6, st.MinMs), st.MaxMs)
		}
		st.P50Ms, st.P95Ms, st.P99Ms = clamp(qs[0]), clamp(qs[1]), clamp(qs[2])
	}
	return st
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
