package metrics

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of NewMemoryMonitor for non-positive arguments.
const (
	DefaultMemoryInterval = 60 * time.Second
	DefaultMemoryRingSize = 60
)

// minTrendSamples is how many samples the least-squares fit needs before the
// leak check runs: two points are a line through any noise.
const minTrendSamples = 3

// TopAllocationsMinInterval is how often TopAllocations reads the heap
// profile at most; callers in between share the previous result, so an
// admin endpoint polled in a loop cannot turn profiling into a load.
const TopAllocationsMinInterval = time.Second

// maxAllocSites bounds the cached TopAllocations result.
const maxAllocSites = 1000

// MemorySample is one reading of the Go runtime and the process, as shown by
// GET /gateway/memory.
type MemorySample struct {
	Time           time.Time `json:"time"`
	HeapInuseBytes uint64    `json:"heap_inuse_bytes"`
	HeapObjects    uint64    `json:"heap_objects"`
	Goroutines     int       `json:"goroutines"`
	GCPauseLastNs  uint64    `json:"gc_pause_last_ns"`
	GCPauseTotalNs uint64    `json:"gc_pause_total_ns"`
	NumGC          uint32    `json:"num_gc"`
	// RSSBytes is the resident set size from /proc/self/statm; 0 where
	// that file does not exist (non-Linux).
	RSSBytes uint64 `json:"rss_bytes"`
}

// ReadMemorySample reads the current runtime state. It calls
// runtime.ReadMemStats, which stops the world for a few tens of
// microseconds; at the default one-minute interval that is negligible, but
// do not call it per request.
func ReadMemorySample() MemorySample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := MemorySample{
		Time:           time.Now(),
		HeapInuseBytes: ms.HeapInuse,
		HeapObjects:    ms.HeapObjects,
		Goroutines:     runtime.NumGoroutine(),
		GCPauseTotalNs: ms.PauseTotalNs,
		NumGC:          ms.NumGC,
		RSSBytes:       readRSS(),
	}
	if ms.NumGC > 0 {
		s.GCPauseLastNs = ms.PauseNs[(ms.NumGC+255)%256]
	}
	return s
}

// readRSS returns the resident set size on Linux, 0 elsewhere or on error.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// MemoryTrend is the least-squares line through heap-in-use over the
// samples in the ring: its slope and the growth it implies over the span of
// those samples. A steady positive slope over a long window is the
// signature of a leak; GC sawtooth averages out in the fit.
type MemoryTrend struct {
	BytesPerSecond float64 `json:"bytes_per_second"`
	GrowthBytes    float64 `json:"growth_bytes"`
	WindowSeconds  float64 `json:"window_seconds"`
	Samples        int     `json:"samples"`
}

// MemorySnapshot is the JSON form of the monitor's state.
type MemorySnapshot struct {
	Samples            []MemorySample `json:"samples"` // oldest first
	Trend              MemoryTrend    `json:"trend"`
	LeakWarning        bool           `json:"leak_warning"`
	LeakThresholdBytes uint64         `json:"leak_threshold_bytes"`
	LeakEpisodes       uint64         `json:"leak_episodes"`
	Panics             uint64         `json:"panics"`
	IntervalSeconds    float64        `json:"interval_seconds"`
}

// AllocSite is one allocation site of the heap profile, estimated from the
// runtime's sampled profile (scaled like pprof does) as of the last
// completed GC.
type AllocSite struct {
	Function   string `json:"function"`
	File       string `json:"file"`
	Line       int    `json:"line"`
	InuseBytes int64  `json:"inuse_bytes"`
	AllocBytes int64  `json:"alloc_bytes"`
}

// MemoryOption customises a MemoryMonitor.
type MemoryOption func(*MemoryMonitor)

// WithMemorySampler replaces ReadMemorySample, so tests can feed a
// synthetic heap curve. A sample with a zero Time gets time.Now().
func WithMemorySampler(f func() MemorySample) MemoryOption {
	return func(m *MemoryMonitor) {
		if f != nil {
			m.sampler = f
		}
	}
}

// WithMemoryPanicHook is called with every panic the monitor's goroutine
// recovers, after it is logged; the root uses it to count
// caddy_gateway_background_panics_total.
func WithMemoryPanicHook(f func(recovered any)) MemoryOption {
	return func(m *MemoryMonitor) { m.onPanic = f }
}

// MemoryMonitor samples the runtime at a fixed interval into a bounded ring,
// fits a line through heap in use and warns once per episode when the
// heap grows by more than a threshold over the ring's window. It exists so
// that a slow leak shows up in the log and the admin API long before the
// process is killed for it.
type MemoryMonitor struct {
	interval  time.Duration
	threshold uint64
	logger    *zap.Logger
	sampler   func() MemorySample
	onPanic   func(any)

	mu       sync.Mutex
	ring     []MemorySample
	next     int // index the next sample goes to
	n        int // samples held
	trend    MemoryTrend
	warning  bool
	episodes uint64

	panics atomic.Uint64

	lifeMu  sync.Mutex
	started bool
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup

	topMu    sync.Mutex
	topAt    time.Time
	topSites []AllocSite
}

