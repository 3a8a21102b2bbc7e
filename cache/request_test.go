package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestVary checks that Vary splits entries by the named request headers.
func TestVary(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language, X-Mode")
		_, _ = w.Write([]byte(r.Header.Get("Accept-Language") + "|" + r.Header.Get("X-Mode")))
	})
	c := newTestCache(t, clk, Options{})
	steps := []struct {
		hdr       []string
		wantCalls int64
		wantCS    string
	}{
		{[]string{"Accept-Language", "en, fr"}, 1, "caddy-gateway; fwd=miss; stored"},
		{[]string{"Accept-Language", "en, fr"}, 1, "caddy-gateway; hit"},
		{[]string{"Accept-Language", "FR,en"}, 1, "caddy-gateway; hit"}, // normalised: case, order, spaces
		{[]string{"Accept-Language", "de"}, 2, "caddy-gateway; fwd=vary-miss; stored"},
		{[]string{"Accept-Language", "de"}, 2, "caddy-gateway; hit"},
		{[]string{"Accept-Language", "en, fr"}, 2, "caddy-gateway; hit"}, // both variants kept
		{[]string{"Accept-Language", "en, fr", "X-Mode", ""}, 3, "caddy-gateway; fwd=vary-miss"},
		{nil, 4, "caddy-gateway; fwd=vary-miss"}, // absent differs from present
		{[]string{"Accept-Language", "de", "X-Other", "1"}, 4, "caddy-gateway; hit"},
	}
	for i, s := range steps {
		w, _, _ := do(t, c, o.fetch(), "GET", "/v", s.hdr...)
		if o.calls.Load() != s.wantCalls || !strings.HasPrefix(w.Header().Get("Cache-Status"), s.wantCS) {
			t.Fatalf("step %d: calls %d (want %d) Cache-Status %q (want %q)", i, o.calls.Load(), s.wantCalls, w.Header().Get("Cache-Status"), s.wantCS)
		}
	}
}

