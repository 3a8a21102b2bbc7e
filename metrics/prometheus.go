package metrics

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
	"github.com/prometheus/client_golang/prometheus"
)

// Namespace and Subsystem prefix every metric name (caddy_gateway_*), so the
// gateway's series sit beside Caddy's own caddy_http_* ones without clashing.
const (
	Namespace = "caddy"
	Subsystem = "gateway"
)

// UnknownService is the service label used for requests that matched no
// configured service (and for an empty name). Routing a raw path segment into
// the label would let any client create series at will; folding them into one
// value keeps the label set bounded by the configuration.
const UnknownService = "_unknown"

// DurationBuckets are the histogram bounds (seconds) of the request and
// upstream duration histograms: 0.5 ms to 10 s, roughly 1-2.5-5 per decade,
// which resolves both cache hits (sub-millisecond) and slow upstreams while
// keeping 15 series per service and histogram.
var DurationBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// statusClasses are the only values of the code label: a bounded set, so a
// misbehaving upstream inventing status codes cannot grow the series count.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// statusClassIndex maps an HTTP status to its index in statusClasses.
// Anything outside 100-599 (including 0) counts as 5xx: a response without a
// valid status is a server fault. The caller should pass 200 when the handler
// wrote a body without an explicit WriteHeader, as net/http does.
func statusClassIndex(code int) int {
	if code < 100 || code > 599 {
		return 4
	}
	return code/100 - 1
}

// cacheLabels are the result label values of caddy_gateway_cache_requests_total, and cacheLabel
// maps each outcome.Cache to one of them: a collapsed miss was served a stored answer, a hit.
var (
	cacheLabels = [...]string{"hit", "miss", "stale", "bypass", "revalidated"}
	cacheLabel  = [outcome.NumCache]uint8{
		outcome.CacheHit: 0, outcome.CacheCollapsed: 0, outcome.CacheMiss: 1, outcome.CacheStale: 2,
		outcome.CacheBypass: 3, outcome.CacheRevalidated: 4,
	}
)

// Collectors owns the gateway's Prometheus collectors on one registry. Caddy
// gives every config load a fresh registry (ctx.GetMetricsRegistry()), so the
// root builds one Collectors per Provision; several gateway handlers in one
// config share the registered collectors (see NewCollectors).
type Collectors struct {
	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	upstreamDuration *prometheus.HistogramVec
	cacheRequests    *prometheus.CounterVec
	cacheSize        *cacheSizeCollector
	cacheReasons     *cacheReasonsCollector
	credentials      *credentialCollector
	inflight         *prometheus.GaugeVec
	queued           *prometheus.GaugeVec
	queueRejections  *prometheus.CounterVec
	retries          *prometheus.CounterVec
	upstreamHealthy  *prometheus.GaugeVec
	errors           *prometheus.CounterVec
	backgroundPanics prometheus.Counter

	mu       sync.Mutex
	services map[string]*ServiceMetrics
}