// NewMemoryMonitor returns a monitor that samples every interval (default
// 60 s), keeps the last ringSize samples (default 60, at least 2) and warns
// when heap in use grows by more than leakThreshold bytes over that window
// (0 disables the warning). A nil logger discards logs.
func NewMemoryMonitor(interval time.Duration, leakThreshold uint64, ringSize int, logger *zap.Logger, opts ...MemoryOption) *MemoryMonitor {
	if interval <= 0 {
		interval = DefaultMemoryInterval
	}
	if ringSize <= 0 {
		ringSize = DefaultMemoryRingSize
	}
	if ringSize < 2 {
		ringSize = 2
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	m := &MemoryMonitor{
		interval:  interval,
		threshold: leakThreshold,
		logger:    logger,
		sampler:   ReadMemorySample,
		ring:      make([]MemorySample, ringSize),
		stop:      make(chan struct{}),
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Start launches the sampling goroutine: one sample at once, then one per
// interval, until ctx is done or Stop is called. Pass the caddy.Context so
// the goroutine ends with its config. Only the first call starts anything.
func (m *MemoryMonitor) Start(ctx context.Context) {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.started {
		return
	}
	m.started = true
	if ctx == nil {
		ctx = context.Background()
	}
	m.wg.Add(1)
	go m.run(ctx)
}

// Stop ends the sampling goroutine and waits for it to return. It is safe
// to call more than once, and without Start.
func (m *MemoryMonitor) Stop() {
	m.stopped.Do(func() { close(m.stop) })
	m.wg.Wait()
}

func (m *MemoryMonitor) run(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.interval)
	defer t.Stop()
	m.tick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.stop:
			return
		case <-t.C:
			m.tick()
		}
	}
}

// tick takes one sample, recovering a panic so that one bad reading does
// not end monitoring (or the process).
func (m *MemoryMonitor) tick() {
	defer func() {
		if r := recover(); r != nil {
			m.panics.Add(1)
			m.logger.Error("memory monitor panicked; continuing",
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			if m.onPanic != nil {
				m.onPanic(r)
			}
		}
	}()
	m.SampleNow()
}

// SampleNow takes a sample immediately, adds it to the ring, refits the
// trend and runs the leak check; it returns the sample. The goroutine
// started by Start calls it every interval; tests call it directly.
func (m *MemoryMonitor) SampleNow() MemorySample {
	s := m.sampler() // outside the lock: a panicking sampler leaves no lock held
	if s.Time.IsZero() {
		s.Time = time.Now()
	}
	m.mu.Lock()
	m.ring[m.next] = s
	m.next = (m.next + 1) % len(m.ring)
	if m.n < len(m.ring) {
		m.n++
	}
	m.trend = fitTrend(m.samplesLocked())
	leaking := m.threshold > 0 && m.trend.Samples >= min(minTrendSamples, len(m.ring)) &&
		m.trend.GrowthBytes > float64(m.threshold)
	var warn, recovered bool
	switch {
	case leaking && !m.warning:
		m.warning, warn = true, true
		m.episodes++
	case !leaking && m.warning:
		m.warning, recovered = false, true
	}
	trend := m.trend
	m.mu.Unlock()

	if warn {
		m.logger.Warn("heap in use keeps growing: possible memory leak",
			zap.Float64("trend_bytes_per_second", trend.BytesPerSecond),
			zap.Float64("growth_bytes", trend.GrowthBytes),
			zap.Float64("window_seconds", trend.WindowSeconds),
			zap.Uint64("threshold_bytes", m.threshold),
			zap.Uint64("heap_inuse_bytes", s.HeapInuseBytes))
	}
	if recovered {
		m.logger.Info("heap growth back below the leak threshold",
			zap.Float64("trend_bytes_per_second", trend.BytesPerSecond),
			zap.Float64("growth_bytes", trend.GrowthBytes),
			zap.Uint64("threshold_bytes", m.threshold))
	}
	return s
}

// samplesLocked returns a copy of the ring, oldest first.
func (m *MemoryMonitor) samplesLocked() []MemorySample {
	out := make([]MemorySample, 0, m.n)
	start := (m.next - m.n + len(m.ring)) % len(m.ring)
	for i := 0; i < m.n; i++ {
		out = append(out, m.ring[(start+i)%len(m.ring)])
	}
	return out
}

// fitTrend is the least-squares slope of heap in use against time (centred
// sums, so large byte counts lose no precision).
func fitTrend(samples []MemorySample) MemoryTrend {
	t := MemoryTrend{Samples: len(samples)}
	if len(samples) < 2 {
		return t
	}
	t0 := samples[0].Time
	var mx, my float64
	for _, s := range samples {
		mx += s.Time.Sub(t0).Seconds()
		my += float64(s.HeapInuseBytes)
	}
	n := float64(len(samples))
	mx, my = mx/n, my/n
	var sxy, sxx float64
	for _, s := range samples {
		dx := s.Time.Sub(t0).Seconds() - mx
		sxy += dx * (float64(s.HeapInuseBytes) - my)
		sxx += dx * dx
	}
	t.WindowSeconds = samples[len(samples)-1].Time.Sub(t0).Seconds()
	if sxx == 0 || t.WindowSeconds <= 0 {
		return t
	}
	t.BytesPerSecond = sxy / sxx
	t.GrowthBytes = t.BytesPerSecond * t.WindowSeconds
	return t
}

// Snapshot returns the samples held, the trend and the warning state.
func (m *MemoryMonitor) Snapshot() MemorySnapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MemorySnapshot{
		Samples:            m.samplesLocked(),
		Trend:              m.trend,
		LeakWarning:        m.warning,
		LeakThresholdBytes: m.threshold,
		LeakEpisodes:       m.episodes,
		Panics:             m.panics.Load(),
		IntervalSeconds:    m.interval.Seconds(),
	}
}

