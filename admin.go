package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-gateway/caddy-gateway/cache"
	"github.com/caddy-gateway/caddy-gateway/metrics"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the `admin.api.gateway` module: the gateway's routes under
// /gateway/ on Caddy's admin endpoint. Every answer is JSON; no answer ever
// carries a service token or an upstream request header.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.gateway",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	// route serves pattern with fn for method, and with the other methods' handlers in also.
	route := func(pattern, method string, fn adminHandler, also ...methodHandler) caddy.AdminRoute {
		fns := map[string]adminHandler{method: fn}
		allow := method
		for _, m := range also {
			fns[m.method] = m.fn
			allow += ", " + m.method
		}
		return caddy.AdminRoute{Pattern: pattern, Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			fn := fns[r.Method]
			if fn == nil {
				w.Header().Set("Allow", allow)
				return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use %s", r.Method, allow)}
			}
			gws, err := selectGateways(r)
			if err != nil {
				return err
			}
			return fn(w, r, gws)
		})}
	}
	return append([]caddy.AdminRoute{
		route("/gateway/stats", http.MethodGet, a.stats),
		route("/gateway/profile", http.MethodGet, a.profile),
		route("/gateway/memory", http.MethodGet, a.memory),
		route("/gateway/health", http.MethodGet, a.health),
		route("/gateway/pools", http.MethodGet, a.pools),
		route("/gateway/cache", http.MethodDelete, a.purge, methodHandler{http.MethodGet, a.inspect}),
	}, uiRoutes()...)
}

// adminHandler answers an admin request about the gateways it selects.
type adminHandler func(w http.ResponseWriter, r *http.Request, gws []*Gateway) error

// methodHandler is an adminHandler for one more method of a route.
type methodHandler struct {
	method string
	fn     adminHandler
}

// liveGateways lists the provisioned gateways by name (the `name` option,
// default "gateway"). When two live handlers share a name — during a reload,
// or several unnamed gateways in one config — the newest keeps the name and
// the others are listed as NAME#SEQ.
func liveGateways() map[string]*Gateway {
	var all []*Gateway
	handlers.Range(func(_, val any) bool {
		all = append(all, val.(*Gateway))
		return true
	})
	sort.Slice(all, func(i, j int) bool { return all[i].seq > all[j].seq })
	out := make(map[string]*Gateway, len(all))
	for _, g := range all {
		name := displayName(g)
		if _, taken := out[name]; taken {
			name += "#" + strconv.FormatUint(g.seq, 10)
		}
		out[name] = g
	}
	return out
}

// selectGateways picks the gateways a request asks about: ?name=X for one,
// all otherwise.
func selectGateways(r *http.Request) ([]*Gateway, error) {
	live := liveGateways()
	names := make([]string, 0, len(live))
	for n := range live {
		names = append(names, n)
	}
	sort.Strings(names)
	if want := r.URL.Query().Get("name"); want != "" {
		g, ok := live[want]
		if !ok {
			return nil, caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no gateway named %q (have %v)", want, names)}
		}
		return []*Gateway{g}, nil
	}
	out := make([]*Gateway, 0, len(names))
	for _, n := range names {
		out = append(out, live[n])
	}
	return out, nil
}

func displayName(g *Gateway) string {
	if g.Name != "" {
		return g.Name
	}
	return "gateway"
}

// stats answers requests, cache hits/misses, errors and the EWMA response
// time per service and in total, per gateway.
func (adminAPI) stats(w http.ResponseWriter, _ *http.Request, gws []*Gateway) error {
	out := map[string]any{}
	var total metrics.ServiceStatsSnapshot
	for _, g := range gws {
		snap := g.obs.stats.Snapshot()
		entry := map[string]any{"total": snap.Total, "services": snap.Services}
		if g.cache != nil {
			entry["cache"] = g.cache.Stats()
		}
		out[displayName(g)] = entry
		total = addStats(total, snap.Total)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"total": total, "gateways": out})
}

