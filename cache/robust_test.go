package cache

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// goneWriter is a client that hung up: every write fails.
type goneWriter struct{ h http.Header }

var errGone = errors.New("client gone")

func (g *goneWriter) Header() http.Header {
	if g.h == nil {
		g.h = make(http.Header)
	}
	return g.h
}
func (g *goneWriter) Write([]byte) (int, error) { return 0, errGone }
func (g *goneWriter) WriteHeader(int)           {}

// TestCoalescingLeaderLeaves: the leader's client hangs up while n followers wait on its exchange;
// the exchange goes on without it (its writes fail, its context is cancelled), so the upstream still
// sees one request and every follower gets the stored answer.
func TestCoalescingLeaderLeaves(t *testing.T) {
	const n = 50
	body := strings.Repeat("b", 64<<10) // several writes: the copy must survive the failing client
	release := make(chan struct{})
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return // the leader's exchange was cancelled: the bug
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte(body))
	})
	c := newTestCache(t, nil, Options{})
	var waiting sync.WaitGroup
	waiting.Add(n)
	c.hookFollower = waiting.Done
	orphaned := make(chan struct{})
	c.hookOrphan = func() { close(orphaned) }
	fetch := o.fetch()

	ctx, hangUp := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() {
		_, err := c.Serve(&goneWriter{}, httptest.NewRequest("GET", "/slow", nil).WithContext(ctx), &Route{Service: "svc", Fetch: fetch})
		leaderDone <- err
	}()
	for o.calls.Load() == 0 { // the leader's exchange is in the upstream
		runtimeGosched()
	}
	var wg sync.WaitGroup
	results := make([]Result, n)
	recs := make([]*httptest.ResponseRecorder, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i] = httptest.NewRecorder()
			results[i], _ = c.Serve(recs[i], httptest.NewRequest("GET", "/slow", nil), &Route{Service: "svc", Fetch: fetch})
		}()
	}
	waiting.Wait()
	hangUp()
	<-orphaned // the cache saw the client leave and kept the exchange
	close(release)
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatalf("leader: %v", err)
	}
	if got := o.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1", got)
	}
	for i := range n {
		if results[i] != ResultCollapsed || recs[i].Code != 200 || recs[i].Body.String() != body {
			t.Fatalf("follower %d: %v %d (%d bytes)", i, results[i], recs[i].Code, recs[i].Body.Len())
		}
	}
}

// TestOrphanedExchangeEndsWhenUseless: once the leader's client is gone, an answer that turns out not
// to be storable has nobody left to serve (its followers fetch on their own), and its exchange is
// cancelled at once.
func TestOrphanedExchangeEndsWhenUseless(t *testing.T) {
	release := make(chan struct{})
	cancelled := make(chan struct{})
	var first atomic.Bool
	first.Store(true)
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !first.Swap(false) {
			_, _ = w.Write([]byte("own"))
			return
		}
		<-release
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a body that never ends, unless the gateway hangs up
		close(cancelled)
	})
	c := newTestCache(t, nil, Options{})
	orphaned := make(chan struct{})
	c.hookOrphan = func() { close(orphaned) }
	following := make(chan struct{})
	c.hookFollower = func() { close(following) }
	ctx, hangUp := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Serve(&goneWriter{}, httptest.NewRequest("GET", "/stream", nil).WithContext(ctx), &Route{Service: "svc", Fetch: o.fetch()})
	}()
	for o.calls.Load() == 0 {
		runtimeGosched()
	}
	follower := make(chan *httptest.ResponseRecorder)
	go func() {
		w, _, _ := do(t, c, o.fetch(), "GET", "/stream")
		follower <- w
	}()
	<-following
	hangUp()
	<-orphaned // kept for the follower
	close(release)
	<-cancelled
	<-done
	if w := <-follower; w.Code != 200 || w.Body.String() != "own" {
		t.Fatalf("follower: %d %q", w.Code, w.Body.String())
	}
}