// NewCollectors creates the gateway collectors and registers them on reg.
// Pass the registry Caddy hands out per config load, never
// prometheus.DefaultRegisterer: the default one outlives config reloads, so
// series of removed services and targets would linger forever.
//
// Registering on a registry that already holds the gateway collectors (a
// second gateway handler in the same config) is not an error: the existing
// collectors are reused, so both handlers feed the same series. Any other
// registration conflict (same name, different labels or type) is returned.
func NewCollectors(reg prometheus.Registerer) (*Collectors, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil registerer")
	}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: Namespace, Subsystem: Subsystem, Name: name, Help: help}
	}
	hopts := func(name, help string) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Namespace: Namespace, Subsystem: Subsystem, Name: name, Help: help, Buckets: DurationBuckets}
	}
	c := &Collectors{services: make(map[string]*ServiceMetrics)}
	var err error
	reuse := func(name string, col prometheus.Collector) prometheus.Collector {
		if err != nil {
			return col
		}
		var got prometheus.Collector
		got, err = registerOrReuse(reg, col)
		if err != nil {
			err = fmt.Errorf("metrics: registering %s_%s_%s: %w", Namespace, Subsystem, name, err)
		}
		return got
	}
	// Each assignment type-asserts the collector returned by reuse; registerOrReuse
	// guarantees an existing collector has the same dynamic type as the new one.
	c.requests, _ = reuse("requests_total", prometheus.NewCounterVec(prometheus.CounterOpts(opts("requests_total",
		"Requests answered by the gateway, by service and status class (1xx-5xx).")), []string{"service", "code"})).(*prometheus.CounterVec)
	c.requestDuration, _ = reuse("request_duration_seconds", prometheus.NewHistogramVec(hopts("request_duration_seconds",
		"Time from the gateway receiving a request to the end of its response, by service."), []string{"service"})).(*prometheus.HistogramVec)
	c.upstreamDuration, _ = reuse("upstream_duration_seconds", prometheus.NewHistogramVec(hopts("upstream_duration_seconds",
		"Duration of upstream exchanges (including retries), by service."), []string{"service"})).(*prometheus.HistogramVec)
	c.cacheRequests, _ = reuse("cache_requests_total", prometheus.NewCounterVec(prometheus.CounterOpts(opts("cache_requests_total",
		"Cache lookups by service and result (hit, miss, stale, bypass, revalidated).")), []string{"service", "result"})).(*prometheus.CounterVec)
	c.cacheSize, _ = reuse("cache_bytes", newCacheSizeCollector()).(*cacheSizeCollector)
	c.cacheReasons, _ = reuse("cache_miss_reasons_total", newCacheReasonsCollector()).(*cacheReasonsCollector)
	c.credentials, _ = reuse("credential_fetches_total", newCredentialCollector()).(*credentialCollector)
	c.inflight, _ = reuse("inflight", prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("inflight",
		"Requests currently being exchanged with a service's upstreams.")), []string{"service"})).(*prometheus.GaugeVec)
	c.queued, _ = reuse("queued", prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("queued",
		"Requests waiting for a free slot of a service (beyond max_conns).")), []string{"service"})).(*prometheus.GaugeVec)
	c.queueRejections, _ = reuse("queue_rejections_total", prometheus.NewCounterVec(prometheus.CounterOpts(opts("queue_rejections_total",
		"Requests rejected with 503 because a service's queue was full or its queue_timeout passed.")), []string{"service"})).(*prometheus.CounterVec)
	c.retries, _ = reuse("retries_total", prometheus.NewCounterVec(prometheus.CounterOpts(opts("retries_total",
		"Upstream attempts beyond the first, by service.")), []string{"service"})).(*prometheus.CounterVec)
	c.upstreamHealthy, _ = reuse("upstream_healthy", prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("upstream_healthy",
		"1 when an upstream target of a service is considered healthy, else 0.")), []string{"service", "target"})).(*prometheus.GaugeVec)
	c.errors, _ = reuse("errors_total", prometheus.NewCounterVec(prometheus.CounterOpts(opts("errors_total",
		"Failed requests by service and kind (upstream, timeout, queue, bad_request, not_found, panic).")), []string{"service", "kind"})).(*prometheus.CounterVec)
	c.backgroundPanics, _ = reuse("background_panics_total", prometheus.NewCounter(prometheus.CounterOpts(opts("background_panics_total",
		"Panics recovered in the gateway's background goroutines (health checks, revalidation, monitors).")))).(prometheus.Counter)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// registerOrReuse registers col, or returns the collector already registered
// under the same descriptors when it has the same dynamic type.
func registerOrReuse(reg prometheus.Registerer, col prometheus.Collector) (prometheus.Collector, error) {
	err := reg.Register(col)
	if err == nil {
		return col, nil
	}
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		return col, err
	}
	if fmt.Sprintf("%T", are.ExistingCollector) != fmt.Sprintf("%T", col) {
		return col, fmt.Errorf("registered collector is a %T, want %T: %w", are.ExistingCollector, col, err)
	}
	return are.ExistingCollector, nil
}