// addStats sums two gateways' totals: counts add up, the response-time
// average is weighted by requests, the ratios are recomputed.
func addStats(a, b metrics.ServiceStatsSnapshot) metrics.ServiceStatsSnapshot {
	n := a.Requests + b.Requests
	out := metrics.ServiceStatsSnapshot{
		Requests:    n,
		CacheHits:   a.CacheHits + b.CacheHits,
		CacheMisses: a.CacheMisses + b.CacheMisses,
		Errors:      a.Errors + b.Errors,
	}
	if n > 0 {
		out.AvgResponseMs = (a.AvgResponseMs*float64(a.Requests) + b.AvgResponseMs*float64(b.Requests)) / float64(n)
		out.ErrorRate = float64(out.Errors) / float64(n)
	}
	if lookups := out.CacheHits + out.CacheMisses; lookups > 0 {
		out.CacheHitRatio = float64(out.CacheHits) / float64(lookups)
	}
	return out
}

// profile answers the latency profile (count, total, avg, min, max,
// p50/p95/p99, lifetime and recent window) per service and cache result.
func (adminAPI) profile(w http.ResponseWriter, _ *http.Request, gws []*Gateway) error {
	out := map[string]any{}
	for _, g := range gws {
		out[displayName(g)] = g.obs.profiler.Snapshot()
	}
	return writeJSON(w, http.StatusOK, map[string]any{"gateways": out})
}

// memory answers the memory monitor's samples, trend and leak warning;
// ?top=N adds the top N allocation sites (rate-limited).
func (adminAPI) memory(w http.ResponseWriter, r *http.Request, gws []*Gateway) error {
	if len(gws) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no gateway is running")}
	}
	// the runtime is one per process: the newest gateway's monitor speaks for all
	g := gws[0]
	for _, o := range gws[1:] {
		if o.seq > g.seq {
			g = o
		}
	}
	out := map[string]any{"monitor": g.memory.Snapshot()}
	if top := r.URL.Query().Get("top"); top != "" {
		n, err := strconv.Atoi(top)
		if err != nil || n <= 0 || n > 1000 {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("top must be an integer in 1..1000")}
		}
		sites, err := g.memory.TopAllocations(n)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
		}
		out["top_allocations"] = sites
	}
	return writeJSON(w, http.StatusOK, out)
}

// health answers each service's targets and their state.
func (adminAPI) health(w http.ResponseWriter, _ *http.Request, gws []*Gateway) error {
	type svcHealth struct {
		Healthy    bool   `json:"healthy"`
		Status     string `json:"status"`
		Targets    any    `json:"targets"`
		Credential any    `json:"credential,omitempty"`
	}
	out := map[string]any{}
	all := true
	for _, g := range gws {
		services := map[string]svcHealth{}
		for _, s := range g.order {
			h := s.Healthy()
			all = all && h
			st := "healthy"
			if !h {
				st = "unhealthy"
			}
			hs := svcHealth{Healthy: h, Targets: s.Targets(), Status: st}
			if c := s.Credential(); c != nil {
				hs.Credential = c
			}
			services[s.Name] = hs
		}
		entry := map[string]any{"services": services}
		if g.cache != nil {
			if r := g.cache.Stats().Redis; r != nil {
				entry["redis"] = r
			}
		}
		out[displayName(g)] = entry
	}
	return writeJSON(w, http.StatusOK, map[string]any{"healthy": all, "gateways": out})
}

// pools answers admission and connection state per service.
func (adminAPI) pools(w http.ResponseWriter, _ *http.Request, gws []*Gateway) error {
	out := map[string]any{}
	for _, g := range gws {
		services := map[string]any{}
		for _, s := range g.order {
			services[s.Name] = s.PoolStats()
		}
		out[displayName(g)] = map[string]any{"services": services}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"gateways": out})
}