// TestOrphanedExchangeEndsWithoutFollowers: a leader whose client leaves while nobody waits on its
// flight ends its exchange at once (#17.4): it must not hold an upstream slot (max_conns) until the
// answer comes or orphanLimit passes. A request that comes after starts its own flight.
func TestOrphanedExchangeEndsWithoutFollowers(t *testing.T) {
	cancelled := make(chan struct{})
	var first atomic.Bool
	first.Store(true)
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if first.Swap(false) {
			<-r.Context().Done() // only the gateway ending the exchange gets past this
			close(cancelled)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("fresh"))
	})
	c := newTestCache(t, nil, Options{})
	c.hookOrphan = func() { t.Error("an exchange nobody waits for was kept") }
	ctx, hangUp := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Serve(&goneWriter{}, httptest.NewRequest("GET", "/slow", nil).WithContext(ctx), &Route{Service: "svc", Fetch: o.fetch()})
	}()
	for o.calls.Load() == 0 {
		runtimeGosched()
	}
	hangUp()
	<-cancelled
	<-done
	w, res, err := do(t, c, o.fetch(), "GET", "/slow")
	if err != nil || w.Code != 200 || w.Body.String() != "fresh" || res != ResultMiss {
		t.Fatalf("next request: %v %v %d %q", res, err, w.Code, w.Body.String())
	}
}

// TestOrphanedExchangeEndsWithLastFollower: the leader's client left while a follower waited, so the
// exchange went on; when that follower leaves too, nobody is left and the exchange ends.
func TestOrphanedExchangeEndsWithLastFollower(t *testing.T) {
	cancelled := make(chan struct{})
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(cancelled)
	})
	c := newTestCache(t, nil, Options{})
	orphaned := make(chan struct{})
	c.hookOrphan = func() { close(orphaned) }
	following := make(chan struct{})
	c.hookFollower = func() { close(following) }
	fetch := o.fetch()
	leaderCtx, leaderLeaves := context.WithCancel(context.Background())
	followerCtx, followerLeaves := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = c.Serve(&goneWriter{}, httptest.NewRequest("GET", "/slow", nil).WithContext(leaderCtx), &Route{Service: "svc", Fetch: fetch})
	}()
	for o.calls.Load() == 0 {
		runtimeGosched()
	}
	var ferr error
	go func() {
		defer wg.Done()
		_, ferr = c.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/slow", nil).WithContext(followerCtx), &Route{Service: "svc", Fetch: fetch})
	}()
	<-following
	leaderLeaves()
	<-orphaned // kept: a follower waits
	followerLeaves()
	<-cancelled
	wg.Wait()
	if !errors.Is(ferr, context.Canceled) {
		t.Fatalf("follower: %v, want its context's error", ferr)
	}
	if got := o.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1", got)
	}
}

// TestLeaderGivesUpFollowersRetry: a leader whose exchange is given up (its client left and
// orphanLimit passed) hands over: the followers start a new flight, one of them leading, instead of
// all going upstream; and the key is not remembered as uncacheable.
func TestLeaderGivesUpFollowersRetry(t *testing.T) {
	const n = 20
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("first") != "" {
			<-r.Context().Done() // only the given-up exchange ends this one
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("fresh"))
	})
	c := newTestCache(t, nil, Options{})
	c.orphanLimit = 0 // give up the moment the client leaves
	var waiting sync.WaitGroup
	waiting.Add(n)
	c.hookFollower = waiting.Done
	fetch := o.fetch()
	var first atomic.Bool
	first.Store(true)
	leaderFetch := func(w http.ResponseWriter, r *http.Request, _ http.ResponseWriter) error {
		if first.Swap(false) {
			r = r.Clone(r.Context())
			r.URL.RawQuery = "first=1"
		}
		return fetch(w, r, nil)
	}
	ctx, hangUp := context.WithCancel(context.Background())
	leader := make(chan struct{})
	go func() {
		defer close(leader)
		_, _ = c.Serve(&goneWriter{}, httptest.NewRequest("GET", "/k", nil).WithContext(ctx), &Route{Service: "svc", Fetch: leaderFetch})
	}()
	for o.calls.Load() == 0 {
		runtimeGosched()
	}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, res, err := do(t, c, leaderFetch, "GET", "/k")
			// a follower that starts over after the new leader stored the
			// answer finds it stored: a hit is as good as a collapsed miss
			if err != nil || w.Code != 200 || w.Body.String() != "fresh" || (res != ResultMiss && res != ResultCollapsed && res != ResultHit) {
				t.Errorf("follower: %v %v %d %q", res, err, w.Code, w.Body.String())
			}
		}()
	}
	waiting.Wait()
	hangUp()
	wg.Wait()
	<-leader
	if got := o.calls.Load(); got != 2 {
		t.Fatalf("upstream calls = %d, want 2 (the given-up one, then one new leader)", got)
	}
	if c.pass.known(string(appendBaseKey(nil, "example.com", "svc", "/k", "")), c.now()) {
		t.Fatal("a given-up exchange marked the key uncacheable")
	}
}

