// Package gateway is an API gateway for Caddy: the `gateway` HTTP handler
// routes /api/{service}/{path} to each service's upstreams through Caddy's
// own reverse proxy, injects per-service tokens, caches answers (RFC 9111,
// bounded in bytes), limits and queues load per service, and reports what
// it does through Caddy's metrics registry and admin API.
package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/caddy-gateway/cache"
	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
	"github.com/caddy-gateway/caddy-gateway/internal/reqbody"
	"github.com/caddy-gateway/caddy-gateway/internal/routing"
	"github.com/caddy-gateway/caddy-gateway/metrics"
	"github.com/caddy-gateway/caddy-gateway/pool"
	"github.com/caddy-gateway/caddy-gateway/upstream"
)

func init() {
	caddy.RegisterModule(new(Gateway))
}

// DefaultPrefix is the path prefix below which services are routed when
// neither the matcher nor `prefix` says otherwise.
const DefaultPrefix = "/api"

// Gateway is the `http.handlers.gateway` module: an API gateway that routes
// {prefix}/{service}/{path} to the upstreams of the named service.
type Gateway struct {
	// Name identifies this handler in the admin API when a config holds
	// several gateways. Default: "gateway", then "gateway2", ... by order.
	Name string `json:"name,omitempty"`

	// Prefix is the path below which the first segment names the service.
	// Default "/api" (the Caddyfile takes it from a `/x/*` matcher).
	Prefix string `json:"prefix,omitempty"`

	// Services are the services this gateway routes to.
	Services []*upstream.Config `json:"services,omitempty"`

	// Cache enables the response cache; nil disables it.
	Cache *CacheConfig `json:"cache,omitempty"`

	// HealthPath, when set, answers GET on that exact path with the
	// aggregate health of all services: 200 when every service has a
	// healthy upstream, else 503. No upstream address is shown.
	HealthPath string `json:"health_path,omitempty"`

	// SlowRequest logs one warning for each request slower than this.
	// 0 disables slow-request logs.
	SlowRequest caddy.Duration `json:"slow_request,omitempty"`

	// MaxBody rejects request bodies larger than this many bytes with 413.
	// 0 means no limit (bodies are streamed).
	MaxBody int64 `json:"max_body,omitempty"`

	// MemoryInterval is how often the memory monitor samples the Go
	// runtime. Default 60s.
	MemoryInterval caddy.Duration `json:"memory_interval,omitempty"`

	// MemoryLeakThreshold is the heap growth over the monitor's window, in
	// bytes, above which a leak warning is logged. Default 10 MiB.
	MemoryLeakThreshold int64 `json:"memory_leak_threshold,omitempty"`

	prefix   string
	services map[string]*upstream.Service
	order    []*upstream.Service
	routes   map[string]*route
	unknown  *metrics.ServiceMetrics
	obs      *observers
	obsKey   string
	memory   *metrics.MemoryMonitor
	slow     time.Duration
	drops    []func() // unregister scrape-time metric sources

	gaugeStop, gaugeDone chan struct{}
	cache                *cache.Cache
	cacheKey             string
	logger               *zap.Logger
	id                   string
	seq                  uint64
}

// CaddyModule returns the Caddy module information. Its receiver is a
// pointer: Caddy's events app calls it on the live module (e.g. when a
// health check of one of our services emits an event) while Provision may
// still be writing fields, and a value receiver would copy the struct.
func (*Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.gateway",
		New: func() caddy.Module { return new(Gateway) },
	}
}

// handlerSeq numbers provisioned gateways, so the admin API can tell the
// newest of two same-named handlers apart during a reload.
var handlerSeq atomic.Uint64

