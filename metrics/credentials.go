package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// CredentialFunc reports a service credential's token fetches and failed
// fetches so far. It is called at scrape time: cheap and concurrency-safe.
type CredentialFunc func() (fetches, failures int64)

// SetCredential registers fn as the source of
// caddy_gateway_credential_fetches_total and
// caddy_gateway_credential_failures_total for service under id (one id per
// handler and service, so a reload's overlap never counts twice). The
// returned func removes it; call it in Cleanup.
func (c *Collectors) SetCredential(id, service string, fn CredentialFunc) (remove func()) {
	return c.credentials.set(id, service, fn)
}

// credentialCollector reads the registered credential sources at scrape
// time, so token fetch counters need no bookkeeping on the request path.
type credentialCollector struct {
	fetchesDesc, failuresDesc *prometheus.Desc
	sources                   scrapeSources[credentialSource]
}

type credentialSource struct {
	service string
	fn      CredentialFunc
}

func newCredentialCollector() *credentialCollector {
	return &credentialCollector{
		fetchesDesc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, Subsystem, "credential_fetches_total"),
			"Service tokens fetched (OAuth2 token endpoint calls, token file reads), by service.", []string{"service"}, nil),
		failuresDesc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, Subsystem, "credential_failures_total"),
			"Failed service token fetches, by service.", []string{"service"}, nil),
	}
}

func (c *credentialCollector) set(id, service string, fn CredentialFunc) func() {
	return c.sources.set(id, credentialSource{service: service, fn: fn})
}

// Describe implements prometheus.Collector.
func (c *credentialCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.fetchesDesc
	ch <- c.failuresDesc
}

// Collect implements prometheus.Collector. Sources of one service (two
// handlers during a reload) are summed.
func (c *credentialCollector) Collect(ch chan<- prometheus.Metric) {
	type totals struct{ fetches, failures int64 }
	sum := map[string]totals{}
	for _, s := range c.sources.snapshot() {
		f, e := s.fn()
		t := sum[s.service]
		sum[s.service] = totals{t.fetches + f, t.failures + e}
	}
	for service, t := range sum {
		ch <- prometheus.MustNewConstMetric(c.fetchesDesc, prometheus.CounterValue, float64(t.fetches), service)
		ch <- prometheus.MustNewConstMetric(c.failuresDesc, prometheus.CounterValue, float64(t.failures), service)
	}
}
