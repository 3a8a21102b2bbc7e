package cache

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/reqbody"
	"go.uber.org/zap"
)

// call carries one GET/HEAD request through the forward path.
type call struct {
	r       *http.Request
	rt      *Route
	service string // rt.Service
	auth    string
	key     string // lookup key (coalescing key)
	cand    *Entry // stored entry that could not be served as is (stale, or request forced), or nil
	cc      directives
	fwd     string              // Cache-Status fwd parameter: miss, vary-miss, stale, request
	client  http.ResponseWriter // the writer Serve was given (Fetch's client); nil for a refresh
	start   time.Time
	puts    uint64 // the local tier's put count before the lookup (localTier.puts)
	lead    *lead  // the flight leader's exchange state, or nil
}

// Serve answers r for the given service from the cache or via fetch. It handles every method: GET and
// HEAD may be served from the cache; other safe methods pass through; unsafe methods go to fetch and,
// on a non-error answer (< 400), invalidate the stored entries for that URL and for a relative
// Location / Content-Location. r.URL.Path/RawQuery are the upstream-relative path; r.Host the client's
// host. It returns the Result for metrics, and fetch's error when nothing was written (unless a stale
// answer could be served instead). A request that waited for a concurrent fetch and saw its context
// end gets an error wrapping the context's error. The request leading such a fetch does not end it by
// leaving (see lead), and an answer whose fetch began before a purge or invalidation covering it is
// returned to its requests but not stored.
func (c *Cache) Serve(w http.ResponseWriter, r *http.Request, rt *Route) (Result, error) {
	service := rt.Service
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions, http.MethodTrace, http.MethodConnect:
		c.bypass.Add(1)
		return ResultBypass, rt.Fetch(w, r, w)
	default:
		return c.serveUnsafe(w, r, rt)
	}
	h := r.Header
	if reqbody.Has(r) {
		// A GET or HEAD with a body ("fat GET") is forwarded with it, and the
		// upstream may answer according to it; the answer is not the URL's, and
		// stored under the URL it would be served to the next plain GET (cache
		// poisoning), while a stored answer would ignore the body. It takes no
		// part in the cache: not served, stored, nor coalesced with others.
		return c.passThrough(w, r, rt, ReasonRequestBody)
	}
	cc := requestDirectives(h)
	// A Range (and If-Range) GET may be answered from a stored 200 (range.go); anything else about
	// it goes upstream untouched.
	ranged := h["Range"] != nil || h["If-Range"] != nil
	switch {
	case c.closed.Load():
		return c.passThrough(w, r, rt, ReasonNone)
	case cc.NoStore:
		return c.passThrough(w, r, rt, ReasonRequestNoStore)
	case ranged && r.Method != http.MethodGet:
		return c.passThrough(w, r, rt, ReasonRange)
	case h["If-Match"] != nil || h["If-Unmodified-Since"] != nil || h["Upgrade"] != nil:
		return c.passThrough(w, r, rt, ReasonPrecondition)
	}
	auth := credential(h)
	puts := c.local.puts()
	kb := getKeyBuf()
	view := getView()
	defer putView(view) // e may be view: used before Serve returns only (cand is a copy, own)
	e, key, varyMiss, from := c.lookup(*kb, r, service, auth, view, c.tiers)
	hit := "hit"
	if e != nil {
		hit = c.hitStatus[from]
	}
	*kb = key
	now := c.now()
	var age time.Duration
	if e != nil {
		age = e.age(now)
		switch {
		case usable(e, &cc, age):
			putKeyBuf(kb)
			c.hits.Add(1)
			c.writeEntry(w, r, rt, e, age, hit)
			return ResultHit, nil
		case staleAllowedByRequest(e, &cc, age):
			putKeyBuf(kb)
			c.stale.Add(1)
			c.writeEntry(w, r, rt, e, age, "hit")
			return ResultStale, nil
		case cc.OnlyIfCached:
			putKeyBuf(kb)
			return c.gatewayTimeout(w, r, rt)
		}
	} else if cc.OnlyIfCached {
		putKeyBuf(kb)
		return c.gatewayTimeout(w, r, rt)
	}
	if ranged {
		putKeyBuf(kb)
		return c.passThrough(w, r, rt, ReasonRange)
	}
	cl := call{r: r, rt: rt, service: service, auth: auth, key: string(key), cand: e.own(), cc: cc, fwd: "miss", client: w, start: now, puts: puts}
	putKeyBuf(kb)
	switch {
	case e != nil && (cc.NoCache || cc.MaxAge >= 0 || cc.InvalidMaxAge || cc.MinFresh >= 0) && !e.noCache && e.fresh(age):
		cl.fwd = "request"
		c.explain(service, "", 0, ReasonRequestNoCache)
	case e != nil:
		cl.fwd = "stale"
		if c.opts.Runner != nil && r.Method == http.MethodGet && !cc.NoCache && cc.MaxAge < 0 && cc.MinFresh < 0 &&
			!e.noStale && e.swr > 0 && e.staleness(age) <= e.swr {
			c.refreshInBackground(cl)
			c.stale.Add(1)
			c.writeEntry(w, r, rt, e, age, "hit; fwd=stale")
			return ResultStale, nil
		}
	case varyMiss:
		cl.fwd = "vary-miss"
	}
	return c.forward(w, cl)
}

