package gateway

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-gateway/caddy-gateway/cache"
	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
	"github.com/caddy-gateway/caddy-gateway/internal/reqbody"
	"github.com/caddy-gateway/caddy-gateway/metrics"
	"github.com/caddy-gateway/caddy-gateway/upstream"
)

// observers holds what a gateway records about its traffic: the profiler
// and the stats live in a usage pool keyed by the gateway's name, so they
// cover the process lifetime across config reloads.
type observers struct {
	stats    *metrics.Stats
	profiler *metrics.Profiler
}

func (*observers) Destruct() error { return nil }

var observerPool = caddy.NewUsagePool()

// route is what ServeHTTP needs to serve and record one service, resolved
// once at provision so the request path does no map or label lookups
// beyond the service name.
type route struct {
	cache cache.Route // what the cache is handed for this service (Fetch: forward)
	// stripped are the answer fields removed before an answer reaches the
	// client: the cache's tag fields (CacheConfig.strippedHeaders).
	stripped []string
	svc      *upstream.Service
	metrics  *metrics.ServiceMetrics
	stats    *metrics.ServiceStats
	latency  atomic.Pointer[metrics.Series] // all requests of the service, created on first use
	// byResult holds the per-cache-result series, indexed by cache.Result,
	// created on first use: most services see only a few results, and a
	// sketch costs kilobytes (10,000 services × 6 results added up).
	byResult [outcome.NumCache]atomic.Pointer[metrics.Series]
	profiler *metrics.Profiler

	lastQueued  int64
	lastHealthy []int8 // gauge updater only: per target in EachTarget's order, 0 unknown, 1 up, 2 down
	gauged      bool   // gauge updater only: it updated this route's gauges once
}

// latencySeries returns the profiler series of all the service's requests.
func (rt *route) latencySeries() *metrics.Series {
	if s := rt.latency.Load(); s != nil {
		return s
	}
	s := rt.profiler.Series(rt.svc.Name)
	rt.latency.Store(s)
	return s
}

// resultSeries returns the profiler series of one cache result.
func (rt *route) resultSeries(res cache.Result) *metrics.Series {
	if res >= outcome.NumCache {
		return rt.latencySeries()
	}
	if s := rt.byResult[res].Load(); s != nil {
		return s
	}
	s := rt.profiler.Series(rt.svc.Name + "/" + res.String())
	rt.byResult[res].Store(s)
	return s
}

// exchange is the per-request state, pooled: the status-recording writer
// and the time spent upstream.
type exchange struct {
	w        http.ResponseWriter
	status   int
	rt       *route
	upstream time.Duration
	body     *reqbody.Body // the request's body, nil without one
}

var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// forward sends a request to the service, timing the upstream exchange. It
// is the cache's Fetch: client is the request's exchange, or nil on a
// background refresh.
func (rt *route) forward(w http.ResponseWriter, r *http.Request, client http.ResponseWriter) error {
	m := rt.metrics
	m.Inflight().Inc()
	start := time.Now()
	// deferred: the reverse proxy aborts a response cut mid-body with
	// panic(http.ErrAbortHandler)
	defer func() {
		d := time.Since(start)
		m.Inflight().Dec()
		m.ObserveUpstream(d)
		if ex, ok := client.(*exchange); ok {
			ex.upstream += d
		}
	}()
	return rt.svc.Forward(w, r)
}

// Header, Write, WriteHeader, Flush and Unwrap make exchange the
// status-recording http.ResponseWriter of the request.
func (ex *exchange) Header() http.Header { return ex.w.Header() }

func (ex *exchange) WriteHeader(code int) {
	if code >= 200 {
		ex.finalHeader()
	}
	if ex.status == 0 || ex.status < 200 {
		ex.status = code
	}
	ex.w.WriteHeader(code)
}

func (ex *exchange) Write(p []byte) (int, error) {
	if ex.status == 0 {
		ex.finalHeader()
		ex.status = http.StatusOK
	}
	return ex.w.Write(p)
}

