package metrics

import (
	"context"
	"encoding/json"
	"math"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const mib = 1 << 20

func TestFitTrend(t *testing.T) {
	t0 := time.Unix(0, 0)
	mk := func(heap ...uint64) []MemorySample {
		out := make([]MemorySample, len(heap))
		for i, h := range heap {
			out[i] = MemorySample{Time: t0.Add(time.Duration(i) * 10 * time.Second), HeapInuseBytes: h}
		}
		return out
	}
	tests := []struct {
		name       string
		samples    []MemorySample
		wantSlope  float64
		wantGrowth float64
	}{
		{"empty", nil, 0, 0},
		{"one", mk(100), 0, 0},
		{"flat", mk(100, 100, 100, 100), 0, 0},
		{"linear +1 MiB per 10 s", mk(0, mib, 2*mib, 3*mib), mib / 10.0, 3 * mib},
		{"falling", mk(3*mib, 2*mib, mib, 0), -mib / 10.0, -3 * mib},
		// GC sawtooth around a flat baseline fits to (almost) no growth
		{"sawtooth", mk(10*mib, 20*mib, 10*mib, 20*mib, 10*mib, 20*mib, 10*mib, 20*mib, 10*mib), 0, 0},
		{"same instant", []MemorySample{{Time: t0, HeapInuseBytes: 1}, {Time: t0, HeapInuseBytes: 5}}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fitTrend(tt.samples)
			if math.Abs(got.BytesPerSecond-tt.wantSlope) > 1e-6 || math.Abs(got.GrowthBytes-tt.wantGrowth) > 1e-3 {
				t.Errorf("trend = %+v, want slope %v growth %v", got, tt.wantSlope, tt.wantGrowth)
			}
			if got.Samples != len(tt.samples) {
				t.Errorf("samples = %d", got.Samples)
			}
		})
	}
}

// scriptedSampler returns samples 10 s apart whose heap follows heaps,
// holding the last value once the script runs out.
type scriptedSampler struct {
	mu    sync.Mutex
	t     time.Time
	heaps []uint64
	i     int
}

func (s *scriptedSampler) sample() MemorySample {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.heaps[min(s.i, len(s.heaps)-1)]
	s.i++
	s.t = s.t.Add(10 * time.Second)
	return MemorySample{Time: s.t, HeapInuseBytes: h}
}

func ramp(from uint64, step int64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(int64(from) + step*int64(i))
	}
	return out
}

// TestLeakWarningOncePerEpisode feeds a flat heap, a ramp, a plateau and a
// second ramp: the warning must be logged exactly once per ramp, and re-arm
// on the plateau.
func TestLeakWarningOncePerEpisode(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	phases := []struct {
		name         string
		heaps        []uint64
		wantWarnings int // cumulative
		wantWarning  bool
		wantEpisodes uint64
	}{
		{"flat", ramp(100*mib, 0, 8), 0, false, 0},
		{"ramp 5 MiB per sample", ramp(100*mib, 5*mib, 12), 1, true, 1},
		{"plateau", ramp(155*mib, 0, 10), 1, false, 1},
		{"second ramp", ramp(155*mib, 4*mib, 10), 2, true, 2},
		{"slow growth under threshold", ramp(195*mib, mib/4, 12), 2, false, 2},
	}
	var script []uint64
	for _, ph := range phases {
		script = append(script, ph.heaps...)
	}
	src := &scriptedSampler{t: time.Unix(0, 0), heaps: script}
	// ring of 5 samples = 40 s window; threshold 10 MiB over it
	m := NewMemoryMonitor(10*time.Second, 10*mib, 5, zap.New(core), WithMemorySampler(src.sample))

	for _, ph := range phases {
		for range ph.heaps {
			m.SampleNow()
		}
		warns := logs.FilterLevelExact(zapcore.WarnLevel).Len()
		snap := m.Snapshot()
		if warns != ph.wantWarnings || snap.LeakWarning != ph.wantWarning || snap.LeakEpisodes != ph.wantEpisodes {
			t.Errorf("after %s: %d warnings, warning=%v, episodes=%d; want %d, %v, %d (trend %+v)", ph.name,
				warns, snap.LeakWarning, snap.LeakEpisodes, ph.wantWarnings, ph.wantWarning, ph.wantEpisodes, snap.Trend)
		}
	}
	warnings := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(warnings) == 0 {
		t.Fatal("no warning logged")
	}
	fields := warnings[0].ContextMap()
	// The first warning fires while the window still holds flat samples, so
	// the fitted trend is positive but below the ramp's 0.5 MiB/s.
	rate, ok := fields["trend_bytes_per_second"].(float64)
	if !ok || rate <= 0 || rate > 0.5*mib+1 {
		t.Errorf("warning names trend %v, want in (0, 0.5 MiB/s]; fields %v", fields["trend_bytes_per_second"], fields)
	}
	if g, ok := fields["growth_bytes"].(float64); !ok || g <= 10*mib {
		t.Errorf("warning names growth %v, want > threshold", fields["growth_bytes"])
	}
	if got := logs.FilterMessageSnippet("back below").Len(); got != 2 {
		t.Errorf("%d re-arm messages, want 2", got)
	}
	snap := m.Snapshot()
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"samples"`, `"heap_inuse_bytes"`, `"bytes_per_second"`, `"growth_bytes"`, `"leak_warning"`, `"rss_bytes"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("snapshot JSON lacks %s", k)
		}
	}
	if len(snap.Samples) != 5 || !snap.Samples[0].Time.Before(snap.Samples[4].Time) {
		t.Errorf("ring = %d samples, want the last 5 oldest first", len(snap.Samples))
	}
}