// usable reports whether a stored entry answers the request without contacting upstream: fresh, and
// within the request's max-age / min-fresh, and not refused by request no-cache.
func usable(e *Entry, cc *directives, age time.Duration) bool {
	if cc.NoCache || cc.MaxAge == 0 || cc.InvalidMaxAge || !e.fresh(age) {
		return false
	}
	if cc.MaxAge > 0 && age > time.Duration(cc.MaxAge)*time.Second {
		return false
	}
	if cc.MinFresh >= 0 && e.lifetime-age < time.Duration(cc.MinFresh)*time.Second {
		return false
	}
	return true
}

// staleAllowedByRequest reports whether request max-stale lets a stale entry be served (never for
// entries that forbid serving stale).
func staleAllowedByRequest(e *Entry, cc *directives, age time.Duration) bool {
	if e.noStale || cc.NoCache || cc.MaxAge == 0 || (!cc.MaxStaleAny && cc.MaxStale < 0) {
		return false
	}
	if cc.MaxAge > 0 && age > time.Duration(cc.MaxAge)*time.Second {
		return false
	}
	return cc.MaxStaleAny || e.staleness(age) <= time.Duration(cc.MaxStale)*time.Second
}

// canStaleIfError reports whether e may replace an upstream failure at now.
func (c *Cache) canStaleIfError(e *Entry, now time.Time) bool {
	return e != nil && !e.noStale && e.sie > 0 && e.staleness(e.age(now)) <= e.sie
}

// passThrough forwards a request the cache does not take part in; why, when set, is counted and
// says why in Cache-Status.
func (c *Cache) passThrough(w http.ResponseWriter, r *http.Request, rt *Route, why Reason) (Result, error) {
	c.bypass.Add(1)
	cs := c.opts.Name + "; fwd=bypass"
	if why != ReasonNone {
		c.explain(rt.Service, "", 0, why)
		cs += "; detail=" + why.String()
	}
	w.Header()["Cache-Status"] = []string{cs}
	err := rt.Fetch(w, r, w)
	if err != nil {
		delete(w.Header(), "Cache-Status")
	}
	return ResultBypass, err
}

// gatewayTimeout answers only-if-cached requests the cache cannot satisfy (RFC 9111 §5.2.1.7).
func (c *Cache) gatewayTimeout(w http.ResponseWriter, r *http.Request, rt *Route) (Result, error) {
	c.misses.Add(1)
	w.Header()["Cache-Status"] = []string{c.opts.Name + "; detail=only-if-cached"}
	rt.writeError(w, r, http.StatusGatewayTimeout, "not in cache (only-if-cached)")
	return ResultMiss, nil
}

