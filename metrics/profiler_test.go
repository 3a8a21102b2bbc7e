package metrics

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// newFakeClock is a manually advanced clock for window tests.
func newFakeClock() *testutil.Clock { return testutil.NewClock(time.Unix(1_700_000_000, 0)) }

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestProfilerAccuracyAndBoundedMemory records 10 million exponentially
// distributed latencies (mean 20 ms, plus a 1% tail ×50 so p99 is not just
// the exponential's) and checks that
//   - the live heap after 10M samples is the same as after 1M (bounded bins), and
//   - p50/p95/p99 are within 1% relative error of the exact quantiles,
//   - count, total, min and max are exact.
//
// It takes a few seconds; -short or -race record 2M instead.
func TestProfilerAccuracyAndBoundedMemory(t *testing.T) {
	n := 10_000_000
	if testing.Short() || raceEnabled {
		n = 2_000_000
	}
	const first = 1_000_000
	rng := rand.New(rand.NewPCG(42, 1))
	exact := make([]float64, n) // allocated before the first heap reading
	p := NewProfiler(time.Minute)
	s := p.Series("users")

	var total float64
	record := func(from, to int) {
		for i := from; i < to; i++ {
			v := rng.ExpFloat64() * 20e6 // ns
			if rng.IntN(100) == 0 {
				v *= 50
			}
			d := time.Duration(v)
			exact[i] = float64(d)
			total += float64(d)
			s.Record(d)
		}
	}
	record(0, first)
	heap1 := heapInUse()
	record(first, n)
	heap2 := heapInUse()
	growth := int64(heap2) - int64(heap1)
	t.Logf("live heap after %d samples: %d B; after %d: %d B (growth %d B)", first, heap1, n, heap2, growth)
	if growth > 64<<10 {
		t.Errorf("heap grew by %d B between %d and %d samples; want constant memory", growth, first, n)
	}

	st := s.Stats()
	slices.Sort(exact)
	if st.Count != uint64(n) {
		t.Errorf("count = %d, want %d", st.Count, n)
	}
	if got, want := st.TotalMs, total/1e6; math.Abs(got-want) > want*1e-9 {
		t.Errorf("total = %v ms, want %v ms", got, want)
	}
	if st.MinMs != exact[0]/1e6 || st.MaxMs != exact[n-1]/1e6 {
		t.Errorf("min/max = %v/%v ms, want %v/%v", st.MinMs, st.MaxMs, exact[0]/1e6, exact[n-1]/1e6)
	}
	for _, tt := range []struct {
		q   float64
		got float64
	}{{0.5, st.P50Ms}, {0.95, st.P95Ms}, {0.99, st.P99Ms}} {
		want := exact[int(tt.q*float64(n-1))] / 1e6
		rel := math.Abs(tt.got-want) / want
		t.Logf("p%v: sketch %.4f ms, exact %.4f ms, relative error %.5f", tt.q*100, tt.got, want, rel)
		if rel > RelativeAccuracy+1e-9 {
			t.Errorf("p%v = %v ms, exact %v ms: relative error %.4f > %.2f", tt.q*100, tt.got, want, rel, RelativeAccuracy)
		}
	}
	// Everything was recorded at one instant, so the window holds it all.
	if st.Window.Count != uint64(n) || st.Window.P99Ms != st.P99Ms {
		t.Errorf("window = %+v, want the lifetime figures", st.Window)
	}
}

// TestProfilerWindow drives the sliding window with an injected clock: a
// 60 s window in six 10 s buckets.
func TestProfilerWindow(t *testing.T) {
	clk := newFakeClock()
	p := newProfiler(time.Minute, clk.Now)
	s := p.Series("svc")

	steps := []struct {
		name        string
		advance     time.Duration
		record      time.Duration // recorded 10 times when non-zero
		wantWindow  uint64
		wantWinMin  float64
		wantWinMax  float64
		wantLife    uint64
		wantLifeMax float64
	}{
		{"first bucket", 0, time.Millisecond, 10, 1, 1, 10, 1},
		{"same bucket later", 9 * time.Second, 2 * time.Millisecond, 20, 1, 2, 20, 2},
		{"third bucket", 21 * time.Second, 5 * time.Millisecond, 30, 1, 5, 30, 5},
		{"first bucket still inside (t=59s)", 29 * time.Second, 0, 30, 1, 5, 30, 5},
		{"first bucket expired (t=60s)", time.Second, 0, 10, 5, 5, 30, 5},
		{"all expired (t=200s)", 140 * time.Second, 0, 0, 0, 0, 30, 5},
		{"reused bucket starts empty", 0, 3 * time.Millisecond, 10, 3, 3, 40, 5},
		{"a bucket lap later (t=260s)", 60 * time.Second, 7 * time.Millisecond, 10, 7, 7, 50, 7},
	}
	for _, st := range steps {
		clk.Advance(st.advance)
		if st.record > 0 {
			for range 10 {
				s.Record(st.record)
			}
		}
		got := p.Snapshot()["svc"]
		if got.Window.Count != st.wantWindow || got.Window.MinMs != st.wantWinMin || got.Window.MaxMs != st.wantWinMax {
			t.Errorf("%s: window count/min/max = %d/%v/%v, want %d/%v/%v", st.name,
				got.Window.Count, got.Window.MinMs, got.Window.MaxMs, st.wantWindow, st.wantWinMin, st.wantWinMax)
		}
		if got.Count != st.wantLife || got.MaxMs != st.wantLifeMax {
			t.Errorf("%s: lifetime count/max = %d/%v, want %d/%v", st.name, got.Count, got.MaxMs, st.wantLife, st.wantLifeMax)
		}
		if got.WindowSeconds != 60 {
			t.Errorf("%s: window_seconds = %v", st.name, got.WindowSeconds)
		}
	}
}

