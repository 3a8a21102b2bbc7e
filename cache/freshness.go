package cache

import (
	"math"
	"net/http"
	"strings"
	"time"
)

// heuristicStatus lists the status codes RFC 9110 §15.1 calls heuristically cacheable: they may be
// stored without explicit freshness (to be revalidated, or reused for DefaultTTL when configured).
var heuristicStatus = map[int]bool{
	200: true, 203: true, 204: true, 300: true, 301: true, 308: true,
	404: true, 405: true, 410: true, 414: true, 501: true,
}

// understoodStatus reports whether the cache knows the semantics of a final status code well enough to
// store it when it carries explicit freshness (and to honour must-understand). 206 is excluded: the
// cache has no range support; 304 is a validation answer, never stored as itself.
func understoodStatus(code int) bool {
	switch code {
	case 200, 201, 202, 203, 204, 300, 301, 302, 303, 307, 308,
		400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414, 415, 416, 421, 422, 426, 429, 451,
		500, 501, 502, 503, 504, 505:
		return true
	}
	return false
}

// hopByHop lists the fields that describe one connection, not the response (RFC 9110 §7.6.1); they
// are never stored.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Proxy-Authenticate", "Proxy-Authorization",
}

// storedHeader returns a copy of h fit for storage: no hop-by-hop fields (including those named by
// Connection), no Age (the cache computes its own) and no Set-Cookie. The value slices are h's,
// clipped (len == cap) so that a later append by a handler sharing them reallocates instead of
// writing past them; the answer is complete when it is stored, and nothing rewrites its values in
// place afterwards.
func storedHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		out[k] = vs[:len(vs):len(vs)]
	}
	for _, c := range h["Connection"] {
		for _, f := range strings.Split(c, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delete(out, http.CanonicalHeaderKey(f))
			}
		}
	}
	for _, k := range hopByHop {
		delete(out, k)
	}
	delete(out, "Age")
	delete(out, "Set-Cookie")
	return out
}

// parseAge reads the Age field as RFC 9111 §5.1 asks: the first line's first member, ignored when it is
// not a non-negative integer.
func parseAge(h http.Header) time.Duration {
	vs := h["Age"]
	if len(vs) == 0 {
		return 0
	}
	v, _, _ := strings.Cut(vs[0], ",")
	n, ok := parseDeltaSeconds(strings.TrimSpace(v))
	if !ok {
		return 0
	}
	return time.Duration(n) * time.Second
}

// initialAge computes the corrected initial age (RFC 9111 §4.2.3): the larger of the apparent age
// (response time minus Date) and the upstream Age plus the response delay. It is at most 2^31
// seconds, as an Age is (§1.2.2): a Date centuries ago must not leave an age that wraps around to a
// negative one as the entry grows older.
func initialAge(h http.Header, requestTime, responseTime time.Time) time.Duration {
	apparent := time.Duration(0)
	if d, ok := parseDate(h.Get("Date")); ok {
		apparent = max(0, responseTime.Sub(d))
	}
	corrected := parseAge(h) + max(0, responseTime.Sub(requestTime))
	return min(max(apparent, corrected), maxDeltaSeconds*time.Second)
}

// prepare derives the hot-path fields of e from its header and the cache options: parsed
// Cache-Control, freshness lifetime, validators, stale windows and tags (its cost is the local
// tier's: localTier.put).
func (e *Entry) prepare(o *Options) {
	if e.Marker {
		return
	}
	h := e.Header
	cc := responseDirectives(h)
	e.noCache = cc.NoCache
	e.lifetime, _ = freshnessLifetime(h, cc, e.ResponseTime, o.DefaultTTL)
	e.etag = h.Get("Etag")
	if lm := h.Get("Last-Modified"); lm != "" {
		e.lastModified, _ = parseDate(lm)
	}
	e.noStale = cc.MustRevalidate || cc.ProxyRevalidate || cc.SMaxAge >= 0 || cc.InvalidSMaxAge || cc.NoCache
	e.swr = o.StaleWhileRevalidate
	if cc.StaleWhileRevalidate >= 0 {
		e.swr = max(e.swr, time.Duration(cc.StaleWhileRevalidate)*time.Second)
	}
	e.sie = o.StaleIfError
	if cc.StaleIfError >= 0 {
		e.sie = max(e.sie, time.Duration(cc.StaleIfError)*time.Second)
	}
	fields := o.TagHeaders
	if fields == nil {
		fields = DefaultTagHeaders
	}
	e.tags = parseTags(h, fields) // as Cache.tagHeaders
}