// TestStoreAfterPurge: an answer whose exchange began before a purge or an invalidation covering its
// URL still reaches its own request, but is not stored; one not covered is stored.
func TestStoreAfterPurge(t *testing.T) {
	tests := []struct {
		name   string
		during func(c *Cache, fetch Fetch)
		stored bool
	}{
		{"purge all", func(c *Cache, _ Fetch) { c.Purge("", "") }, false},
		{"purge service", func(c *Cache, _ Fetch) { c.Purge("svc", "") }, false},
		{"purge path", func(c *Cache, _ Fetch) { c.Purge("svc", "/item") }, false},
		{"post same url", func(c *Cache, f Fetch) { do(t, c, f, "POST", "/item?k=1") }, false},
		{"post with location", func(c *Cache, f Fetch) { do(t, c, f, "POST", "/create") }, false},
		{"purge other service", func(c *Cache, _ Fetch) { c.Purge("other", "") }, true},
		{"purge sibling path", func(c *Cache, _ Fetch) { c.Purge("svc", "/item2") }, true},
		{"post other url", func(c *Cache, f Fetch) { do(t, c, f, "POST", "/elsewhere") }, true},
		{"purge its tag", func(c *Cache, _ Fetch) { c.PurgeTags("", []string{"item-1"}) }, false},
		{"purge its tag in its service", func(c *Cache, _ Fetch) { c.PurgeTags("svc", []string{"x", "items"}) }, false},
		{"purge another tag", func(c *Cache, _ Fetch) { c.PurgeTags("", []string{"item-2"}) }, true},
		{"purge its tag in another service", func(c *Cache, _ Fetch) { c.PurgeTags("other", []string{"item-1"}) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			release := make(chan struct{})
			o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != "GET" {
					if r.URL.Path == "/create" {
						w.Header().Set("Location", "/item?k=1")
					}
					w.WriteHeader(201)
					return
				}
				arrived <- struct{}{}
				<-release
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Surrogate-Key", "item-1 items")
				_, _ = w.Write([]byte("before"))
			})
			c := newTestCache(t, nil, Options{})
			fetch := o.fetch()
			got := make(chan *httptest.ResponseRecorder)
			go func() {
				w, _, _ := do(t, c, fetch, "GET", "/item?k=1")
				got <- w
			}()
			<-arrived
			tt.during(c, fetch)
			close(release)
			w := <-got
			if w.Code != 200 || w.Body.String() != "before" {
				t.Fatalf("own request: %d %q", w.Code, w.Body.String())
			}
			if claim := strings.Contains(w.Header().Get("Cache-Status"), "; stored"); claim != tt.stored {
				t.Fatalf("own request's Cache-Status %q", w.Header().Get("Cache-Status"))
			}
			_, res, _ := do(t, c, fetch, "GET", "/item?k=1", "Cache-Control", "only-if-cached")
			if stored := res == ResultHit; stored != tt.stored {
				t.Fatalf("stored = %v, want %v", stored, tt.stored)
			}
		})
	}
}

// TestPurgeLogOverflow: an exchange that spans more purges than the log keeps is not stored.
func TestPurgeLogOverflow(t *testing.T) {
	c := newTestCache(t, nil, Options{})
	e := &Entry{Service: "svc", URL: "/a", Key: "k", BaseLen: 1}
	since := c.local.mark()
	for range purgeLogSize - 1 {
		c.purgeLocal("other", "")
	}
	if c.local.purges.covers(e, since) {
		t.Fatal("covered by unrelated purges still in the log")
	}
	c.purgeLocal("other", "")
	if !c.local.purges.covers(e, since) {
		t.Fatal("not covered once the log no longer reaches back to the exchange")
	}
}

