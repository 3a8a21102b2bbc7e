package cache

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStaleWhileRevalidate: a stale entry inside the window is served at once and refreshed through
// the Runner, once per key; a full Runner just means stale is served.
func TestStaleWhileRevalidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
		cc   string
	}{
		{"config window", Options{StaleWhileRevalidate: time.Minute}, "max-age=10"},
		{"response directive", Options{}, "max-age=10, stale-while-revalidate=60"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			var version atomic.Int64
			o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", tt.cc)
				_, _ = w.Write([]byte(strings.Repeat("v", int(version.Add(1)))))
			})
			run := &manualRunner{}
			tt.opts.Runner = run
			c := newTestCache(t, clk, tt.opts)
			do(t, c, o.fetch(), "GET", "/s")
			clk.Advance(20 * time.Second)
			for range 3 { // three stale requests, one refresh
				w, res, _ := do(t, c, o.fetch(), "GET", "/s")
				if res != ResultStale || w.Body.String() != "v" || !strings.HasPrefix(w.Header().Get("Cache-Status"), "caddy-gateway; hit; fwd=stale") {
					t.Fatalf("stale: %v %q %q", res, w.Body.String(), w.Header().Get("Cache-Status"))
				}
			}
			if n := run.runAll(); n != 1 || o.calls.Load() != 2 {
				t.Fatalf("jobs %d calls %d", n, o.calls.Load())
			}
			w, res, _ := do(t, c, o.fetch(), "GET", "/s")
			if res != ResultHit || w.Body.String() != "vv" {
				t.Fatalf("after refresh: %v %q", res, w.Body.String())
			}
			clk.Advance(20 * time.Second)
			run.full = true
			w, res, _ = do(t, c, o.fetch(), "GET", "/s")
			if res != ResultStale || w.Body.String() != "vv" || o.calls.Load() != 2 {
				t.Fatalf("full runner: %v %q calls %d", res, w.Body.String(), o.calls.Load())
			}
			clk.Advance(2 * time.Minute) // past the window: synchronous fetch
			run.full = false
			w, res, _ = do(t, c, o.fetch(), "GET", "/s")
			if res != ResultMiss || w.Body.String() != "vvv" {
				t.Fatalf("past window: %v %q", res, w.Body.String())
			}
		})
	}
	t.Run("nil runner revalidates synchronously", func(t *testing.T) {
		clk := newClock()
		o := newOrigin(t, clk, respond(200, "x", "Cache-Control", "max-age=10, stale-while-revalidate=60"))
		c := newTestCache(t, clk, Options{})
		do(t, c, o.fetch(), "GET", "/s")
		clk.Advance(20 * time.Second)
		if _, res, _ := do(t, c, o.fetch(), "GET", "/s"); res != ResultMiss || o.calls.Load() != 2 {
			t.Fatalf("%v calls %d", res, o.calls.Load())
		}
	})
}

// TestStaleIfError: a stale entry replaces an upstream failure (no answer, or 500/502/503/504, which
// is held back) inside the window, unless the response forbids serving stale.
func TestStaleIfError(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		cc       string
		fail     func(o *origin) // how the upstream fails after the first answer
		wantCode int
		wantRes  Result
		wantCS   string
		wantErr  bool
	}{
		{"503 held back", Options{StaleIfError: time.Minute}, "max-age=10",
			func(o *origin) { o.set(respond(503, "down", "X-Err", "1")) }, 200, ResultStale, "caddy-gateway; fwd=stale; fwd-status=503; detail=stale-if-error", false},
		{"directive window", Options{}, "max-age=10, stale-if-error=60",
			func(o *origin) { o.set(respond(502, "down")) }, 200, ResultStale, "caddy-gateway; fwd=stale; fwd-status=502", false},
		{"no answer", Options{StaleIfError: time.Minute}, "max-age=10",
			func(o *origin) { o.srv.Close() }, 200, ResultStale, "caddy-gateway; fwd=stale; detail=stale-if-error", false},
		{"404 is not an error", Options{StaleIfError: time.Minute}, "max-age=10",
			func(o *origin) { o.set(respond(404, "gone")) }, 404, ResultMiss, "caddy-gateway; fwd=stale", false},
		{"must-revalidate forbids", Options{StaleIfError: time.Minute}, "max-age=10, must-revalidate",
			func(o *origin) { o.set(respond(503, "down")) }, 503, ResultMiss, "caddy-gateway; fwd=stale", false},
		{"s-maxage forbids", Options{StaleIfError: time.Minute}, "s-maxage=10",
			func(o *origin) { o.srv.Close() }, 0, ResultMiss, "", true},
		{"outside window", Options{StaleIfError: 5 * time.Second}, "max-age=10",
			func(o *origin) { o.set(respond(500, "down")) }, 500, ResultMiss, "caddy-gateway; fwd=stale", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t, clk, respond(200, "good", "Cache-Control", tt.cc))
			c := newTestCache(t, clk, tt.opts)
			do(t, c, o.fetch(), "GET", "/e")
			clk.Advance(20 * time.Second)
			tt.fail(o)
			w, res, err := do(t, c, o.fetch(), "GET", "/e")
			if (err != nil) != tt.wantErr || res != tt.wantRes || !strings.HasPrefix(w.Header().Get("Cache-Status"), tt.wantCS) {
				t.Fatalf("err %v result %v Cache-Status %q", err, res, w.Header().Get("Cache-Status"))
			}
			if tt.wantErr {
				if len(w.Header()) != 0 || w.Body.Len() != 0 {
					t.Fatalf("wrote on error: %v %q", w.Header(), w.Body.String())
				}
				return
			}
			if w.Code != tt.wantCode {
				t.Fatalf("code %d", w.Code)
			}
			if tt.wantRes == ResultStale && (w.Body.String() != "good" || w.Header().Get("X-Err") != "") {
				t.Fatalf("stale answer: %q %v", w.Body.String(), w.Header())
			}
		})
	}
}