// freshnessLifetime returns the freshness lifetime (RFC 9111 §4.2.1) for a shared cache: s-maxage,
// then max-age, then Expires minus Date, then defaultTTL for a response with no freshness information
// that does not ask to be revalidated. An invalid value of the winning source means "already stale".
// explicit is false when the response carries no freshness information (DefaultTTL or nothing).
func freshnessLifetime(h http.Header, cc directives, responseTime time.Time, defaultTTL time.Duration) (lifetime time.Duration, explicit bool) {
	switch {
	case cc.SMaxAge >= 0:
		return time.Duration(cc.SMaxAge) * time.Second, true
	case cc.InvalidSMaxAge:
		return 0, true
	case cc.MaxAge >= 0:
		return time.Duration(cc.MaxAge) * time.Second, true
	case cc.InvalidMaxAge:
		return 0, true
	}
	if exp, ok := h["Expires"]; ok && !cc.Targeted {
		if len(exp) != 1 {
			return 0, true
		}
		t, ok := parseHTTPDate(exp[0])
		if !ok {
			return 0, true
		}
		date := responseTime
		if d, ok := parseDate(h.Get("Date")); ok {
			date = d
		}
		return max(0, t.Sub(date)), true
	}
	if defaultTTL > 0 && !cc.NoCache && !cc.MustRevalidate && !cc.ProxyRevalidate {
		return defaultTTL, false
	}
	return 0, false
}

// httpDateLayouts are the three date formats of RFC 9110 §5.6.7.
var httpDateLayouts = [...]string{http.TimeFormat, time.RFC850, time.ANSIC}

// parseHTTPDate parses an HTTP-date strictly: the text must be exactly what its format produces, up to
// letter case (time.Parse alone accepts one-digit hours and other deviations the cache-tests suite
// rightly treats as invalid, which must count as "already expired").
func parseHTTPDate(s string) (time.Time, bool) {
	u := strings.ToUpper(s)
	for _, layout := range httpDateLayouts {
		if t, err := time.Parse(layout, u); err == nil && strings.EqualFold(t.Format(layout), s) {
			return t, true
		}
	}
	return time.Time{}, false
}

// hasValidator reports whether the entry can be revalidated with a conditional request.
func (e *Entry) hasValidator() bool { return e.etag != "" || !e.lastModified.IsZero() }

// addSat adds two non-negative durations, saturating at the largest Duration (a lifetime of centuries,
// doubled, must not wrap around to a negative retention).
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// age is the entry's current age at now (RFC 9111 §4.2.3).
func (e *Entry) age(now time.Time) time.Duration {
	return addSat(e.InitialAge, max(0, now.Sub(e.ResponseTime)))
}

// fresh reports whether the entry may be served without contacting upstream at the given age, as far
// as the response is concerned (no-cache responses never are).
func (e *Entry) fresh(age time.Duration) bool {
	return !e.noCache && e.lifetime > age
}

// staleness is how long the entry has been stale at the given age (0 while fresh).
func (e *Entry) staleness(age time.Duration) time.Duration { return max(0, age-e.lifetime) }

// storeDecision is the verdict on whether an upstream answer may be stored, with the reason when not
// (its name is the Cache-Status detail).
type storeDecision struct {
	ok     bool
	reason Reason
}

// decideStore applies the shared-cache storage rules (RFC 9111 §3, stricter where DESIGN.md says so)
// to an upstream answer to r.
func (c *Cache) decideStore(r *http.Request, status int, h http.Header) storeDecision {
	if r.Method != http.MethodGet {
		return storeDecision{reason: ReasonMethod}
	}
	cc := responseDirectives(h)
	switch {
	case status == http.StatusPartialContent || status < 200 || status == http.StatusNotModified:
		return storeDecision{reason: ReasonStatus}
	case cc.MustUnderstand && !understoodStatus(status):
		return storeDecision{reason: ReasonMustUnderstand}
	case cc.NoStore && !(cc.MustUnderstand && understoodStatus(status)):
		return storeDecision{reason: ReasonNoStore}
	case cc.Private:
		return storeDecision{reason: ReasonPrivate}
	case len(h["Set-Cookie"]) > 0:
		return storeDecision{reason: ReasonSetCookie}
	case len(h["Trailer"]) > 0:
		return storeDecision{reason: ReasonTrailer}
	case credential(r.Header) != "" && !cc.Public && cc.SMaxAge < 0 && !cc.MustRevalidate:
		return storeDecision{reason: ReasonAuthorization}
	}
	for _, v := range h["Vary"] {
		if containsToken(v, "*") {
			return storeDecision{reason: ReasonVaryStar}
		}
	}
	lifetime, explicit := freshnessLifetime(h, cc, c.now(), c.opts.DefaultTTL)
	if !explicit && !cc.Public && !heuristicStatus[status] {
		return storeDecision{reason: ReasonStatus}
	}
	// Any other final status with explicit freshness may be stored (RFC 9111 §3: "understood" is
	// only required for 206, 304 and must-understand).
	// An answer that can never be reused without revalidation, and cannot be revalidated, is useless.
	reusable := lifetime > 0 && !cc.NoCache
	if !reusable && h.Get("Etag") == "" && h.Get("Last-Modified") == "" {
		return storeDecision{reason: ReasonNoFreshness}
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, ok := parseDeltaSeconds(cl); !ok || n > c.opts.MaxItemSize {
			return storeDecision{reason: ReasonTooLarge}
		}
	}
	return storeDecision{ok: true}
}