// TestUnderPrefix: purge paths match at segment boundaries.
func TestUnderPrefix(t *testing.T) {
	tests := []struct {
		url, prefix string
		want        bool
	}{
		{"/x", "", true},
		{"/x", "/x", true},
		{"/x?a=1", "/x", true},
		{"/x/y", "/x", true},
		{"/x2", "/x", false},
		{"/xy/z", "/x", false},
		{"/x", "/x/", false},
		{"/x/y", "/x/", true},
		{"/x?a=1", "/x?", true},
		{"/x", "/x?", false},
		{"/x?a=12", "/x?a=1", false},
		{"/x?a=1&b", "/x?a=1", false},
		{"/cacheable/item2", "/cacheable/it", false},
	}
	for _, tt := range tests {
		if got := underPrefix(tt.url, tt.prefix); got != tt.want {
			t.Errorf("underPrefix(%q, %q) = %v", tt.url, tt.prefix, got)
		}
	}
}

// TestPurgeSegmentBoundary: Purge removes the path, its queries and what is below it, never a sibling
// that merely starts with the same characters.
func TestPurgeSegmentBoundary(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "x", "Cache-Control", "max-age=60"))
	urls := []string{"/x", "/x?a=1", "/x/y", "/x2", "/xy/z"}
	tests := []struct {
		prefix string
		gone   []string
	}{
		{"/x", []string{"/x", "/x?a=1", "/x/y"}},
		{"/x/", []string{"/x/y"}},
		{"/x?", []string{"/x?a=1"}},
		{"/x2", []string{"/x2"}},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			c := newTestCache(t, nil, Options{})
			for _, u := range urls {
				do(t, c, o.fetch(), "GET", u)
			}
			if n := c.Purge("svc", tt.prefix); n != len(tt.gone) {
				t.Fatalf("removed %d, want %d", n, len(tt.gone))
			}
			for _, u := range urls {
				_, res, _ := do(t, c, o.fetch(), "GET", u, "Cache-Control", "only-if-cached")
				if gone := res != ResultHit; gone != slicesContains(tt.gone, u) {
					t.Errorf("%s: gone = %v", u, gone)
				}
			}
		})
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestInterimHeadersDoNotLeak: a 103 reaches the client with its fields, which then appear neither on
// the final answer nor on the stored one.
func TestInterimHeadersDoNotLeak(t *testing.T) {
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		testutil.EarlyHints(w)
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("final"))
	})
	c := newTestCache(t, nil, Options{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Front", "own") // a field of the gateway's own, sent with every answer
		if _, err := c.Serve(w, r, &Route{Service: "svc", Fetch: o.fetch()}); err != nil {
			w.WriteHeader(502)
		}
	}))
	defer front.Close()
	for _, want := range []string{"fwd=miss", "hit"} {
		var hints []textproto.MIMEHeader
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, h)
				return nil
			},
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/page", nil)
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !strings.Contains(resp.Header.Get("Cache-Status"), want) {
			t.Fatalf("Cache-Status %q, want %s", resp.Header.Get("Cache-Status"), want)
		}
		if resp.Header.Get("Link") != "" || resp.Header.Get("X-Hint-Secret") != "" || resp.Header.Get("X-Front") != "own" {
			t.Fatalf("%s: final header %v", want, resp.Header)
		}
		if want == "fwd=miss" && (len(hints) != 1 || hints[0].Get("Link") == "" || hints[0].Get("X-Hint-Secret") != "from-103") {
			t.Fatalf("103 fields: %v", hints)
		}
	}
}

// TestLocationThroughBasePath: Location / Content-Location are upstream paths, which carry the
// service's upstream base path; the cache strips it to find the entries they name.
func TestLocationThroughBasePath(t *testing.T) {
	tests := []struct {
		name, base, location string
		gone                 []string
	}{
		{"base stripped", "/v1", "/v1/item", []string{"/item"}},
		{"content location with query", "/v1", "/v1/item?k=1", []string{"/item?k=1"}},
		{"outside the base path", "/v1", "/item", nil},
		{"look-alike base", "/v1", "/v10/item", nil},
		{"no base path", "", "/item", []string{"/item"}},
		{"absolute url ignored", "/v1", "http://elsewhere/v1/item", nil},
	}
	urls := []string{"/item", "/item?k=1", "/v1/item"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			field := "Location"
			if strings.Contains(tt.name, "content") {
				field = "Content-Location"
			}
			o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == "POST" {
					w.Header().Set(field, tt.location)
					w.WriteHeader(201)
					return
				}
				w.Header().Set("Cache-Control", "max-age=60")
				_, _ = w.Write([]byte("x"))
			})
			c := newTestCache(t, nil, Options{})
			for _, u := range urls {
				do(t, c, o.fetch(), "GET", u)
			}
			w := httptest.NewRecorder()
			if _, err := c.Serve(w, httptest.NewRequest("POST", "/create", nil), &Route{Service: "svc", BasePath: tt.base, Fetch: o.fetch()}); err != nil || w.Code != 201 {
				t.Fatalf("POST: %v %d", err, w.Code)
			}
			for _, u := range urls {
				_, res, _ := do(t, c, o.fetch(), "GET", u, "Cache-Control", "only-if-cached")
				if gone := res != ResultHit; gone != slicesContains(tt.gone, u) {
					t.Errorf("%s: gone = %v", u, gone)
				}
			}
		})
	}
}

