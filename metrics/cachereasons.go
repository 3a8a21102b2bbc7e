package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// CacheReasonsFunc reports a cache's explained-miss counters: service → reason → count since the
// cache was created. It is called at scrape time, so it must be cheap and safe for concurrent use.
type CacheReasonsFunc func() map[string]map[string]int64

// SetCacheReasons registers fn as a source of caddy_gateway_cache_miss_reasons_total under id, with
// the same rules as SetCacheSize: the counter is the sum over every registered id, a cache shared by
// handlers is registered once, and the returned func removes this registration.
func (c *Collectors) SetCacheReasons(id string, fn CacheReasonsFunc) (remove func()) {
	return c.cacheReasons.sources.set(id, fn)
}

// cacheReasonsCollector exports the caches' reason counters at scrape time. Its labels are bounded:
// services come from the config, reasons from the cache's fixed set.
type cacheReasonsCollector struct {
	desc    *prometheus.Desc
	sources scrapeSources[CacheReasonsFunc]
}

func newCacheReasonsCollector() *cacheReasonsCollector {
	return &cacheReasonsCollector{desc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, Subsystem, "cache_miss_reasons_total"),
		"Why requests were not answered from the cache, or answers not stored, by service and reason "+
			"(no-freshness, no-store, private, set-cookie, authorization, too-large, status, vary-star, "+
			"request-no-cache, hit-for-miss, purged, redis-error, ...).",
		[]string{"service", "reason"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *cacheReasonsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *cacheReasonsCollector) Collect(ch chan<- prometheus.Metric) {
	sum := map[[2]string]int64{}
	for _, fn := range c.sources.snapshot() {
		if fn == nil {
			continue
		}
		for svc, reasons := range fn() {
			for r, n := range reasons {
				sum[[2]string{svc, r}] += n
			}
		}
	}
	for k, n := range sum {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), k[0], k[1])
	}
}

// Interface guard
var _ prometheus.Collector = (*cacheReasonsCollector)(nil)