func TestProfilerStats(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		want    LatencyStats
	}{
		{"empty", nil, LatencyStats{}},
		{"one", []time.Duration{10 * time.Millisecond}, LatencyStats{Count: 1, TotalMs: 10, AvgMs: 10, MinMs: 10, MaxMs: 10, P50Ms: 10, P95Ms: 10, P99Ms: 10}},
		{"negative is zero", []time.Duration{-time.Second, 0}, LatencyStats{Count: 2}},
		// Quantiles use the lower rank ⌊q·(n−1)⌋, like DDSketch: p95 of three samples is the second.
		{"three", []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond},
			LatencyStats{Count: 3, TotalMs: 6, AvgMs: 2, MinMs: 1, MaxMs: 3, P50Ms: 2, P95Ms: 2, P99Ms: 2}},
		{"hundred", hundred(), LatencyStats{Count: 100, TotalMs: 5050, AvgMs: 50.5, MinMs: 1, MaxMs: 100, P50Ms: 50, P95Ms: 95, P99Ms: 99}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewProfiler(0)
			s := p.Series("k")
			for _, d := range tt.samples {
				s.Record(d)
			}
			got := s.Stats().LatencyStats
			approx := func(a, b float64) bool { return math.Abs(a-b) <= b*RelativeAccuracy+1e-12 }
			if got.Count != tt.want.Count || !approx(got.TotalMs, tt.want.TotalMs) || !approx(got.AvgMs, tt.want.AvgMs) ||
				got.MinMs != tt.want.MinMs || got.MaxMs != tt.want.MaxMs ||
				!approx(got.P50Ms, tt.want.P50Ms) || !approx(got.P95Ms, tt.want.P95Ms) || !approx(got.P99Ms, tt.want.P99Ms) {
				t.Errorf("stats = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// hundred is 1 ms … 100 ms.
func hundred() []time.Duration {
	out := make([]time.Duration, 100)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}

func TestProfilerSnapshotJSON(t *testing.T) {
	p := NewProfiler(time.Minute)
	p.Record("users", 5*time.Millisecond)
	p.Record("users/hit", time.Millisecond)
	if got := p.Keys(); !slices.Equal(got, []string{"users", "users/hit"}) {
		t.Errorf("keys = %v", got)
	}
	b, err := json.Marshal(p.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"count", "total_ms", "avg_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms", "window", "window_seconds"} {
		if _, ok := out["users"][field]; !ok {
			t.Errorf("JSON lacks %q: %s", field, b)
		}
	}
	if w, ok := out["users"]["window"].(map[string]any); !ok || w["count"] != 1.0 {
		t.Errorf("window = %v", out["users"]["window"])
	}
}

// TestProfilerConcurrent is for -race: writers on shared and lazily created
// keys while snapshots are taken.
func TestProfilerConcurrent(t *testing.T) {
	p := NewProfiler(time.Minute)
	keys := []string{"a", "b", "c", "a/hit"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				p.Record(keys[(w+i)%len(keys)], time.Duration(i)*time.Microsecond)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			_ = p.Snapshot()
		}
	})
	wg.Wait()
	var total uint64
	for _, st := range p.Snapshot() {
		total += st.Count
	}
	if total != 4*5000 {
		t.Errorf("recorded %d samples, want %d", total, 4*5000)
	}
}

func TestProfilerRecordAllocs(t *testing.T) {
	s := NewProfiler(time.Minute).Series("k")
	for i := range 10000 { // grow the bins over the data's range first
		s.Record(time.Duration(i) * 10 * time.Microsecond)
	}
	allocs := testing.AllocsPerRun(10000, func() { s.Record(3 * time.Millisecond) })
	if allocs != 0 {
		t.Errorf("Series.Record allocates %v times, want 0", allocs)
	}
}

func BenchmarkProfilerRecord(b *testing.B) {
	s := NewProfiler(time.Minute).Series("users")
	rng := rand.New(rand.NewPCG(1, 2))
	ds := make([]time.Duration, 4096)
	for i := range ds {
		ds[i] = time.Duration(rng.ExpFloat64() * 20e6)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Record(ds[i&4095])
	}
}

func BenchmarkProfilerRecordParallel(b *testing.B) {
	s := NewProfiler(time.Minute).Series("users")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d = (d + 7919*time.Microsecond) % time.Second
			s.Record(d)
		}
	})
}

// BenchmarkProfilerRecordAt is Record with the caller's end timestamp, as
// the root has it after measuring the request.
func BenchmarkProfilerRecordAt(b *testing.B) {
	s := NewProfiler(time.Minute).Series("users")
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.RecordAt(now, time.Duration(i&4095)*10*time.Microsecond)
	}
}

func TestProfilerRecordAt(t *testing.T) {
	clk := newFakeClock()
	p := newProfiler(time.Minute, clk.Now)
	s := p.Series("k")
	s.RecordAt(clk.Now().Add(-time.Hour), time.Millisecond) // before the profiler: first bucket
	s.RecordAt(clk.Now(), 2*time.Millisecond)
	clk.Advance(30 * time.Second)
	s.RecordAt(clk.Now(), 4*time.Millisecond)
	st := s.Stats()
	if st.Count != 3 || st.Window.Count != 3 || st.MaxMs != 4 || st.MinMs != 1 {
		t.Errorf("stats = %+v", st)
	}
	clk.Advance(45 * time.Second) // t=75s: bucket 0 (t<10s) has left the window
	if st := s.Stats(); st.Window.Count != 1 || st.Window.MinMs != 4 {
		t.Errorf("window = %+v, want only the 4 ms sample", st.Window)
	}
}