// TestOnlyIfCachedMissIsJSON: the cache's own 504 is the gateway's JSON error, through the route's
// WriteError when it has one.
func TestOnlyIfCachedMissIsJSON(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "x", "Cache-Control", "max-age=60"))
	c := newTestCache(t, nil, Options{})
	w, res, err := do(t, c, o.fetch(), "GET", "/none", "Cache-Control", "only-if-cached")
	if err != nil || res != ResultMiss || w.Code != 504 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%v %v %d %v", res, err, w.Code, w.Header())
	}
	var body struct {
		Error   string `json:"error"`
		Service string `json:"service"`
		Status  int    `json:"status"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Status != 504 || body.Service != "svc" || body.Error == "" {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	if !strings.Contains(w.Header().Get("Cache-Status"), "only-if-cached") || o.calls.Load() != 0 {
		t.Fatalf("Cache-Status %q, calls %d", w.Header().Get("Cache-Status"), o.calls.Load())
	}
	calls := 0
	rt := &Route{Service: "svc", Fetch: o.fetch(), WriteError: func(w http.ResponseWriter, _ *http.Request, status int, service, _ string) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"from":"` + service + `"}`))
	}}
	ew := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/none", nil)
	r.Header.Set("Cache-Control", "only-if-cached")
	if _, err := c.Serve(ew, r, rt); err != nil || calls != 1 || ew.Code != 504 || ew.Body.String() != `{"from":"svc"}` {
		t.Fatalf("WriteError: %v %d %d %q", err, calls, ew.Code, ew.Body.String())
	}
}

// TestStoredClaim: Cache-Status says "stored" only for answers of announced length, whose store is
// certain once the body arrives; an answer of unknown length may outgrow max_item_size later.
func TestStoredClaim(t *testing.T) {
	tests := []struct {
		name    string
		chunked bool
		size    int
		claim   bool
		stored  bool
	}{
		{"announced length", false, 100, true, true},
		{"unknown length, small", true, 100, false, true},
		{"unknown length, too large", true, 3000, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if tt.chunked {
					w.WriteHeader(200)
					w.(http.Flusher).Flush() // headers out before the length is known
				}
				_, _ = w.Write([]byte(strings.Repeat("z", tt.size)))
			})
			c := newTestCache(t, nil, Options{MaxItemSize: 1000})
			w, _, _ := do(t, c, o.fetch(), "GET", "/a")
			if claim := strings.Contains(w.Header().Get("Cache-Status"), "stored"); claim != tt.claim || w.Body.Len() != tt.size {
				t.Fatalf("Cache-Status %q, %d bytes", w.Header().Get("Cache-Status"), w.Body.Len())
			}
			_, res, _ := do(t, c, o.fetch(), "GET", "/a", "Cache-Control", "only-if-cached")
			if stored := res == ResultHit; stored != tt.stored {
				t.Fatalf("stored = %v", stored)
			}
		})
	}
}

// TestRedisPurgeSegmentBoundary: the Redis tier purges with the same segment-boundary rule.
func TestRedisPurgeSegmentBoundary(t *testing.T) {
	rs := startRedis(t)
	o := newOrigin(t, nil, respond(200, "x", "Cache-Control", "max-age=600"))
	a := newRedisCache(t, nil, rs, Options{})
	for _, p := range []string{"/x", "/x?a=1", "/x/y", "/x2", "/xy/z"} {
		do(t, a, o.fetch(), "GET", p)
	}
	waitWrites(t, a, 5)
	if n := a.Purge("svc", "/x"); n != 3 {
		t.Fatalf("Purge = %d, want 3", n)
	}
	keys, _ := rs.client(t).Keys(context.Background(), "t:{*}:e:*").Result()
	if len(keys) != 2 {
		t.Fatalf("redis keys after purge: %q", keys)
	}
}