// finalHeader completes the final answer's header as it goes out: the
// connection closes when the request body is left unread, and the tag
// fields are removed.
func (ex *exchange) finalHeader() {
	h := ex.w.Header()
	ex.body.CloseIfUnread(h)
	for _, f := range ex.rt.stripped {
		delete(h, f)
	}
}

// Flush lets streamed answers (event streams) reach the client at once.
func (ex *exchange) Flush() { _ = http.NewResponseController(ex.w).Flush() }

// Unwrap lets http.ResponseController reach Caddy's writer (hijack for
// upgrades, deadlines).
func (ex *exchange) Unwrap() http.ResponseWriter { return ex.w }

// record books one finished request: one outcome.Record feeds the
// Prometheus metrics, the stats and the profiler, and the slow-request log.
func (g *Gateway) record(ex *exchange, r *http.Request, name string, res cache.Result, start time.Time, err error) {
	end := time.Now()
	rec := outcome.Record{Status: ex.status, Duration: end.Sub(start), Upstream: ex.upstream,
		Cached: g.cache != nil, Cache: res, Error: errorKind(err)}
	if rec.Status == 0 {
		rec.Status = http.StatusOK
	}
	rt := ex.rt
	rt.metrics.Record(rec)
	rt.stats.Record(rec)
	rt.latencySeries().RecordAt(end, rec.Duration)
	if rec.Cached {
		rt.resultSeries(res).RecordAt(end, rec.Duration)
	}
	if g.slow > 0 && rec.Duration >= g.slow {
		g.logger.Warn("slow request",
			zap.String("service", name),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path), // service-relative; never the query
			zap.Int("status", rec.Status),
			zap.Duration("duration", rec.Duration),
			zap.Duration("upstream_duration", rec.Upstream),
			zap.String("cache", res.String()),
			zap.String("request_id", requestID(r)),
		)
	}
}

// errorKind is the kind of a failed exchange; errors the upstream package
// did not make are not counted. It is apart from record so that the error's
// variable escapes to the heap only when there is one.
func errorKind(err error) outcome.Error {
	if err == nil {
		return outcome.ErrorNone
	}
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return outcome.ErrorNone
	}
	return ue.Kind()
}

// gaugeInterval is how often state gauges (queue length, target health)
// are refreshed from the real state they mirror.
const gaugeInterval = time.Second

// startGauges runs one goroutine that mirrors each service's queue length
// and each target's health into Prometheus gauges until stop is closed. It
// recovers its own panics (logged and counted): a bug here never takes
// Caddy down.
func (g *Gateway) startGauges(panicked func()) {
	g.gaugeStop = make(chan struct{})
	g.gaugeDone = make(chan struct{})
	update := func() {
		defer func() {
			if v := recover(); v != nil {
				panicked()
				g.logger.Error("gauge updater panicked", zap.Any("panic", v), zap.Stack("stack"))
			}
		}()
		// only changes reach the gauges: with thousands of services a
		// label lookup per target per tick is measurable idle CPU
		for _, rt := range g.routes {
			if q := rt.svc.PoolStats().Admission.Queued; q != rt.lastQueued || !rt.gauged {
				rt.metrics.SetQueued(q)
				rt.lastQueued = q
			}
			i := 0
			rt.svc.EachTarget(func(addr string, healthy bool) {
				v := int8(2)
				if healthy {
					v = 1
				}
				if i == len(rt.lastHealthy) {
					rt.lastHealthy = append(rt.lastHealthy, 0)
				}
				if rt.lastHealthy[i] != v {
					rt.metrics.SetUpstreamHealthy(addr, healthy)
					rt.lastHealthy[i] = v
				}
				i++
			})
			rt.gauged = true
		}
	}
	go func() {
		defer close(g.gaugeDone)
		t := time.NewTicker(gaugeInterval)
		defer t.Stop()
		for {
			update()
			select {
			case <-g.gaugeStop:
				return
			case <-t.C:
			}
		}
	}()
}

// stopGauges ends the goroutine startGauges began and waits for it.
func (g *Gateway) stopGauges() {
	if g.gaugeStop != nil {
		close(g.gaugeStop)
		<-g.gaugeDone
	}
}
