package cache

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStoreRules sends the same GET twice (with the clock advanced by `after` in between) and checks
// how often the upstream was called and what the cache said.
func TestStoreRules(t *testing.T) {
	lm := "Mon, 01 Dec 2025 00:00:00 GMT"
	tests := []struct {
		name       string
		opts       Options
		status     int
		hdr        []string
		reqHdr     []string
		after      time.Duration
		wantCalls  int64
		wantResult Result
		wantStatus string // prefix of the second answer's Cache-Status
	}{
		{"max-age reused", Options{}, 200, []string{"Cache-Control", "max-age=60"}, nil, 0, 1, ResultHit, "caddy-gateway; hit; ttl=60"},
		{"s-maxage over max-age", Options{}, 200, []string{"Cache-Control", "max-age=1, s-maxage=100"}, nil, 50 * time.Second, 1, ResultHit, "caddy-gateway; hit; ttl=50"},
		{"expires minus date", Options{}, 200, []string{"Expires", "Fri, 02 Jan 2026 03:05:05 GMT"}, nil, 30 * time.Second, 1, ResultHit, "caddy-gateway; hit; ttl=30"},
		// fresh for centuries: past the year 2262, which UnixNano cannot hold, and with a
		// validator a retention of twice that, which a time.Duration cannot
		{"expires in 2286", Options{}, 200, []string{"Expires", "Sun, 21 Nov 2286 04:46:39 GMT"}, nil, time.Hour, 1, ResultHit, "caddy-gateway; hit; ttl=8"},
		{"expires in 2286, validator", Options{}, 200, []string{"Expires", "Sun, 21 Nov 2286 04:46:39 GMT", "Etag", `"x"`}, nil, time.Hour, 1, ResultHit, "caddy-gateway; hit; ttl=8"},
		{"invalid expires is stale", Options{}, 200, []string{"Expires", "0", "Etag", `"x"`}, nil, 0, 2, ResultRevalidated, "caddy-gateway; fwd=stale"},
		{"no-store", Options{}, 200, []string{"Cache-Control", "no-store, max-age=60"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=no-store"},
		{"private", Options{}, 200, []string{"Cache-Control", "private, max-age=60"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=private"},
		{"set-cookie", Options{}, 200, []string{"Cache-Control", "public, max-age=60", "Set-Cookie", "a=b"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=set-cookie"},
		{"vary star", Options{}, 200, []string{"Cache-Control", "max-age=60", "Vary", "*"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=vary-star"},
		{"206 never", Options{}, 206, []string{"Cache-Control", "max-age=60"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=status"},
		{"404 heuristic with max-age", Options{}, 404, []string{"Cache-Control", "max-age=60"}, nil, 0, 1, ResultHit, "caddy-gateway; hit"},
		{"500 with explicit freshness", Options{}, 500, []string{"Cache-Control", "max-age=60"}, nil, 0, 1, ResultHit, "caddy-gateway; hit"},
		{"500 without freshness", Options{DefaultTTL: time.Minute}, 500, nil, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=status"},
		{"no freshness no validator", Options{}, 200, nil, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=no-freshness"},
		{"no freshness with validator revalidated", Options{}, 200, []string{"Last-Modified", lm}, nil, 0, 2, ResultRevalidated, "caddy-gateway; fwd=stale; fwd-status=304"},
		{"default ttl applies", Options{DefaultTTL: time.Minute}, 200, nil, nil, 30 * time.Second, 1, ResultHit, "caddy-gateway; hit; ttl=30"},
		{"default ttl not with must-revalidate", Options{DefaultTTL: time.Minute}, 200, []string{"Cache-Control", "must-revalidate"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=no-freshness"},
		{"no-cache revalidated", Options{}, 200, []string{"Cache-Control", "no-cache, max-age=60", "Etag", `"v1"`}, nil, 0, 2, ResultRevalidated, "caddy-gateway; fwd=stale; fwd-status=304"},
		{"must-understand overrides no-store", Options{}, 200, []string{"Cache-Control", "must-understand, no-store, max-age=60"}, nil, 0, 1, ResultHit, "caddy-gateway; hit"},
		{"authorization not stored by default", Options{}, 200, []string{"Cache-Control", "max-age=60"}, []string{"Authorization", "Bearer a"}, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=authorization"},
		// the first line empty: still a request with the client's credential
		{"authorization on a second line not stored by default", Options{}, 200, []string{"Cache-Control", "max-age=60"}, []string{"Authorization", "", "Authorization", "Bearer a"}, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=authorization"},
		{"authorization with public", Options{}, 200, []string{"Cache-Control", "public, max-age=60"}, []string{"Authorization", "Bearer a"}, 0, 1, ResultHit, "caddy-gateway; hit"},
		{"authorization with s-maxage", Options{}, 200, []string{"Cache-Control", "s-maxage=60"}, []string{"Authorization", "Bearer a"}, 0, 1, ResultHit, "caddy-gateway; hit"},
		{"stale after max-age", Options{}, 200, []string{"Cache-Control", "max-age=10"}, nil, 11 * time.Second, 2, ResultMiss, "caddy-gateway; fwd=stale; stored"},
		{"upstream age counts", Options{}, 200, []string{"Cache-Control", "max-age=10", "Age", "8"}, nil, 3 * time.Second, 2, ResultMiss, "caddy-gateway; fwd=stale"},
		{"cdn-cache-control overrides no-store", Options{}, 200, []string{"Cache-Control", "no-store", "Cdn-Cache-Control", "max-age=60"}, nil, 0, 1, ResultHit, "caddy-gateway; hit; ttl=60"},
		{"cdn-cache-control private", Options{}, 200, []string{"Cache-Control", "max-age=60", "Cdn-Cache-Control", "private"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=private"},
		{"invalid cdn-cache-control ignored", Options{}, 200, []string{"Cache-Control", "no-store", "Cdn-Cache-Control", "max-age=60, &&&"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=no-store"},
		{"too large", Options{MaxItemSize: 4}, 200, []string{"Cache-Control", "max-age=60"}, nil, 0, 2, ResultMiss, "caddy-gateway; fwd=miss; detail=too-large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("If-Modified-Since") == lm || r.Header.Get("If-None-Match") != "" {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				respond(tt.status, "hello", tt.hdr...)(w, r)
			})
			c := newTestCache(t, clk, tt.opts)
			w1, _, err := do(t, c, o.fetch(), "GET", "/x", tt.reqHdr...)
			if err != nil || w1.Code != tt.status || w1.Body.String() != "hello" {
				t.Fatalf("first: %d %q %v", w1.Code, w1.Body.String(), err)
			}
			clk.Advance(tt.after)
			w2, res, err := do(t, c, o.fetch(), "GET", "/x", tt.reqHdr...)
			if err != nil {
				t.Fatal(err)
			}
			if got := o.calls.Load(); got != tt.wantCalls {
				t.Errorf("upstream calls = %d, want %d", got, tt.wantCalls)
			}
			if res != tt.wantResult {
				t.Errorf("result = %v, want %v", res, tt.wantResult)
			}
			if cs := w2.Header().Get("Cache-Status"); !strings.HasPrefix(cs, tt.wantStatus) {
				t.Errorf("Cache-Status = %q, want prefix %q", cs, tt.wantStatus)
			}
			if w2.Code != tt.status || w2.Body.String() != "hello" {
				t.Errorf("second: %d %q", w2.Code, w2.Body.String())
			}
		})
	}
}

// TestAgeHeader checks Age on hits follows RFC 9111 §4.2.3: upstream Age plus resident time.
func TestAgeHeader(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, respond(200, "x", "Cache-Control", "max-age=100", "Age", "10"))
	c := newTestCache(t, clk, Options{})
	do(t, c, o.fetch(), "GET", "/a")
	clk.Advance(25 * time.Second)
	w, res, _ := do(t, c, o.fetch(), "GET", "/a")
	if res != ResultHit || w.Header().Get("Age") != "35" {
		t.Fatalf("result %v Age %q, want hit 35", res, w.Header().Get("Age"))
	}
	if got := w.Header().Get("Cache-Status"); got != "caddy-gateway; hit; ttl=65" {
		t.Fatalf("Cache-Status %q", got)
	}
}

// TestAuthorizationIsolation: an authorized answer is only ever served to the same credential.
func TestAuthorizationIsolation(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		_, _ = w.Write([]byte("for " + r.Header.Get("Authorization")))
	})
	c := newTestCache(t, clk, Options{})
	steps := []struct {
		auth      string
		wantBody  string
		wantCalls int64
	}{
		{"Bearer alice", "for Bearer alice", 1},
		{"Bearer alice", "for Bearer alice", 1},
		{"Bearer bob", "for Bearer bob", 2},
		{"", "for ", 3},
		{"Bearer bob", "for Bearer bob", 3},
		{"", "for ", 3},
	}
	for i, s := range steps {
		var hdr []string
		if s.auth != "" {
			hdr = []string{"Authorization", s.auth}
		}
		w, _, _ := do(t, c, o.fetch(), "GET", "/me", hdr...)
		if w.Body.String() != s.wantBody || o.calls.Load() != s.wantCalls {
			t.Fatalf("step %d: body %q calls %d, want %q %d", i, w.Body.String(), o.calls.Load(), s.wantBody, s.wantCalls)
		}
	}
}

// TestAuthorizationIsolationEveryLine: a request may carry several Authorization lines, all of which
// are forwarded to a service that takes the client's own credential; each of them selects the answer.
// Keyed by the first line alone, "alice" got the answer stored for "alice" plus "mallory", and an
// anonymous request the one stored for an empty line plus "alice".
func TestAuthorizationIsolationEveryLine(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		_, _ = w.Write([]byte("for " + strings.Join(r.Header.Values("Authorization"), "+")))
	})
	c := newTestCache(t, clk, Options{})
	steps := []struct {
		lines     []string
		wantBody  string
		wantCalls int64
	}{
		{[]string{"alice", "mallory"}, "for alice+mallory", 1},
		{[]string{"alice"}, "for alice", 2},
		{[]string{"alice", "mallory"}, "for alice+mallory", 2},
		{[]string{"alice", "bob"}, "for alice+bob", 3},
		{[]string{"mallory", "alice"}, "for mallory+alice", 4},
		{[]string{"", "alice"}, "for +alice", 5},
		{nil, "for ", 6},
		{[]string{""}, "for ", 6}, // one empty line: no credential, as before
		{[]string{"", "alice"}, "for +alice", 6},
	}
	for i, s := range steps {
		var hdr []string
		for _, v := range s.lines {
			hdr = append(hdr, "Authorization", v)
		}
		w, _, err := do(t, c, o.fetch(), "GET", "/me", hdr...)
		if err != nil {
			t.Fatalf("step %d (%q): %v", i, s.lines, err)
		}
		if w.Body.String() != s.wantBody || o.calls.Load() != s.wantCalls {
			t.Fatalf("step %d (%q): body %q calls %d, want %q %d", i, s.lines, w.Body.String(), o.calls.Load(), s.wantBody, s.wantCalls)
		}
	}
}

// TestHopByHopNotStored: connection-specific fields never reach a later client from the store.
func TestHopByHopNotStored(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, respond(200, "x", "Cache-Control", "max-age=60", "Connection", "X-Conn", "X-Conn", "1", "Keep-Alive", "timeout=5", "X-Keep", "y"))
	c := newTestCache(t, clk, Options{})
	do(t, c, o.fetch(), "GET", "/h")
	w, res, _ := do(t, c, o.fetch(), "GET", "/h")
	if res != ResultHit {
		t.Fatalf("result %v", res)
	}
	for _, k := range []string{"Connection", "X-Conn", "Keep-Alive"} {
		if _, ok := w.Header()[k]; ok {
			t.Errorf("%s served from cache", k)
		}
	}
	if w.Header().Get("X-Keep") != "y" {
		t.Errorf("X-Keep lost")
	}
}

// TestHeadFromGet: HEAD is answered from the stored GET, without a body.
func TestHeadFromGet(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, respond(200, "hello", "Cache-Control", "max-age=60"))
	c := newTestCache(t, clk, Options{})
	do(t, c, o.fetch(), "GET", "/h")
	w, res, _ := do(t, c, o.fetch(), "HEAD", "/h")
	if res != ResultHit || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "5" || o.calls.Load() != 1 {
		t.Fatalf("HEAD: %v body %q CL %q calls %d", res, w.Body.String(), w.Header().Get("Content-Length"), o.calls.Load())
	}
}

// TestDateCenturiesAgo: an answer whose Date is centuries old is stale at once (its age is capped
// at 2^31 s, as an Age is), and its age never wraps around to a negative, fresh one as it grows.
func TestDateCenturiesAgo(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, nil, respond(200, "hello", "Date", "Mon, 01 Jan 1700 00:00:00 GMT", "Cache-Control", "max-age=60"))
	c := newTestCache(t, clk, Options{})
	for i := range 2 {
		w, res, err := do(t, c, o.fetch(), "GET", "/x")
		if err != nil || res != ResultMiss || strings.HasPrefix(w.Header().Get("Age"), "-") {
			t.Fatalf("request %d: %v, Age %q, Cache-Status %q, %v; want a miss", i+1, res, w.Header().Get("Age"), w.Header().Get("Cache-Status"), err)
		}
		clk.Advance(time.Second)
	}
	if n := o.calls.Load(); n != 2 {
		t.Fatalf("upstream calls %d, want 2", n)
	}
}

// TestRetentionSaturates: a lifetime of centuries with a validator (kept for twice its lifetime)
// is retained for the longest time a Duration holds, not for the second an overflow would leave.
func TestRetentionSaturates(t *testing.T) {
	c := newTestCache(t, nil, Options{})
	e := &Entry{lifetime: 260 * 365 * 24 * time.Hour, etag: `"x"`}
	if got := c.retention(e); got != math.MaxInt64 {
		t.Fatalf("retention %v, want %v", got, time.Duration(math.MaxInt64))
	}
	e.etag = ""
	if got := c.retention(e); got != e.lifetime {
		t.Fatalf("retention %v without a validator, want the lifetime %v", got, e.lifetime)
	}
}
