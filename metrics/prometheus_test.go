package metrics

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// sample finds the value of one series in a gathered registry: the counter
// or gauge value, or the sample count of a histogram. found is false when
// the series does not exist.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (v float64, found bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, want := range labels {
				if got[k] != want {
					continue metric
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// seriesCount is the number of series of one family.
func seriesCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

func TestStatusClassIndex(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{
		{100, "1xx"}, {101, "1xx"}, {200, "2xx"}, {204, "2xx"}, {299, "2xx"},
		{304, "3xx"}, {404, "4xx"}, {499, "4xx"}, {500, "5xx"}, {503, "5xx"}, {599, "5xx"},
		{0, "5xx"}, {99, "5xx"}, {600, "5xx"}, {-1, "5xx"}, {1000, "5xx"},
	}
	for _, tt := range tests {
		if got := statusClasses[statusClassIndex(tt.code)]; got != tt.want {
			t.Errorf("class(%d) = %s, want %s", tt.code, got, tt.want)
		}
	}
}

// TestCacheLabels: every cache outcome maps to one of the five result labels, a collapsed miss to hit.
func TestCacheLabels(t *testing.T) {
	want := map[outcome.Cache]string{outcome.CacheHit: "hit", outcome.CacheCollapsed: "hit", outcome.CacheMiss: "miss",
		outcome.CacheStale: "stale", outcome.CacheBypass: "bypass", outcome.CacheRevalidated: "revalidated"}
	for c := range outcome.NumCache {
		if got := cacheLabels[cacheLabel[c]]; got != want[c] {
			t.Errorf("%v → %q, want %q", c, got, want[c])
		}
	}
}

// recordTraffic plays a known mix of requests through c.
func recordTraffic(c *Collectors) {
	users := c.Service("users")
	products := c.Service("products")
	unknown := c.Service("")
	for _, res := range []outcome.Cache{outcome.CacheHit, outcome.CacheCollapsed, outcome.CacheMiss} {
		users.Record(outcome.Record{Status: 200, Duration: 2 * time.Millisecond, Cached: true, Cache: res})
	}
	users.Record(outcome.Record{Status: 503, Duration: 40 * time.Millisecond, Cached: true, Cache: outcome.CacheRevalidated, Error: outcome.ErrorUpstream})
	users.Record(outcome.Record{Status: 503, Duration: time.Millisecond, Error: outcome.ErrorQueue})
	users.Record(outcome.Record{Status: 404, Duration: time.Millisecond, Cached: true, Cache: outcome.Cache(42), Error: outcome.Error(42)}) // both ignored
	users.Record(outcome.Record{Status: 499, Duration: time.Millisecond, Error: outcome.ErrorClient})                                       // not an error
	users.ObserveUpstream(30 * time.Millisecond)
	users.ObserveUpstream(2 * time.Second)
	users.Inflight().Inc()
	users.Inflight().Inc()
	users.Inflight().Dec()
	users.SetQueued(3)
	products.SetQueued(0) // never queued: no series
	users.Retried()
	users.Retried()
	users.SetUpstreamHealthy("127.0.0.1:9001", true)
	users.SetUpstreamHealthy("127.0.0.1:9002", false)
	products.Record(outcome.Record{Status: 304, Duration: 500 * time.Microsecond, Cached: true, Cache: outcome.CacheStale})
	products.Record(outcome.Record{Status: 304, Duration: 500 * time.Microsecond, Cached: true, Cache: outcome.CacheBypass})
	unknown.Record(outcome.Record{Status: 404, Duration: 100 * time.Microsecond, Error: outcome.ErrorNotFound})
	c.BackgroundPanic()
}

func TestCollectorsRecord(t *testing.T) {
	reg := prometheus.NewPedanticRegistry() // what Caddy hands out per config load
	c, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	recordTraffic(c)
	remove := c.SetCacheSize("main", func() (int64, int64) { return 4096, 3 })
	defer remove()

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"caddy_gateway_requests_total", map[string]string{"service": "users", "code": "2xx"}, 3},
		{"caddy_gateway_requests_total", map[string]string{"service": "users", "code": "4xx"}, 2},
		{"caddy_gateway_requests_total", map[string]string{"service": "users", "code": "5xx"}, 2},
		{"caddy_gateway_requests_total", map[string]string{"service": "products", "code": "3xx"}, 2},
		{"caddy_gateway_requests_total", map[string]string{"service": UnknownService, "code": "4xx"}, 1},
		{"caddy_gateway_request_duration_seconds", map[string]string{"service": "users"}, 7},
		{"caddy_gateway_upstream_duration_seconds", map[string]string{"service": "users"}, 2},
		{"caddy_gateway_cache_requests_total", map[string]string{"service": "users", "result": "hit"}, 2},
		{"caddy_gateway_cache_requests_total", map[string]string{"service": "users", "result": "miss"}, 1},
		{"caddy_gateway_cache_requests_total", map[string]string{"service": "users", "result": "revalidated"}, 1},
		{"caddy_gateway_cache_requests_total", map[string]string{"service": "products", "result": "stale"}, 1},
		{"caddy_gateway_cache_requests_total", map[string]string{"service": "products", "result": "bypass"}, 1},
		{"caddy_gateway_errors_total", map[string]string{"service": "users", "kind": "upstream"}, 1},
		{"caddy_gateway_errors_total", map[string]string{"service": "users", "kind": "queue"}, 1},
		{"caddy_gateway_errors_total", map[string]string{"service": UnknownService, "kind": "not_found"}, 1},
		{"caddy_gateway_inflight", map[string]string{"service": "users"}, 1},
		{"caddy_gateway_queued", map[string]string{"service": "users"}, 3},
		{"caddy_gateway_queue_rejections_total", map[string]string{"service": "users"}, 1},
		{"caddy_gateway_retries_total", map[string]string{"service": "users"}, 2},
		{"caddy_gateway_upstream_healthy", map[string]string{"service": "users", "target": "127.0.0.1:9001"}, 1},
		{"caddy_gateway_upstream_healthy", map[string]string{"service": "users", "target": "127.0.0.1:9002"}, 0},
		{"caddy_gateway_background_panics_total", map[string]string{}, 1},
		{"caddy_gateway_cache_bytes", map[string]string{}, 4096},
		{"caddy_gateway_cache_entries", map[string]string{}, 3},
	}
	// children appear on first use: a status class or cache result no
	// request reached has no series (bounded memory with many services)
	for _, absent := range []struct {
		name   string
		labels map[string]string
	}{
		{"caddy_gateway_requests_total", map[string]string{"service": "users", "code": "3xx"}},
		{"caddy_gateway_cache_requests_total", map[string]string{"service": "users", "result": "stale"}},
		{"caddy_gateway_queued", map[string]string{"service": "products"}},
		{"caddy_gateway_inflight", map[string]string{"service": "products"}},
		{"caddy_gateway_upstream_duration_seconds", map[string]string{"service": "products"}},
	} {
		if _, ok := sample(t, reg, absent.name, absent.labels); ok {
			t.Errorf("%s%v exists before any use", absent.name, absent.labels)
		}
	}
	for _, tt := range tests {
		got, ok := sample(t, reg, tt.name, tt.labels)
		if !ok {
			t.Errorf("%s%v: series missing", tt.name, tt.labels)
			continue
		}
		if got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}

	// Bucket placement: 2 ms falls in le=0.0025, 40 ms in le=0.05.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "caddy_gateway_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() != "users" {
				continue
			}
			h := m.GetHistogram()
			if len(h.GetBucket()) != len(DurationBuckets) {
				t.Fatalf("%d buckets, want %d", len(h.GetBucket()), len(DurationBuckets))
			}
			cum := map[float64]uint64{}
			for _, b := range h.GetBucket() {
				cum[b.GetUpperBound()] = b.GetCumulativeCount()
			}
			for le, want := range map[float64]uint64{0.0005: 0, 0.001: 3, 0.0025: 6, 0.025: 6, 0.05: 7, 10: 7} {
				if cum[le] != want {
					t.Errorf("bucket le=%v cumulative = %d, want %d", le, cum[le], want)
				}
			}
			if got, want := h.GetSampleSum(), 0.006+0.040+3*0.001; got < want-1e-9 || got > want+1e-9 {
				t.Errorf("sum = %v, want %v", got, want)
			}
		}
	}

	// No series may carry anything but the bounded label values.
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "caddy_gateway_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "code" && !strings.HasSuffix(lp.GetValue(), "xx") {
					t.Errorf("%s: unbounded code label %q", mf.GetName(), lp.GetValue())
				}
			}
		}
	}
}

func TestCollectorsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	recordTraffic(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// Two gateway handlers in one config provision against the same registry;
// the second must reuse the first one's collectors, not fail.
func TestCollectorsSharedRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCollectors(reg)
	if err != nil {
		t.Fatalf("second NewCollectors on the same registry: %v", err)
	}
	a.Service("users").Record(outcome.Record{Status: 200, Duration: time.Millisecond})
	b.Service("users").Record(outcome.Record{Status: 200, Duration: time.Millisecond})
	b.Service("orders").Record(outcome.Record{Status: 500, Duration: time.Millisecond})
	rmA := a.SetCacheSize("handler-a", func() (int64, int64) { return 100, 1 })
	rmB := b.SetCacheSize("handler-b", func() (int64, int64) { return 50, 2 })

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"caddy_gateway_requests_total", map[string]string{"service": "users", "code": "2xx"}, 2},
		{"caddy_gateway_requests_total", map[string]string{"service": "orders", "code": "5xx"}, 1},
		{"caddy_gateway_cache_bytes", map[string]string{}, 150},
		{"caddy_gateway_cache_entries", map[string]string{}, 3},
	}
	for _, tt := range tests {
		if got, _ := sample(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}

	// Re-registering an id replaces it; a stale remove func is a no-op.
	a.SetCacheSize("handler-b", func() (int64, int64) { return 10, 1 })
	rmB()
	if got, _ := sample(t, reg, "caddy_gateway_cache_bytes", nil); got != 110 {
		t.Errorf("after replace: cache_bytes = %v, want 110", got)
	}
	rmA()
	if got, _ := sample(t, reg, "caddy_gateway_cache_bytes", nil); got != 10 {
		t.Errorf("after remove: cache_bytes = %v, want 10", got)
	}
	if n := seriesCount(t, reg, "caddy_gateway_requests_total"); n != 2 {
		t.Errorf("requests_total series = %d, want 2 (one class used by each of 2 services)", n)
	}
}

