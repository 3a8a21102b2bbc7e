package metrics

import (
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
)

func TestEWMA(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		wantMs  float64
	}{
		{"no samples", nil, 0},
		{"first sample is the average", []time.Duration{10 * time.Millisecond}, 10},
		// 10 + 0.1·(20−10) = 11
		{"alpha 0.1", []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}, 11},
		// 11 + 0.1·(0−11) = 9.9
		{"three", []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 0}, 9.9},
		{"constant stays", []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}, 5},
		// after a step from 10 to 100 ms, 22 samples close (1−0.9^22) ≈ 90% of the gap
		{"step converges", append([]time.Duration{10 * time.Millisecond}, repeat(100*time.Millisecond, 22)...), 100 - 90*math.Pow(0.9, 22)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStats()
			svc := s.Service("users")
			for _, d := range tt.samples {
				svc.Record(outcome.Record{Status: 200, Duration: d})
			}
			if got := svc.Snapshot().AvgResponseMs; math.Abs(got-tt.wantMs) > 1e-9 {
				t.Errorf("EWMA = %v ms, want %v ms", got, tt.wantMs)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestStatsCounters(t *testing.T) {
	s := NewStats()
	users, products := s.Service("users"), s.Service("products")
	if s.Service("users") != users || s.Service("") != s.Service(UnknownService) {
		t.Fatal("Service handles not cached")
	}
	for _, r := range []outcome.Record{
		{Status: 200, Cached: true, Cache: outcome.CacheHit},
		{Status: 200, Cached: true, Cache: outcome.CacheCollapsed},
		{Status: 503, Cached: true, Cache: outcome.CacheStale}, // a 5xx served stale: a hit, and an error
		{Status: 200, Cached: true, Cache: outcome.CacheMiss},
		{Status: 201, Cached: true, Cache: outcome.CacheBypass}, // neither
	} {
		r.Duration = time.Millisecond
		users.Record(r)
	}
	products.Record(outcome.Record{Status: 200, Duration: time.Millisecond, Cached: true, Cache: outcome.CacheRevalidated})

	snap := s.Snapshot()
	tests := []struct {
		name string
		got  ServiceStatsSnapshot
		want ServiceStatsSnapshot
	}{
		{"users", snap.Services["users"], ServiceStatsSnapshot{Requests: 5, CacheHits: 3, CacheMisses: 1, Errors: 1, AvgResponseMs: 1, CacheHitRatio: 0.75, ErrorRate: 0.2}},
		{"products", snap.Services["products"], ServiceStatsSnapshot{Requests: 1, CacheMisses: 1, AvgResponseMs: 1}},
		{"total", snap.Total, ServiceStatsSnapshot{Requests: 6, CacheHits: 3, CacheMisses: 2, Errors: 1, AvgResponseMs: 1, CacheHitRatio: 0.6, ErrorRate: 1.0 / 6}},
		{"Total()", s.Total(), snap.Total},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %+v, want %+v", tt.name, tt.got, tt.want)
		}
	}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Total    map[string]float64            `json:"total"`
		Services map[string]map[string]float64 `json:"services"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"requests", "cache_hits", "cache_misses", "errors", "avg_response_ms"} {
		if _, ok := out.Total[k]; !ok {
			t.Errorf("JSON total lacks %q: %s", k, b)
		}
	}
}

// TestStatsConcurrent is for -race and checks no update is lost.
func TestStatsConcurrent(t *testing.T) {
	s := NewStats()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			svc := s.Service([]string{"a", "b"}[w%2])
			for range 10000 {
				svc.Record(outcome.Record{Status: 200, Duration: 2 * time.Millisecond, Cached: true, Cache: outcome.CacheHit})
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			_ = s.Snapshot()
		}
	})
	wg.Wait()
	tot := s.Total()
	if tot.Requests != 40000 || tot.CacheHits != 40000 || tot.AvgResponseMs != 2 {
		t.Errorf("total = %+v", tot)
	}
}

func TestStatsAllocs(t *testing.T) {
	svc := NewStats().Service("users")
	if a := testing.AllocsPerRun(1000, func() {
		svc.Record(outcome.Record{Status: 200, Duration: time.Millisecond, Cached: true, Cache: outcome.CacheHit})
	}); a != 0 {
		t.Errorf("allocs = %v, want 0", a)
	}
}

func BenchmarkStatsRecord(b *testing.B) {
	svc := NewStats().Service("users")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			svc.Record(outcome.Record{Status: 200, Duration: 3 * time.Millisecond})
		}
	})
}