// Provision builds the services, the cache and the background workers.
func (g *Gateway) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	g.prefix = strings.TrimSuffix(g.Prefix, "/")
	if g.Prefix == "" {
		g.prefix = DefaultPrefix
	}
	if err := g.Validate(); err != nil {
		return err
	}

	g.slow = time.Duration(g.SlowRequest)
	g.seq = handlerSeq.Add(1)
	g.id = strconv.FormatUint(g.seq, 10)

	collectors, err := metrics.NewCollectors(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	g.unknown = collectors.Service(metrics.UnknownService)
	g.obsKey = "gateway.observers." + displayName(g)
	val, _, err := observerPool.LoadOrNew(g.obsKey, func() (caddy.Destructor, error) {
		return &observers{stats: metrics.NewStats(), profiler: metrics.NewProfiler(metrics.DefaultProfileWindow)}, nil
	})
	if err != nil {
		return err
	}
	g.obs = val.(*observers)

	g.services = make(map[string]*upstream.Service, len(g.Services))
	g.routes = make(map[string]*route, len(g.Services))
	for _, sc := range g.Services {
		svc, err := upstream.New(ctx, displayName(g), sc, g.logger)
		if err != nil {
			_ = g.Cleanup()
			return err
		}
		sm := collectors.Service(sc.Name)
		svc.OnRetry = sm.Retried
		rt := &route{svc: svc, metrics: sm, stats: g.obs.stats.Service(sc.Name)}
		rt.cache = cache.Route{Service: sc.Name, BasePath: svc.BasePath(), Fetch: rt.forward, WriteError: writeCacheError}
		rt.profiler = g.obs.profiler
		if svc.Credential() != nil {
			g.drops = append(g.drops, collectors.SetCredential(g.id+"/"+sc.Name, sc.Name, func() (int64, int64) {
				st := svc.Credential()
				return st.Fetches, st.Failures
			}))
		}
		g.services[sc.Name] = svc
		g.routes[sc.Name] = rt
		g.order = append(g.order, svc)
	}

	if g.Cache != nil {
		if err := g.provisionCache(); err != nil {
			_ = g.Cleanup()
			return err
		}
		stripped := g.Cache.strippedHeaders()
		for _, rt := range g.routes {
			rt.stripped = stripped
		}
		c := g.cache
		g.drops = append(g.drops, collectors.SetCacheSize(g.cacheKey, func() (int64, int64) {
			st := c.Stats()
			return st.Bytes, int64(st.Entries)
		}), collectors.SetCacheReasons(g.cacheKey, c.Reasons))
	}

	threshold := g.MemoryLeakThreshold
	if threshold == 0 {
		threshold = 10 << 20
	}
	g.memory = metrics.NewMemoryMonitor(time.Duration(g.MemoryInterval), uint64(threshold), metrics.DefaultMemoryRingSize,
		g.logger.Named("memory"), metrics.WithMemoryPanicHook(func(any) { collectors.BackgroundPanic() }))
	g.memory.Start(ctx)
	g.startGauges(collectors.BackgroundPanic)

	_, _ = handlers.LoadOrStore(g.id, g)
	return nil
}

// provisionCache takes the cache from a usage pool keyed by the cache
// config and the services it serves, so a reload that changes neither keeps
// the cache warm, and any change starts from an empty one.
func (g *Gateway) provisionCache() error {
	type identity struct {
		Cache    *CacheConfig
		Prefix   string
		Name     string
		Services [][]string
	}
	id := identity{Cache: g.Cache, Prefix: g.prefix, Name: g.Name}
	for _, s := range g.Services {
		id.Services = append(id.Services, append([]string{s.Name}, s.Upstreams...))
	}
	raw, err := json.Marshal(id)
	if err != nil {
		return fmt.Errorf("cache identity: %w", err)
	}
	sum := sha256.Sum256(raw)
	g.cacheKey = "gateway.cache." + hex.EncodeToString(sum[:])
	serviceNames := make([]string, 0, len(g.Services))
	for _, s := range g.Services {
		serviceNames = append(serviceNames, s.Name)
	}
	val, _, err := caches.LoadOrNew(g.cacheKey, func() (caddy.Destructor, error) {
		// Background refreshes run on workers that live as long as the
		// cache; a job from an unloaded config finishes or is dropped.
		workers := pool.NewWorkers("cache-revalidation", 2, 256, g.logger)
		opts := g.Cache.options(serviceNames)
		opts.Runner = workers
		opts.Detach = detach
		opts.Logger = g.logger.Named("cache")
		c, err := cache.New(opts)
		if err != nil {
			workers.Close()
			return nil, err
		}
		return &cacheDestructor{Cache: c, workers: workers}, nil
	})
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	g.cache = val.(*cacheDestructor).Cache
	return nil
}