func TestCollectorsConflict(t *testing.T) {
	tests := []struct {
		name     string
		existing prometheus.Collector
	}{
		{"same name, other labels", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: Subsystem, Name: "requests_total", Help: "x"}, []string{"path"})},
		{"same name, other type", prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: Subsystem, Name: "retries_total",
			Help: "Upstream attempts beyond the first, by service."}, []string{"service"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(tt.existing)
			if _, err := NewCollectors(reg); err == nil {
				t.Fatal("NewCollectors succeeded over a conflicting metric")
			}
		})
	}
	if _, err := NewCollectors(nil); err == nil {
		t.Error("NewCollectors(nil) succeeded")
	}
}

func TestServiceHandleCached(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Service("a") != c.Service("a") {
		t.Error("Service returned two handles for one name")
	}
	if c.Service("") != c.Service(UnknownService) || c.Service("").Name() != UnknownService {
		t.Error("empty service name not mapped to UnknownService")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s := c.Service("concurrent")
			for range 1000 {
				s.Record(outcome.Record{Status: 200, Duration: time.Millisecond})
			}
		})
	}
	wg.Wait()
	if got, _ := sample(t, reg, "caddy_gateway_requests_total", map[string]string{"service": "concurrent", "code": "2xx"}); got != 8000 {
		t.Errorf("concurrent count = %v, want 8000", got)
	}
}

// TestRecordAllocs pins the hot path at zero allocations.
func TestRecordAllocs(t *testing.T) {
	c, err := NewCollectors(prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := c.Service("users")
	allocs := testing.AllocsPerRun(1000, func() {
		s.Inflight().Inc()
		s.ObserveUpstream(3 * time.Millisecond)
		s.Record(outcome.Record{Status: 504, Duration: 4 * time.Millisecond, Cached: true, Cache: outcome.CacheMiss, Error: outcome.ErrorTimeout})
		s.Inflight().Dec()
	})
	if allocs != 0 {
		t.Errorf("recording one request allocates %v times, want 0", allocs)
	}
}

func BenchmarkRecord(b *testing.B) {
	c, err := NewCollectors(prometheus.NewPedanticRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s := c.Service("users")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Record(outcome.Record{Status: 200 + (i&3)*100, Duration: time.Duration(i&1023) * time.Microsecond})
	}
}

// BenchmarkRecordFull is everything the root records per proxied request:
// in-flight up/down, upstream duration, and the request's record.
func BenchmarkRecordFull(b *testing.B) {
	c, err := NewCollectors(prometheus.NewPedanticRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s := c.Service("users")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Inflight().Inc()
			s.ObserveUpstream(3 * time.Millisecond)
			s.Record(outcome.Record{Status: 200, Duration: 4 * time.Millisecond, Cached: true, Cache: outcome.CacheMiss})
			s.Inflight().Dec()
		}
	})
}