// TopAllocations returns the n allocation sites holding the most heap
// (then the most allocated bytes), from the runtime's sampling heap profile
// as of the last completed GC. The frame reported is the first one outside
// package runtime. Reading the profile walks every sampled stack, so the
// result is recomputed at most once per TopAllocationsMinInterval and
// concurrent callers share it. It fails when heap profiling is off
// (runtime.MemProfileRate == 0) or n < 1.
func (m *MemoryMonitor) TopAllocations(n int) ([]AllocSite, error) {
	if n < 1 {
		return nil, errors.New("metrics: top allocations: n must be at least 1")
	}
	m.topMu.Lock()
	defer m.topMu.Unlock()
	if m.topSites == nil || time.Since(m.topAt) >= TopAllocationsMinInterval {
		sites, err := readAllocSites(int64(runtime.MemProfileRate))
		if err != nil {
			return nil, err
		}
		m.topSites, m.topAt = sites, time.Now()
	}
	n = min(n, len(m.topSites))
	return append([]AllocSite(nil), m.topSites[:n]...), nil
}

type siteKey struct {
	fn, file string
	line     int
}

// readAllocSites aggregates the heap profile sampled at rate (which is
// runtime.MemProfileRate, passed in for tests) by allocation site.
func readAllocSites(rate int64) ([]AllocSite, error) {
	if rate <= 0 {
		return nil, errors.New("metrics: top allocations: heap profiling is disabled (runtime.MemProfileRate = 0)")
	}
	n, _ := runtime.MemProfile(nil, true)
	var recs []runtime.MemProfileRecord
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		n, ok = runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
	}
	agg := make(map[siteKey]*AllocSite)
	for i := range recs {
		r := &recs[i]
		fr := allocFrame(r.Stack())
		k := siteKey{fr.Function, fr.File, fr.Line}
		site := agg[k]
		if site == nil {
			site = &AllocSite{Function: fr.Function, File: fr.File, Line: fr.Line}
			agg[k] = site
		}
		site.AllocBytes += scaleHeapSample(r.AllocObjects, r.AllocBytes, rate)
		site.InuseBytes += scaleHeapSample(r.InUseObjects(), r.InUseBytes(), rate)
	}
	sites := make([]AllocSite, 0, len(agg))
	for _, s := range agg {
		sites = append(sites, *s)
	}
	sort.Slice(sites, func(i, j int) bool {
		a, b := sites[i], sites[j]
		if a.InuseBytes != b.InuseBytes {
			return a.InuseBytes > b.InuseBytes
		}
		if a.AllocBytes != b.AllocBytes {
			return a.AllocBytes > b.AllocBytes
		}
		return a.Function < b.Function
	})
	if len(sites) > maxAllocSites {
		sites = sites[:maxAllocSites]
	}
	return sites, nil
}

// allocFrame is the first frame of stack outside the runtime (the code
// that asked for memory), or the first frame if all are runtime's.
func allocFrame(stack []uintptr) runtime.Frame {
	frames := runtime.CallersFrames(stack)
	var first runtime.Frame
	for i := 0; ; i++ {
		f, more := frames.Next()
		if i == 0 {
			first = f
		}
		if f.Function != "" && !strings.HasPrefix(f.Function, "runtime.") {
			return f
		}
		if !more {
			return first
		}
	}
}

// scaleHeapSample undoes the sampling of the heap profile the way
// runtime/pprof does: a sample of average size s taken at rate r stands for
// 1/(1-exp(-s/r)) allocations.
func scaleHeapSample(count, size, rate int64) int64 {
	if count == 0 || size == 0 {
		return 0
	}
	if rate <= 1 {
		return size
	}
	avg := float64(size) / float64(count)
	return int64(float64(size) / (1 - math.Exp(-avg/float64(rate))))
}