// purge removes cached entries: all, ?service=NAME, ?service=NAME&path=/x. A path matches at segment
// boundaries (cache.Cache.Purge): /x removes /x, /x?… and /x/…, never /x2; a path ending in '/' or
// '?' removes everything that starts with it; percent-escapes are compared decoded, so
// path=/caf%C3%A9 removes what a client stored requesting /caf%C3%A9 (or /café). A service no
// selected gateway declares is a 404 (a typo must not look like an empty cache).
//
// The query is parsed strictly: a purge that cannot be read exactly must remove nothing, where
// url.Values would drop a malformed pair (path=/%zz) or an empty value (service=) and so widen it to
// the whole service, or to everything.
func (adminAPI) purge(w http.ResponseWriter, r *http.Request, gws []*Gateway) error {
	pq, err := purgeQuery(r.URL.RawQuery)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	service := pq.service
	if service != "" && !slices.ContainsFunc(gws, func(g *Gateway) bool { return g.services[service] != nil }) {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown service %q", service)}
	}
	removed := 0
	for _, g := range gws {
		if g.cache == nil {
			continue
		}
		if service != "" && g.services[service] == nil {
			continue
		}
		if pq.tags != nil {
			removed += g.cache.PurgeTags(service, pq.tags)
		} else {
			removed += g.cache.Purge(service, pq.path)
		}
	}
	out := map[string]any{"removed": removed, "service": service, "path": pq.path}
	if pq.tags != nil {
		out["tags"] = pq.tags
	}
	return writeJSON(w, http.StatusOK, out)
}

// maxPurgeTags bounds the tags one purge may name.
const maxPurgeTags = 64

// purgeParams is what a purge names: a service or all, and within it a path
// prefix, or tags.
type purgeParams struct {
	service, path string
	tags          []string // non-nil: a purge by tag
}

// purgeQuery reads what a purge names from a raw query: service and path at
// most once each, tag up to maxPurgeTags times, and name (the gateway, read
// by selectGateways); nothing else. A service, when given, is not empty; a
// path is absolute and needs a service; a tag is a valid tag and excludes a
// path. Whatever is wrong is an error, never a wider purge.
func purgeQuery(raw string) (purgeParams, error) {
	var p purgeParams
	q, err := url.ParseQuery(raw)
	if err != nil {
		return p, fmt.Errorf("invalid query: %w", err)
	}
	for k, vs := range q {
		switch {
		case k != "service" && k != "path" && k != "tag" && k != "name":
			// a misspelt path=… or tag=… must not widen the purge
			return p, fmt.Errorf("unknown parameter %q: only service, path, tag and name", k)
		case k == "tag" && len(vs) > maxPurgeTags:
			return p, fmt.Errorf("%d tags: at most %d in one purge", len(vs), maxPurgeTags)
		case k != "tag" && len(vs) > 1:
			return p, fmt.Errorf("%s given %d times", k, len(vs))
		}
	}
	p.service, p.path = q.Get("service"), q.Get("path")
	switch {
	case q.Has("service") && p.service == "":
		return p, fmt.Errorf("empty service: omit it to purge every service")
	case q.Has("path") && !strings.HasPrefix(p.path, "/"):
		return p, fmt.Errorf("path %q must start with '/': omit it to purge the whole service", p.path)
	case q.Has("path") && p.service == "":
		return p, fmt.Errorf("path needs service")
	case q.Has("tag") && q.Has("path"):
		return p, fmt.Errorf("tag and path cannot be combined: a tag purge takes every URL with the tag")
	}
	if q.Has("tag") {
		p.tags = make([]string, 0, len(q["tag"]))
		for _, t := range q["tag"] {
			if !cache.ValidTag(t) {
				return purgeParams{}, fmt.Errorf("invalid tag %q: want 1 to %d printable characters without spaces or commas", t, cache.MaxTagLen)
			}
			if !slices.Contains(p.tags, t) {
				p.tags = append(p.tags, t)
			}
		}
	}
	return p, nil
}

// Interface guard
var _ caddy.AdminRouter = adminAPI{}