// forward coalesces a GET miss (or revalidation) with identical concurrent ones: the first request
// leads and fetches; the others wait (bounded by their context) and then use the stored answer, or
// fetch on their own when the answer was not storable. When the leader gives its exchange up (its
// client left and nobody could use the answer), the waiters start over and one of them leads.
func (c *Cache) forward(w http.ResponseWriter, cl call) (Result, error) {
	if cl.r.Method != http.MethodGet {
		return c.fetchOnce(w, cl, nil)
	}
	if c.pass.known(cl.key, cl.start) {
		c.explain(cl.service, "", 0, ReasonHitForMiss)
		return c.fetchOnce(w, cl, nil)
	}
	if c.hookJoin != nil {
		c.hookJoin()
	}
	counted := false
	for {
		fl, leader := c.fl.join(cl.key)
		if leader {
			return c.leadFlight(w, cl, fl)
		}
		if !counted {
			counted = true
			c.coalesced.Add(1)
			if c.hookFollower != nil {
				c.hookFollower()
			}
		}
		select {
		case <-fl.done:
		case <-cl.r.Context().Done():
			c.fl.leave(cl.key, fl)
			return ResultMiss, fmt.Errorf("cache: waiting for a concurrent fetch of %q: %w", cl.r.URL.Path, context.Cause(cl.r.Context()))
		}
		if fl.retry {
			continue
		}
		if fl.err != nil {
			if c.canStaleIfError(cl.cand, c.now()) {
				c.stale.Add(1)
				c.writeEntry(w, cl.r, cl.rt, cl.cand, cl.cand.age(c.now()), "fwd=stale; detail=stale-if-error")
				return ResultStale, nil
			}
			c.misses.Add(1)
			return ResultMiss, fl.err
		}
		if fl.stored {
			v := getView()
			if e, age := c.relookup(cl, v); e != nil && (usable(e, &cl.cc, age) || !e.RequestTime.Before(cl.start)) {
				c.hits.Add(1)
				c.writeEntry(w, cl.r, cl.rt, e, age, "fwd=miss; collapsed")
				putView(v)
				return ResultCollapsed, nil
			}
			putView(v)
		}
		return c.fetchOnce(w, cl, nil)
	}
}

// leadFlight makes the exchange others wait on. Its request's context does not end with the client's
// (see lead): the followers would otherwise all go upstream at once the moment the leader's client
// hangs up.
func (c *Cache) leadFlight(w http.ResponseWriter, cl call, fl *flight) (Result, error) {
	// Another leader may have stored the answer between our lookup and join: look again, unless
	// nothing was put in the first tier since (the usual miss).
	if c.local.puts() != cl.puts {
		v := getView()
		if e, age := c.relookup(cl, v); e != nil && !e.sameAs(cl.cand) && usable(e, &cl.cc, age) {
			c.fl.finish(cl.key, fl, true, nil)
			c.hits.Add(1)
			c.writeEntry(w, cl.r, cl.rt, e, age, "hit")
			putView(v)
			return ResultHit, nil
		}
		putView(v)
	}
	l := c.newLead(cl.r, cl.key, fl)
	defer l.end()
	cl.r, cl.lead = l.r, l
	return c.fetchOnce(w, cl, fl)
}

// orphanLimit bounds how long a leader's exchange goes on for its followers after its client left.
const orphanLimit = time.Minute

// lead is the exchange of a flight leader. Its request runs on a context detached from the client's,
// so that the answer the followers wait for still arrives (and is stored) when the leader's client
// hangs up; the exchange stays bounded by Fetch's own timeout and, once the client is gone, by
// orphanLimit. When the client leaves and no follower waits, or the last follower leaves after it,
// or the answer turns out not to be storable (nobody but the client could use it), the exchange ends
// at once, as any exchange whose client is gone: it holds no upstream slot for nobody.
type lead struct {
	r       *http.Request // the leader's request on the detached context
	client  context.Context
	cancel  context.CancelFunc
	useless atomic.Bool // the answer will not be stored
	stop    func() bool // unregisters the client-gone callback

	mu    sync.Mutex
	timer *time.Timer // orphanLimit, armed when the client leaves
}

func (c *Cache) newLead(r *http.Request, key string, fl *flight) *lead {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	l := &lead{r: r.WithContext(ctx), client: r.Context(), cancel: cancel}
	c.fl.setAbort(fl, cancel)
	l.stop = context.AfterFunc(r.Context(), func() {
		if c.fl.leaderLeft(key, fl) || l.useless.Load() {
			cancel() // nobody waits for the answer
			return
		}
		if c.hookOrphan != nil {
			c.hookOrphan()
		}
		c.log.Debug("flight leader's client left; the exchange goes on for its followers",
			zap.String("path", r.URL.Path))
		l.mu.Lock()
		if ctx.Err() == nil {
			l.timer = time.AfterFunc(c.orphanLimit, cancel)
		}
		l.mu.Unlock()
	})
	return l
}