// Validate rejects configs that cannot work, naming the offending field.
func (g *Gateway) Validate() error {
	if g.Prefix != "" && (!strings.HasPrefix(g.Prefix, "/") || strings.ContainsAny(g.Prefix, "*?#%")) {
		return fmt.Errorf("prefix %q must be a plain path starting with '/'", g.Prefix)
	}
	if len(g.Services) == 0 {
		return fmt.Errorf("no service declared")
	}
	seen := make(map[string]bool, len(g.Services))
	for _, s := range g.Services {
		if err := s.Validate(); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("service %q declared twice", s.Name)
		}
		seen[s.Name] = true
	}
	if g.HealthPath != "" && !strings.HasPrefix(g.HealthPath, "/") {
		return fmt.Errorf("health_path %q must start with '/'", g.HealthPath)
	}
	if g.SlowRequest < 0 || g.MemoryInterval < 0 || g.MemoryLeakThreshold < 0 || g.MaxBody < 0 {
		return fmt.Errorf("slow_request, memory_interval, memory_leak_threshold and max_body must not be negative")
	}
	if c := g.Cache; c != nil {
		return c.Validate(seen)
	}
	return nil
}

// Cleanup stops everything Provision started. The cache stays alive while
// another config (the one replacing this one) still uses it.
func (g *Gateway) Cleanup() error {
	if _, ok := handlers.References(g.id); ok {
		_, _ = handlers.Delete(g.id)
	}
	var errs []error
	g.stopGauges()
	if g.memory != nil {
		g.memory.Stop()
	}
	for _, drop := range g.drops {
		drop()
	}
	if g.obsKey != "" && g.obs != nil {
		_, _ = observerPool.Delete(g.obsKey)
	}
	if g.cacheKey != "" {
		_, _ = caches.Delete(g.cacheKey)
	}
	for _, s := range g.order {
		errs = append(errs, s.Cleanup())
	}
	return errors.Join(errs...)
}

// ServeHTTP routes the request to its service, through the cache if enabled.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if g.HealthPath != "" && r.URL.Path == g.HealthPath {
		return g.serveHealth(w, r)
	}
	name, rest, err := routing.Split(g.prefix, r.URL.EscapedPath())
	switch {
	case errors.Is(err, routing.ErrNotOurs):
		return next.ServeHTTP(w, r)
	case errors.Is(err, routing.ErrNoService):
		g.unknown.Record(outcome.Record{Status: http.StatusNotFound, Error: outcome.ErrorNotFound})
		return writeError(w, r, http.StatusNotFound, "", "no service in path: use "+g.prefix+"/{service}/...", 0)
	case err != nil:
		// name is unvalidated here: never a metric label
		g.unknown.Record(outcome.Record{Status: http.StatusBadRequest, Error: outcome.ErrorBadRequest})
		return writeError(w, r, http.StatusBadRequest, name, "invalid path: dot-segments and encoded separators are not allowed", 0)
	}
	rt := g.routes[name]
	if rt == nil {
		g.unknown.Record(outcome.Record{Status: http.StatusNotFound, Error: outcome.ErrorNotFound})
		return writeError(w, r, http.StatusNotFound, name, "unknown service", 0)
	}
	if strings.EqualFold(r.Method, http.MethodTrace) || strings.EqualFold(r.Method, "TRACK") ||
		strings.EqualFold(r.Method, http.MethodConnect) {
		// TRACE reflects the request as the service got it, token included;
		// CONNECT would open a tunnel. Neither belongs to an API.
		rt.metrics.Record(outcome.Record{Status: http.StatusMethodNotAllowed, Error: outcome.ErrorBadRequest})
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		return writeError(w, r, http.StatusMethodNotAllowed, name, "method not allowed", 0)
	}
	if g.MaxBody > 0 && r.ContentLength > g.MaxBody {
		rt.metrics.Record(outcome.Record{Status: http.StatusRequestEntityTooLarge, Error: outcome.ErrorBadRequest})
		return writeError(w, r, http.StatusRequestEntityTooLarge, name, "request body too large", 0)
	}
	body := reqbody.Wrap(w, r, g.MaxBody)
	routing.SetPath(r.URL, rest)

	start := time.Now()
	ex := exchanges.Get().(*exchange)
	ex.w, ex.rt, ex.body = w, rt, body
	res := cache.ResultBypass
	if g.cache != nil {
		res, err = g.cache.Serve(ex, r, &rt.cache)
	} else {
		err = rt.forward(ex, r, ex)
	}
	var herr error
	if err != nil {
		var ue *upstream.Error
		timedOut := errors.As(err, &ue) && ue.Status == http.StatusRequestTimeout
		if berr := body.BrokeOff(); berr != nil && !timedOut && ex.status == 0 {
			// the client's body broke off (short of its Content-Length, bad
			// chunking): its fault, not the upstream's, and counted so
			err = &upstream.Error{Status: http.StatusBadRequest, Service: name, Message: "request body incomplete", Err: berr}
		}
		herr = g.answerError(ex, r, name, err)
	}
	g.record(ex, r, name, res, start, err)
	*ex = exchange{}
	exchanges.Put(ex)
	return herr
}