// Service returns the metric handles of one service. Its label children are
// resolved on first use and kept, so that recording a request is then a few
// atomic adds and no map lookups or allocations. Call it in Provision for
// each configured service (and once with UnknownService) and keep the
// result; it is safe for concurrent use and returns the same handle for the
// same name.
//
// Only pass configured service names: every distinct name used creates
// series.
// An empty name is mapped to UnknownService.
func (c *Collectors) Service(name string) *ServiceMetrics {
	if name == "" {
		name = UnknownService
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.services[name]; ok {
		return s
	}
	s := &ServiceMetrics{
		c:               c,
		name:            name,
		upstreamHealthy: c.upstreamHealthy.MustCurryWith(prometheus.Labels{"service": name}),
	}
	c.services[name] = s
	return s
}

// BackgroundPanic counts a panic recovered in a background goroutine, so a
// crash loop that the recover hides from users still shows on a dashboard.
func (c *Collectors) BackgroundPanic() { c.backgroundPanics.Inc() }

// CacheSizeFunc reports a cache's current size in bytes and entries. It is
// called at scrape time, so it must be cheap and safe for concurrent use.
type CacheSizeFunc func() (bytes, entries int64)

// SetCacheSize registers fn as the source of caddy_gateway_cache_bytes and
// caddy_gateway_cache_entries under id. The gauges report the sum over all
// registered ids, so two handlers with separate caches both count, while a
// cache shared between handlers (one caddy.UsagePool entry) must be
// registered once, under one id, to avoid counting it twice; registering an
// id again replaces its function. The returned func removes this
// registration (a no-op once it has been replaced); call it in Cleanup.
func (c *Collectors) SetCacheSize(id string, fn CacheSizeFunc) (remove func()) {
	return c.cacheSize.set(id, fn)
}

// ServiceMetrics are one service's metric children, each resolved on first
// use (the queued gauge with the in-flight one): with thousands of services,
// eager children were most of the gateway's heap and of every scrape, and a
// service never used has no series. All methods are safe for concurrent use
// and, once a child exists, do not allocate.
type ServiceMetrics struct {
	c                *Collectors
	name             string
	requests         [len(statusClasses)]lazy[prometheus.Counter]
	requestDuration  lazy[prometheus.Observer]
	upstreamDuration lazy[prometheus.Observer]
	cache            [len(cacheLabels)]lazy[prometheus.Counter]
	inflight         lazy[prometheus.Gauge]
	queued           lazy[prometheus.Gauge]
	queueRejections  lazy[prometheus.Counter]
	retries          lazy[prometheus.Counter]
	errors           [outcome.NumErrors]lazy[prometheus.Counter] // the counted kinds only
	upstreamHealthy  *prometheus.GaugeVec
}

// lazy is a metric child resolved on first use, so that a service's series (and their memory, which
// the garbage collector walks) exist only once it is used. Two first uses at once may both resolve
// it; the vector returns the same child to both. The resolving func is passed at the call, not
// kept: a closure per child and service would be memory too.
type lazy[T any] struct {
	p atomic.Pointer[T]
}

func (l *lazy[T]) get(make func() T) T {
	if p := l.p.Load(); p != nil {
		return *p
	}
	v := make()
	l.p.Store(&v)
	return v
}

// Name returns the service label value of these handles.
func (s *ServiceMetrics) Name() string { return s.name }

// Record books one finished request: its status class, its total duration
// as the client saw it (cache hits included), how the cache took part when
// there is a cache, and its kind of failure when it is one the gateway
// counts (a queue rejection also in caddy_gateway_queue_rejections_total).
func (s *ServiceMetrics) Record(r outcome.Record) {
	class := statusClassIndex(r.Status)
	s.requests[class].get(func() prometheus.Counter {
		return s.c.requests.WithLabelValues(s.name, statusClasses[class])
	}).Inc()
	s.requestDuration.get(func() prometheus.Observer {
		return s.c.requestDuration.WithLabelValues(s.name)
	}).Observe(r.Duration.Seconds())
	if r.Cached && r.Cache < outcome.NumCache {
		i := cacheLabel[r.Cache]
		s.cache[i].get(func() prometheus.Counter {
			return s.c.cacheRequests.WithLabelValues(s.name, cacheLabels[i])
		}).Inc()
	}
	if r.Error.Counted() {
		s.errors[r.Error].get(func() prometheus.Counter {
			return s.c.errors.WithLabelValues(s.name, r.Error.String())
		}).Inc()
		if r.Error == outcome.ErrorQueue {
			s.queueRejections.get(func() prometheus.Counter {
				return s.c.queueRejections.WithLabelValues(s.name)
			}).Inc()
		}
	}
}

// ObserveUpstream records the duration of the upstream part of a request
// (all attempts), which tells slow upstreams apart from a slow gateway.
func (s *ServiceMetrics) ObserveUpstream(d time.Duration) {
	s.upstreamDuration.get(func() prometheus.Observer {
		return s.c.upstreamDuration.WithLabelValues(s.name)
	}).Observe(d.Seconds())
}

// Inflight is the gauge of requests holding a slot of the service's pool;
// the pool Incs on acquire and Decs on release. Its first use also makes
// the service's queued gauge (at 0): a service in use shows both.
func (s *ServiceMetrics) Inflight() prometheus.Gauge {
	return s.inflight.get(func() prometheus.Gauge {
		s.queued.get(func() prometheus.Gauge { return s.c.queued.WithLabelValues(s.name) })
		return s.c.inflight.WithLabelValues(s.name)
	})
}

// SetQueued sets the gauge of requests waiting for a slot of the service's
// pool. A service never used has no series: 0 is not set until then.
func (s *ServiceMetrics) SetQueued(n int64) {
	if n == 0 && s.queued.p.Load() == nil {
		return
	}
	s.queued.get(func() prometheus.Gauge { return s.c.queued.WithLabelValues(s.name) }).Set(float64(n))
}

// Retried counts one upstream attempt beyond the first.
func (s *ServiceMetrics) Retried() {
	s.retries.get(func() prometheus.Counter { return s.c.retries.WithLabelValues(s.name) }).Inc()
}

// SetUpstreamHealthy sets caddy_gateway_upstream_healthy for one target
// (its dial address, never a URL with credentials). Health changes are rare,
// so this resolves the label child on each call.
func (s *ServiceMetrics) SetUpstreamHealthy(target string, healthy bool) {
	v := 0.0
	if healthy {
		v = 1
	}
	s.upstreamHealthy.WithLabelValues(target).Set(v)
}

// scrapeSources is a set of functions read at scrape time, registered
// under ids: registering an id again replaces its source, and the remove
// func a registration returns is a no-op once it has been replaced.
type scrapeSources[T any] struct {
	mu sync.Mutex
	m  map[string]*T
}

func (s *scrapeSources[T]) set(id string, src T) func() {
	p := &src
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[string]*T)
	}
	s.m[id] = p
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.m[id] == p {
			delete(s.m, id)
		}
		s.mu.Unlock()
	}
}