// notNeeded says the answer will not be stored: only the leader's client needs it now.
func (l *lead) notNeeded() {
	if l == nil {
		return
	}
	l.useless.Store(true)
	if l.client.Err() != nil {
		l.cancel()
	}
}

// end releases the exchange's context and timer.
func (l *lead) end() {
	l.stop()
	l.cancel() // before taking mu: the callback arms no timer after this
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
}

// relookup finds the current entry for the call's request again, in the first tier (where the
// exchange it waited for stored it), as view (from getView; the caller puts it back).
func (c *Cache) relookup(cl call, view *Entry) (*Entry, time.Duration) {
	kb := getKeyBuf()
	e, key, _, _ := c.lookup(*kb, cl.r, cl.service, cl.auth, view, c.tiers[:1])
	*kb = key
	putKeyBuf(kb)
	if e == nil {
		return nil, 0
	}
	return e, e.age(c.now())
}

// purgedSince reports whether a removal since the marks mk covers r's URL (any variant, any
// credential) or a tag of its answer's header h: an answer to r fetched from before it would be
// refused. The local tier decides: its purge log sees every removal (the Redis tier applies other
// instances' removals to it), while the Redis tier's mark only tells that something was removed.
func (c *Cache) purgedSince(r *http.Request, service string, h http.Header, mk marks) bool {
	if c.local.mark() == mk[0] {
		return false // the usual case, without building the probe
	}
	q := c.keyQuery(service, r.URL.RawQuery)
	base := appendBaseKey(nil, r.Host, service, pathOf(r), q)
	probe := Entry{Service: service, URL: keyURL(pathOf(r), q), Key: string(base), BaseLen: len(base),
		tags: parseTags(h, c.tagHeaders())}
	return c.local.removedSince(&probe, mk[0])
}

func isServerError(status int) bool {
	return status == 500 || status == 502 || status == 503 || status == 504
}