// TestRequestDirectives checks the request Cache-Control (and Pragma) directives against a stored
// entry that is 30 s old with max-age=60 and an ETag.
func TestRequestDirectives(t *testing.T) {
	tests := []struct {
		name      string
		hdr       []string
		advance   time.Duration
		wantCalls int64 // including the one that stored the entry
		wantCode  int
		wantRes   Result
		wantCS    string
	}{
		{"plain hit", nil, 30 * time.Second, 1, 200, ResultHit, "caddy-gateway; hit; ttl=30"},
		{"no-store bypasses", []string{"Cache-Control", "no-store"}, 30 * time.Second, 2, 200, ResultBypass, "caddy-gateway; fwd=bypass"},
		{"no-cache revalidates", []string{"Cache-Control", "no-cache"}, 30 * time.Second, 2, 200, ResultRevalidated, "caddy-gateway; fwd=request; fwd-status=304"},
		{"max-age=0 revalidates", []string{"Cache-Control", "max-age=0"}, 30 * time.Second, 2, 200, ResultRevalidated, "caddy-gateway; fwd=request"},
		{"pragma no-cache", []string{"Pragma", "no-cache"}, 30 * time.Second, 2, 200, ResultRevalidated, "caddy-gateway; fwd=request"},
		{"pragma ignored with cache-control", []string{"Pragma", "no-cache", "Cache-Control", "max-age=100"}, 30 * time.Second, 1, 200, ResultHit, "caddy-gateway; hit"},
		{"max-age too old", []string{"Cache-Control", "max-age=10"}, 30 * time.Second, 2, 200, ResultRevalidated, "caddy-gateway; fwd=request"},
		{"max-age young enough", []string{"Cache-Control", "max-age=40"}, 30 * time.Second, 1, 200, ResultHit, "caddy-gateway; hit"},
		{"min-fresh unmet", []string{"Cache-Control", "min-fresh=40"}, 30 * time.Second, 2, 200, ResultRevalidated, "caddy-gateway; fwd=request"},
		{"min-fresh met", []string{"Cache-Control", "min-fresh=20"}, 30 * time.Second, 1, 200, ResultHit, "caddy-gateway; hit"},
		{"max-stale serves stale", []string{"Cache-Control", "max-stale=20"}, 70 * time.Second, 1, 200, ResultStale, "caddy-gateway; hit; ttl=-10"},
		{"max-stale too small", []string{"Cache-Control", "max-stale=5"}, 70 * time.Second, 2, 200, ResultRevalidated, "caddy-gateway; fwd=stale"},
		{"only-if-cached hit", []string{"Cache-Control", "only-if-cached"}, 30 * time.Second, 1, 200, ResultHit, "caddy-gateway; hit"},
		{"only-if-cached stale", []string{"Cache-Control", "only-if-cached"}, 70 * time.Second, 1, 504, ResultMiss, "caddy-gateway; detail=only-if-cached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Etag", `"e1"`)
				if r.Header.Get("If-None-Match") == `"e1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				_, _ = w.Write([]byte("body"))
			})
			c := newTestCache(t, clk, Options{})
			do(t, c, o.fetch(), "GET", "/r")
			clk.Advance(tt.advance)
			w, res, err := do(t, c, o.fetch(), "GET", "/r", tt.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			if o.calls.Load() != tt.wantCalls || w.Code != tt.wantCode || res != tt.wantRes ||
				!strings.HasPrefix(w.Header().Get("Cache-Status"), tt.wantCS) {
				t.Fatalf("calls %d code %d result %v Cache-Status %q; want %d %d %v %q",
					o.calls.Load(), w.Code, res, w.Header().Get("Cache-Status"), tt.wantCalls, tt.wantCode, tt.wantRes, tt.wantCS)
			}
			if w.Code == 200 && w.Body.String() != "body" {
				t.Fatalf("body %q", w.Body.String())
			}
		})
	}
	t.Run("only-if-cached miss", func(t *testing.T) {
		o := newOrigin(t, nil, respond(200, "x"))
		c := newTestCache(t, nil, Options{})
		w, _, _ := do(t, c, o.fetch(), "GET", "/none", "Cache-Control", "only-if-cached")
		if w.Code != http.StatusGatewayTimeout || o.calls.Load() != 0 {
			t.Fatalf("code %d calls %d", w.Code, o.calls.Load())
		}
	})
}

// TestConditionalFromCache: a fresh entry answers If-None-Match / If-Modified-Since with a 304 and no
// upstream call (RFC 9110 §13.2.2 precedence, weak comparison).
func TestConditionalFromCache(t *testing.T) {
	lm := "Mon, 01 Dec 2025 00:00:00 GMT"
	tests := []struct {
		name string
		hdr  []string
		want int
	}{
		{"inm match", []string{"If-None-Match", `"a", "e1"`}, 304},
		{"inm weak match", []string{"If-None-Match", `W/"e1"`}, 304},
		{"inm star", []string{"If-None-Match", `*`}, 304},
		{"inm no match", []string{"If-None-Match", `"zz"`}, 200},
		{"inm wins over ims", []string{"If-None-Match", `"zz"`, "If-Modified-Since", "Tue, 02 Dec 2025 00:00:00 GMT"}, 200},
		{"ims not modified", []string{"If-Modified-Since", "Tue, 02 Dec 2025 00:00:00 GMT"}, 304},
		{"ims equal", []string{"If-Modified-Since", lm}, 304},
		{"ims modified", []string{"If-Modified-Since", "Sun, 30 Nov 2025 00:00:00 GMT"}, 200},
		{"ims invalid", []string{"If-Modified-Since", "yesterday"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t, clk, respond(200, "body", "Cache-Control", "max-age=60", "Etag", `"e1"`, "Last-Modified", lm, "Content-Type", "text/plain"))
			c := newTestCache(t, clk, Options{})
			do(t, c, o.fetch(), "GET", "/c")
			w, res, _ := do(t, c, o.fetch(), "GET", "/c", tt.hdr...)
			if w.Code != tt.want || o.calls.Load() != 1 || res != ResultHit {
				t.Fatalf("code %d calls %d result %v, want %d 1 hit", w.Code, o.calls.Load(), res, tt.want)
			}
			if tt.want == 304 && (w.Body.Len() != 0 || w.Header().Get("Etag") != `"e1"` || w.Header().Get("Content-Type") != "") {
				t.Fatalf("304 carries body %q / header %v", w.Body.String(), w.Header())
			}
		})
	}
}

// TestRevalidation: a stale entry with a validator is revalidated with the cache's own conditional
// request (the client's non-matching ones are stripped); a 304 refreshes it (headers updated, age
// reset); a full answer replaces it.
func TestRevalidation(t *testing.T) {
	clk := newClock()
	var modeV atomic.Value
	modeV.Store("")
	o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		mode := modeV.Load().(string)
		switch {
		case mode == "" || r.Header.Get("If-None-Match") != `"v1"`:
			w.Header().Set("Cache-Control", "max-age=10")
			w.Header().Set("Etag", `"v1"`)
			w.Header().Set("X-Version", "1")
			_, _ = w.Write([]byte("one"))
		case mode == "304":
			w.Header().Set("Cache-Control", "max-age=20")
			w.Header().Set("X-Version", "1b")
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Cache-Control", "max-age=30")
			w.Header().Set("Etag", `"v2"`)
			_, _ = w.Write([]byte("two"))
		}
	})
	c := newTestCache(t, clk, Options{})
	do(t, c, o.fetch(), "GET", "/rv")
	clk.Advance(15 * time.Second)
	modeV.Store("304")
	w, res, _ := do(t, c, o.fetch(), "GET", "/rv", "If-None-Match", `"other"`)
	if res != ResultRevalidated || w.Code != 200 || w.Body.String() != "one" || w.Header().Get("X-Version") != "1b" || w.Header().Get("Age") != "0" {
		t.Fatalf("after 304: %v %d %q X-Version %q Age %q", res, w.Code, w.Body.String(), w.Header().Get("X-Version"), w.Header().Get("Age"))
	}
	if got := o.lastReq.Load().Header.Values("If-None-Match"); len(got) != 1 || got[0] != `"v1"` {
		t.Fatalf("upstream If-None-Match %q", got)
	}
	clk.Advance(15 * time.Second) // fresh for 20 s after the refresh
	if _, res, _ := do(t, c, o.fetch(), "GET", "/rv"); res != ResultHit {
		t.Fatalf("refreshed entry not fresh: %v", res)
	}
	clk.Advance(10 * time.Second)
	modeV.Store("full")
	w, res, _ = do(t, c, o.fetch(), "GET", "/rv")
	if res != ResultMiss || w.Body.String() != "two" {
		t.Fatalf("replacement: %v %q", res, w.Body.String())
	}
	w, res, _ = do(t, c, o.fetch(), "GET", "/rv")
	if res != ResultHit || w.Body.String() != "two" || o.calls.Load() != 3 {
		t.Fatalf("after replacement: %v %q calls %d", res, w.Body.String(), o.calls.Load())
	}
}

// TestRequestWithBodyBypassesTheCache: a GET or HEAD carrying a body ("fat GET") is forwarded with
// it and may be answered according to it, so its answer is not the URL's: it is neither served from
// the cache, nor stored (the next plain GET would get it: cache poisoning), nor coalesced.
func TestRequestWithBodyBypassesTheCache(t *testing.T) {
	const bypass = "caddy-gateway; fwd=bypass; detail=request-body"
	type step struct {
		method    string
		body      string // "" : none
		chunked   bool   // no Content-Length: the body's length is unknown
		wantBody  string // of a GET
		wantRes   Result
		wantCS    string // prefix
		wantCalls int64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"fat GET, then plain GET", []step{
			{"GET", "role=admin", false, "body=role=admin", ResultBypass, bypass, 1},
			{"GET", "", false, "body=", ResultMiss, "caddy-gateway; fwd=miss; stored", 2},
			{"GET", "", false, "body=", ResultHit, "caddy-gateway; hit", 2},
		}},
		{"chunked fat GET, then plain GET", []step{
			{"GET", "role=admin", true, "body=role=admin", ResultBypass, bypass, 1},
			{"GET", "", false, "body=", ResultMiss, "caddy-gateway; fwd=miss; stored", 2},
		}},
		{"fat HEAD, then plain GET", []step{
			{"HEAD", "role=admin", false, "", ResultBypass, bypass, 1},
			{"GET", "", false, "body=", ResultMiss, "caddy-gateway; fwd=miss; stored", 2},
		}},
		{"stored answer, then fat GET", []step{
			{"GET", "", false, "body=", ResultMiss, "caddy-gateway; fwd=miss; stored", 1},
			{"GET", "role=admin", false, "body=role=admin", ResultBypass, bypass, 2},
			{"GET", "role=admin", true, "body=role=admin", ResultBypass, bypass, 3},
			{"GET", "", false, "body=", ResultHit, "caddy-gateway; hit", 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					t.Errorf("origin: reading the body: %v", err)
				}
				w.Header().Set("Cache-Control", "max-age=60")
				_, _ = w.Write([]byte("body=" + string(b)))
			})
			c := newTestCache(t, clk, Options{})
			for i, s := range tt.steps {
				var body io.Reader
				if s.body != "" {
					body = strings.NewReader(s.body)
				}
				r := httptest.NewRequest(s.method, "/search", body)
				if s.chunked {
					r.ContentLength = -1
					r.TransferEncoding = []string{"chunked"}
				}
				w := httptest.NewRecorder()
				res, err := c.Serve(w, r, &Route{Service: "svc", Fetch: o.fetch()})
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				cs := w.Header().Get("Cache-Status")
				if res != s.wantRes || !strings.HasPrefix(cs, s.wantCS) || o.calls.Load() != s.wantCalls {
					t.Fatalf("step %d (%s %q): result %v Cache-Status %q calls %d; want %v %q %d",
						i, s.method, s.body, res, cs, o.calls.Load(), s.wantRes, s.wantCS, s.wantCalls)
				}
				if s.method == "GET" && w.Body.String() != s.wantBody {
					t.Fatalf("step %d (%s %q): body %q, want %q", i, s.method, s.body, w.Body.String(), s.wantBody)
				}
			}
		})
	}
}