// answerError turns a failed exchange into the JSON answer the client gets.
func (g *Gateway) answerError(w http.ResponseWriter, r *http.Request, service string, err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return writeError(w, r, http.StatusRequestEntityTooLarge, service, "request body too large", 0)
	}
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		ue = &upstream.Error{Status: http.StatusBadGateway, Service: service, Message: "upstream unavailable", Err: err}
		switch {
		case r.Context().Err() != nil: // e.g. gone while waiting on a coalesced fetch
			ue.Status, ue.Message = upstream.StatusClientClosedRequest, "client closed request"
		case errors.Is(err, context.DeadlineExceeded):
			ue.Status, ue.Message = http.StatusGatewayTimeout, "upstream timeout"
		}
	}
	if ue.Status == upstream.StatusClientClosedRequest {
		// nobody is listening; let Caddy's access log record the status
		return caddyhttp.Error(ue.Status, ue)
	}
	lvl := zap.ErrorLevel
	if ue.Kind() == outcome.ErrorBadRequest {
		lvl = zap.DebugLevel // the client's doing (a broken or stalled body)
	}
	if c := g.logger.Check(lvl, "upstream exchange failed"); c != nil {
		c.Write(zap.String("service", service), zap.Int("status", ue.Status),
			zap.String("request_id", requestID(r)), zap.Error(ue.Err))
	}
	return writeError(w, r, ue.Status, service, ue.Message, ue.RetryAfter)
}

// serveHealth answers the public aggregate health check.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) error {
	status, down := http.StatusOK, []string{}
	for _, s := range g.order {
		if !s.Healthy() {
			status = http.StatusServiceUnavailable
			down = append(down, s.Name)
		}
	}
	state := "ok"
	if status != http.StatusOK {
		state = "degraded"
	}
	return writeJSON(w, status, map[string]any{"status": state, "unhealthy_services": down})
}

// detach gives a background refresh its own copy of r with fresh Caddy
// request state (replacer, vars), so it can outlive the client's request
// without sharing mutable state with it.
func detach(r *http.Request) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	out := r.Clone(ctx)
	out.Body = http.NoBody
	out.ContentLength = 0
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	out = caddyhttp.PrepareRequest(out, caddy.NewReplacer(), nil, srv)
	return out, cancel
}

// cacheDestructor lets a cache and its refresh workers live in a
// caddy.UsagePool, ending together when the last config using them goes.
type cacheDestructor struct {
	*cache.Cache
	workers *pool.Workers
}

func (c *cacheDestructor) Destruct() error {
	c.workers.Close()
	c.Close()
	return nil
}

// caches holds response caches across config reloads; handlers holds the
// live gateways for the admin API. Both are Caddy usage pools.
var (
	caches   = caddy.NewUsagePool()
	handlers = caddy.NewUsagePool()
)

// Interface guards
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddy.Validator             = (*Gateway)(nil)
	_ caddy.CleanerUpper          = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
)