// TestMatchForm: the form purges compare URLs in decodes every escape but those of the bytes that
// structure a URL ('/', '?'), of '%' itself and of NUL; applied twice it changes nothing more.
func TestMatchForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/plain/x?a=1", "/plain/x?a=1"},
		{"/caf%C3%A9", "/café"},
		{"/caf%c3%a9", "/café"},
		{"/caf\xc3\xa9", "/café"},
		{"/a%20b", "/a b"},
		{"/x%41", "/xA"},
		{"/a%2fb", "/a%2Fb"},
		{"/a%3fb?q=%3F", "/a%3Fb?q=%3F"},
		{"/pct%2541", "/pct%2541"},
		{"/nul%00", "/nul%00"},
		{"/bad%zz/%4/%", "/bad%zz/%4/%"},
		{"/x?q=a%26b%3Dc", "/x?q=a&b=c"},
	}
	for _, tt := range tests {
		got := matchForm(tt.in)
		if got != tt.want {
			t.Errorf("matchForm(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if again := matchForm(got); again != got {
			t.Errorf("matchForm(matchForm(%q)) = %q, not %q", tt.in, again, got)
		}
	}
}

// TestPurgeEscapedPath: a purge names a path however it is spelled — as the client requested it
// (escaped), decoded once (as the admin API's query value arrives), with other hex case — and finds the
// entry stored under the client's own spelling; the segment boundaries still hold, and an escaped '/'
// or '?' is no boundary. Locally and in Redis (whose index is searched by prefix, so both tiers must
// compare the same form).
func TestPurgeEscapedPath(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "x", "Cache-Control", "max-age=600"))
	urls := []string{"/e/caf%C3%A9", "/e/caf%C3%A9/sub", "/e/caf%C3%A9x", "/e/a%20b", "/e/x%41?q=1", "/e/p%2Fq", "/e/p"}
	tests := []struct {
		prefix string
		gone   []string
	}{
		{"/e/caf%C3%A9", []string{"/e/caf%C3%A9", "/e/caf%C3%A9/sub"}},
		{"/e/caf%c3%a9", []string{"/e/caf%C3%A9", "/e/caf%C3%A9/sub"}},
		{"/e/café", []string{"/e/caf%C3%A9", "/e/caf%C3%A9/sub"}},
		{"/e/a b", []string{"/e/a%20b"}},
		{"/e/a%20b", []string{"/e/a%20b"}},
		{"/e/xA", []string{"/e/x%41?q=1"}},
		{"/e/x%41?q=1", []string{"/e/x%41?q=1"}},
		{"/e/p", []string{"/e/p"}},
		{"/e/p%2fq", []string{"/e/p%2Fq"}},
	}
	// get requests target with its path spelled exactly as written (RawPath), as the gateway's router
	// hands it on: keys, and the URLs purges match, hold the client's own spelling
	get := func(c *Cache, target string, hdr ...string) Result {
		t.Helper()
		r := httptest.NewRequest("GET", target, nil)
		r.URL.RawPath, _, _ = strings.Cut(target, "?")
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		res, err := c.Serve(httptest.NewRecorder(), r, &Route{Service: "svc", Fetch: o.fetch()})
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		return res
	}
	for _, tier := range []string{"local", "redis"} {
		t.Run(tier, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.prefix, func(t *testing.T) {
					var c, other *Cache
					if tier == "redis" {
						rs := startRedis(t)
						c, other = newRedisCache(t, nil, rs, Options{}), newRedisCache(t, nil, rs, Options{})
					} else {
						c = newTestCache(t, nil, Options{})
					}
					for _, u := range urls {
						get(c, u)
					}
					if other != nil {
						waitWrites(t, c, int64(len(urls)))
					}
					if n := c.Purge("svc", tt.prefix); n != len(tt.gone) {
						t.Fatalf("Purge(%q) removed %d, want %d", tt.prefix, n, len(tt.gone))
					}
					for _, u := range urls {
						gone := get(c, u, "Cache-Control", "only-if-cached") != ResultHit
						if other != nil {
							// an instance whose local tier never held it: what Redis kept
							gone = get(other, u, "Cache-Control", "only-if-cached") != ResultHit
						}
						if gone != slicesContains(tt.gone, u) {
							t.Errorf("%s: gone = %v after Purge(%q)", u, gone, tt.prefix)
						}
					}
				})
			}
		})
	}
}