func TestLeakWarningDisabled(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	src := &scriptedSampler{t: time.Unix(0, 0), heaps: ramp(0, 100*mib, 20)}
	m := NewMemoryMonitor(time.Second, 0, 4, zap.New(core), WithMemorySampler(src.sample))
	for range 20 {
		m.SampleNow()
	}
	if logs.Len() != 0 || m.Snapshot().LeakWarning {
		t.Errorf("threshold 0 must disable warnings; logs: %v", logs.All())
	}
}

func TestNewMemoryMonitorDefaults(t *testing.T) {
	tests := []struct {
		interval     time.Duration
		ring         int
		wantInterval time.Duration
		wantRing     int
	}{
		{0, 0, DefaultMemoryInterval, DefaultMemoryRingSize},
		{-time.Second, -1, DefaultMemoryInterval, DefaultMemoryRingSize},
		{time.Second, 1, time.Second, 2},
		{5 * time.Second, 10, 5 * time.Second, 10},
	}
	for _, tt := range tests {
		m := NewMemoryMonitor(tt.interval, 0, tt.ring, nil)
		if m.interval != tt.wantInterval || len(m.ring) != tt.wantRing {
			t.Errorf("NewMemoryMonitor(%v, %d) = interval %v, ring %d", tt.interval, tt.ring, m.interval, len(m.ring))
		}
	}
}

func TestReadMemorySample(t *testing.T) {
	runtime.GC()
	s := ReadMemorySample()
	if s.HeapInuseBytes == 0 || s.HeapObjects == 0 || s.Goroutines < 1 || s.NumGC == 0 || s.Time.IsZero() {
		t.Errorf("implausible sample %+v", s)
	}
	if runtime.GOOS == "linux" && s.RSSBytes < s.HeapInuseBytes/2 {
		t.Errorf("RSS %d implausibly below heap in use %d", s.RSSBytes, s.HeapInuseBytes)
	}
}

// TestMemoryMonitorGoroutine checks the background loop: it samples at
// once and per tick, survives a panicking sampler (logging and counting it),
// and ends on Stop or on context cancellation. goleak in TestMain proves
// nothing is left running.
func TestMemoryMonitorGoroutine(t *testing.T) {
	tests := []struct {
		name string
		stop func(m *MemoryMonitor, cancel context.CancelFunc)
	}{
		{"Stop", func(m *MemoryMonitor, _ context.CancelFunc) { m.Stop() }},
		{"context cancelled", func(m *MemoryMonitor, cancel context.CancelFunc) { cancel(); m.wg.Wait() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			calls := make(chan int)
			done := make(chan struct{})
			panics := make(chan any, 4)
			var n int
			sampler := func() MemorySample {
				n++
				if n == 2 {
					panic("sampler exploded")
				}
				select {
				case calls <- n:
				case <-done:
				}
				return MemorySample{HeapInuseBytes: uint64(n)}
			}
			m := NewMemoryMonitor(time.Millisecond, mib, 4, zap.New(core),
				WithMemorySampler(sampler), WithMemoryPanicHook(func(r any) { panics <- r }))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m.Start(ctx)
			m.Start(ctx) // second Start is a no-op

			if got := <-calls; got != 1 {
				t.Fatalf("first sample #%d", got)
			}
			if r := <-panics; r != "sampler exploded" {
				t.Fatalf("panic hook got %v", r)
			}
			if got := <-calls; got != 3 { // still sampling after the panic
				t.Fatalf("sample after panic #%d", got)
			}
			close(done)
			tt.stop(m, cancel)
			m.Stop() // idempotent

			snap := m.Snapshot()
			if snap.Panics != 1 {
				t.Errorf("panics = %d, want 1", snap.Panics)
			}
			if logs.FilterMessageSnippet("panicked").Len() != 1 {
				t.Errorf("panic not logged once: %v", logs.All())
			}
			if len(snap.Samples) < 2 || snap.Samples[0].HeapInuseBytes != 1 || snap.Samples[1].HeapInuseBytes != 3 {
				t.Errorf("samples = %+v", snap.Samples)
			}
		})
	}
	// Stop without Start returns at once.
	NewMemoryMonitor(time.Second, 0, 2, nil).Stop()
}