// newEntry builds the entry for a recorded answer (its key is set by storeResponse).
func (c *Cache) newEntry(cl call, rec *recorder, reqTime, respTime time.Time) *Entry {
	h := storedHeader(rec.snapshot)
	if len(h["Date"]) == 0 {
		h["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}
	body := rec.body
	if cap(body) > len(body) {
		body = append(make([]byte, 0, len(body)), body...) // cost and memory: the exact size
	}
	if len(h["Content-Length"]) == 0 && rec.status != http.StatusNoContent && rec.status != http.StatusNotModified {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	if len(body) == 0 {
		body = nil
	}
	return &Entry{
		Service:      cl.service,
		URL:          c.urlOf(cl.r, cl.service),
		Status:       rec.status,
		Header:       h,
		Body:         body,
		RequestTime:  reqTime,
		ResponseTime: respTime,
		InitialAge:   initialAge(rec.snapshot, reqTime, respTime),
	}
}

// refreshed returns a copy of the stored entry updated by a 304 (RFC 9111 §4.3.4): the 304's fields
// replace the stored ones (except Content-Length and fields never stored) and its age restarts. It
// returns nil when the 304 names a different strong validator than the entry's.
func (c *Cache) refreshed(old *Entry, h304 http.Header, reqTime, respTime time.Time) *Entry {
	if et := h304.Get("Etag"); et != "" && old.etag != "" && !weakEqual(et, old.etag) {
		return nil
	}
	oh := old.header()
	h := make(http.Header, len(oh)+4)
	for k, vs := range oh {
		h[k] = vs
	}
	for k, vs := range storedHeader(h304) {
		if k != "Content-Length" {
			h[k] = vs
		}
	}
	if len(h304["Date"]) == 0 {
		h["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}
	ne := *old
	ne.Header, ne.block, ne.raw, ne.values = h, nil, nil, 0
	ne.RequestTime, ne.ResponseTime = reqTime, respTime
	ne.InitialAge = initialAge(h304, reqTime, respTime)
	ne.Key, ne.BaseLen = "", 0
	return &ne
}

// storeResponse computes e's key from the request (primary key, plus the variant part when the
// response has Vary, in which case a Vary marker goes under the primary key) and stores it in every
// tier, unless a removal covering it came after the marks mk (read before its exchange began): then
// it is stored nowhere and only its own requests get it. The first tier's verdict is the answer's
// (a later tier takes it even if the first one's admission policy refused it); when it is not
// stored, the reason says why.
func (c *Cache) storeResponse(r *http.Request, e *Entry, mk marks) (bool, Reason) {
	vary, star := varyNames(e.Header)
	if star {
		return false, ReasonVaryStar
	}
	var buf []byte
	buf, e.BaseLen = c.appendPrimaryKey(nil, r, e.Service, credential(r.Header))
	var m *Entry
	if len(vary) > 0 {
		m = &Entry{Key: string(buf), BaseLen: e.BaseLen, Service: e.Service, URL: e.URL, Marker: true, Vary: vary}
		m.prepare(&c.opts)
		buf = appendVariantKey(buf, vary, r.Header)
		e.Vary = vary
	}
	e.Key = string(buf)
	e.prepare(&c.opts)
	keep := c.retention(e)
	res := c.tiers[0].put(m, e, keep, mk[0])
	if res != storeOutdated {
		keep -= e.age(c.now()) // later tiers keep it from now on
		for i, t := range c.tiers[1:] {
			if c.closed.Load() {
				break
			}
			t.put(m, e, keep, mk[i+1])
		}
	}
	switch res {
	case storeOutdated:
		return false, ReasonPurged
	case storeRefused:
		return false, ReasonRefused
	}
	return true, ReasonNone
}

func pathOf(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// urlOf is the URL (Entry.URL form) that r's answer is stored and explained under for service.
func (c *Cache) urlOf(r *http.Request, service string) string {
	return keyURL(pathOf(r), c.keyQuery(service, r.URL.RawQuery))
}

// writeEntry sends a stored entry: its header (values shared with the entry, never mutated), Age and
// Cache-Status, then the body once from the stored slice (none for HEAD). A matching If-None-Match /
// If-Modified-Since gets a 304 instead.
func (c *Cache) writeEntry(w http.ResponseWriter, r *http.Request, rt *Route, e *Entry, age time.Duration, status string) {
	h := w.Header()
	notMod := notModified(r, e)
	rv, ranges := rangeIgnore, []byteRange(nil)
	if !notMod && r.Header["Range"] != nil {
		if rv, ranges = selectRange(r, e); rv == rangeUnsatisfiable {
			c.rangeNotSatisfiable(w, r, rt, e, status)
			return
		}
	}
	// vals holds the header's values, then this cache's Cache-Status and the Age: one allocation.
	var vals []string
	var upstreamCS []string
	if e.Header == nil {
		vals = make([]string, e.values+2)
		upstreamCS = copyFields(h, vals, e.raw, notMod)
	} else {
		vals = make([]string, 2)
		for k, vs := range e.Header {
			if !notMod || isNotModifiedField(k) {
				h[k] = vs
			}
		}
		upstreamCS = e.Header["Cache-Status"]
	}
	n := len(vals)
	ageSec := int64(age / time.Second)
	ttl := int64((e.lifetime - age) / time.Second)
	var sb [128]byte
	b := append(sb[:0], c.opts.Name...)
	b = append(b, "; "...)
	b = append(b, status...)
	b = append(b, "; ttl="...)
	b = strconv.AppendInt(b, ttl, 10)
	vals[n-2] = string(b)
	vals[n-1] = strconv.FormatInt(min(ageSec, maxDeltaSeconds), 10)
	h["Age"] = vals[n-1 : n : n]
	if len(upstreamCS) > 0 && e.Header != nil {
		h["Cache-Status"] = append(upstreamCS[:len(upstreamCS):len(upstreamCS)], vals[n-2])
	} else {
		// A view's upstream Cache-Status values sit right before ours in vals (copyFields).
		h["Cache-Status"] = vals[n-2-len(upstreamCS) : n-1 : n-1]
	}
	if notMod {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if rv == rangePartial {
		writePartial(w, e, ranges)
		return
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead && len(e.Body) > 0 {
		_, _ = w.Write(e.Body)
	}
}

// copyFields sets the fields of a block's header section raw into h (only those a 304 repeats when
// notMod), their values in vals, and returns the upstream's Cache-Status values, which encodeBlock
// put last, so they end right before vals' last two slots.
func copyFields(h http.Header, vals []string, raw []byte, notMod bool) (upstreamCS []string) {
	hr := headerReader{r: blockReader{b: raw}}
	i := 0
	for {
		k, n, ok := hr.next()
		if !ok {
			return upstreamCS
		}
		start := i
		for range n {
			vals[i] = hr.value()
			i++
		}
		switch {
		case k == "Cache-Status":
			upstreamCS = vals[start:i:i]
		case !notMod || isNotModifiedField(k):
			h[k] = vals[start:i:i]
		}
	}
}

func isNotModifiedField(k string) bool {
	for _, f := range notModifiedFields {
		if f == k {
			return true
		}
	}
	return false
}

// refreshInBackground revalidates cl's stale entry through the Runner, at most once per key at a
// time; when the pool is full the job is dropped (the stale answer was served anyway).
func (c *Cache) refreshInBackground(cl call) {
	fl, leader := c.fl.join(cl.key)
	if !leader {
		return // a refresh or fetch for this key is already running
	}
	dr, cancel := c.detach(cl.r)
	ok := c.opts.Runner.TrySubmit(func(ctx context.Context) {
		defer cancel()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		bg := cl
		bg.r, bg.client = dr, nil // the client's request has its answer: nothing to account to it
		if _, err := c.fetchOnce(&discardWriter{}, bg, fl); err != nil {
			c.log.Debug("background refresh failed", zap.String("service", cl.service),
				zap.String("path", dr.URL.Path), zap.Error(err))
		}
	})
	if !ok {
		cancel()
		c.fl.finish(cl.key, fl, false, nil)
	}
}

// detach returns a copy of r that outlives the client's request.
func (c *Cache) detach(r *http.Request) (*http.Request, context.CancelFunc) {
	if c.opts.Detach != nil {
		return c.opts.Detach(r)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
	return r.Clone(ctx), cancel
}

// serveUnsafe forwards a request with an unsafe (or unknown) method and, once its answer turns out
// to be a non-error, invalidates what the cache holds for the URL (RFC 9111 §4.4) before the status
// reaches the client.
func (c *Cache) serveUnsafe(w http.ResponseWriter, r *http.Request, rt *Route) (Result, error) {
	c.bypass.Add(1)
	sw := &statusWriter{ResponseWriter: w}
	sw.onStatus = func(status int) {
		if status >= 200 && status < 400 {
			c.invalidate(r, rt.Service, w.Header(), rt.BasePath)
		}
	}
	return ResultBypass, rt.Fetch(sw, r, w)
}

// invalidate removes the entries for r's URL and for same-service Location and Content-Location
// references in the answer's header. Only path-absolute references count (same origin: the upstream
// itself); they are upstream paths, so basePath (the service's upstream base path) is stripped, and a
// reference outside it names nothing this service stores.
func (c *Cache) invalidate(r *http.Request, service string, h http.Header, basePath string) {
	q := c.keyQuery(service, r.URL.RawQuery)
	refs := []baseRef{{url: keyURL(pathOf(r), q), base: appendBaseKey(nil, r.Host, service, pathOf(r), q)}}
	for _, f := range []string{"Location", "Content-Location"} {
		v := h.Get(f)
		if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") {
			continue
		}
		u, err := url.Parse(v)
		if err != nil {
			continue
		}
		p := u.RawPath
		if p == "" {
			p = u.Path
		}
		if basePath != "" {
			rest, ok := strings.CutPrefix(p, basePath)
			if !ok || (rest != "" && rest[0] != '/') {
				continue
			}
			if rest == "" {
				rest = "/"
			}
			p = rest
		}
		q := c.keyQuery(service, u.RawQuery)
		ref := baseRef{url: keyURL(p, q), base: appendBaseKey(nil, r.Host, service, p, q)}
		refs = append(refs, ref)
	}
	c.remove(r.Context(), purgeEvent{service: service, refs: refs})
}