// snapshot copies the sources out, so they run outside the lock and a slow
// one cannot block a registration.
func (s *scrapeSources[T]) snapshot() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(s.m))
	for _, p := range s.m {
		out = append(out, *p)
	}
	return out
}

// cacheSizeCollector exports the summed size of all registered caches as two
// gauges computed at scrape time.
type cacheSizeCollector struct {
	bytesDesc   *prometheus.Desc
	entriesDesc *prometheus.Desc
	sources     scrapeSources[CacheSizeFunc]
}

func newCacheSizeCollector() *cacheSizeCollector {
	return &cacheSizeCollector{
		bytesDesc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, Subsystem, "cache_bytes"),
			"Bytes held by the gateway's response caches.", nil, nil),
		entriesDesc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, Subsystem, "cache_entries"),
			"Entries held by the gateway's response caches.", nil, nil),
	}
}

func (c *cacheSizeCollector) set(id string, fn CacheSizeFunc) func() { return c.sources.set(id, fn) }

// Describe implements prometheus.Collector.
func (c *cacheSizeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytesDesc
	ch <- c.entriesDesc
}

// Collect implements prometheus.Collector.
func (c *cacheSizeCollector) Collect(ch chan<- prometheus.Metric) {
	var bytes, entries int64
	for _, fn := range c.sources.snapshot() {
		if fn == nil {
			continue
		}
		b, e := fn()
		bytes += b
		entries += e
	}
	ch <- prometheus.MustNewConstMetric(c.bytesDesc, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(c.entriesDesc, prometheus.GaugeValue, float64(entries))
}