var retained [][]byte

//go:noinline
func leakyAllocationSite(n int) {
	for range n {
		retained = append(retained, make([]byte, mib))
	}
}

func TestTopAllocations(t *testing.T) {
	m := NewMemoryMonitor(time.Second, 0, 2, nil)
	if _, err := m.TopAllocations(0); err == nil {
		t.Error("TopAllocations(0) succeeded")
	}

	leakyAllocationSite(32)
	defer func() { retained = nil }()
	runtime.GC() // the heap profile is published at the end of a GC cycle
	runtime.GC()

	sites, err := m.TopAllocations(5)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) == 0 || len(sites) > 5 {
		t.Fatalf("%d sites, want 1..5", len(sites))
	}
	var found *AllocSite
	for i, s := range sites {
		if i > 0 && s.InuseBytes > sites[i-1].InuseBytes {
			t.Errorf("sites not sorted by in-use bytes: %+v", sites)
		}
		if strings.HasSuffix(s.Function, ".leakyAllocationSite") {
			found = &sites[i]
		}
	}
	if found == nil {
		t.Fatalf("leakyAllocationSite not among the top sites: %+v", sites)
	}
	if found.InuseBytes < 16*mib || found.AllocBytes < found.InuseBytes || !strings.HasSuffix(found.File, "memory_test.go") || found.Line == 0 {
		t.Errorf("site = %+v, want about 32 MiB in use in memory_test.go", *found)
	}

	// Within TopAllocationsMinInterval callers share the cached result,
	// even concurrently.
	leakyAllocationSite(8)
	runtime.GC()
	var wg sync.WaitGroup
	results := make([][]AllocSite, 4)
	for i := range results {
		wg.Go(func() { results[i], _ = m.TopAllocations(5) })
	}
	wg.Wait()
	for _, r := range results {
		if !reflect.DeepEqual(r, sites) {
			t.Errorf("rate-limited call returned a fresh profile: %+v", r)
		}
	}
	// Once the interval has passed the profile is read again.
	m.topMu.Lock()
	m.topAt = m.topAt.Add(-TopAllocationsMinInterval)
	m.topMu.Unlock()
	fresh, err := m.TopAllocations(5)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fresh {
		if s.Function == found.Function && s.InuseBytes <= found.InuseBytes {
			t.Errorf("refreshed profile shows %d B in use, want more than %d", s.InuseBytes, found.InuseBytes)
		}
	}

	// Asking for more than exist returns what there is.
	all, err := m.TopAllocations(1 << 30)
	if err != nil || len(all) < len(fresh) {
		t.Errorf("TopAllocations(huge) = %d sites, %v", len(all), err)
	}
}

// TestTopAllocationsDisabled passes the profile rate in rather than
// changing runtime.MemProfileRate, which must not change mid-run.
func TestTopAllocationsDisabled(t *testing.T) {
	_, err := readAllocSites(0)
	if err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("err = %v, want heap profiling disabled", err)
	}
}

func TestScaleHeapSample(t *testing.T) {
	tests := []struct {
		count, size, rate, want int64
	}{
		{0, 0, 512 * 1024, 0},
		{1, 100, 1, 100},
		{1, 8 << 20, 512 << 10, 8 << 20}, // a huge object is always sampled: scale ≈ 1
		{10, 10 * 512 << 10, 512 << 10, int64(float64(10*512<<10) / (1 - math.Exp(-1)))},
	}
	for _, tt := range tests {
		if got := scaleHeapSample(tt.count, tt.size, tt.rate); got != tt.want {
			t.Errorf("scale(%d, %d, %d) = %d, want %d", tt.count, tt.size, tt.rate, got, tt.want)
		}
	}
}

func BenchmarkTopAllocationsCached(b *testing.B) {
	m := NewMemoryMonitor(time.Second, 0, 2, nil)
	if _, err := m.TopAllocations(10); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = m.TopAllocations(10)
	}
}
