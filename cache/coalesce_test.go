package cache

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TestLeaderFindsWhatWasStoredBeforeItJoined: a miss whose lookup came before another request
// stored the answer, and whose join after that request's flight ended (so it leads a flight of its
// own), answers from the cache: the leader looks again before it goes upstream.
func TestLeaderFindsWhatWasStoredBeforeItJoined(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "stored", "Cache-Control", "max-age=60"))
	c := newTestCache(t, nil, Options{})
	fetch := o.fetch()
	serve := func() (Result, string) { return getStored(t, c, fetch, "/late") }
	var first atomic.Bool
	var other Result
	c.hookJoin = func() { // between the first's lookup and join (the one in between passes by)
		if first.CompareAndSwap(false, true) {
			other, _ = serve()
		}
	}
	res, cs := serve()
	if other != ResultMiss || res != ResultHit || o.calls.Load() != 1 {
		t.Fatalf("the request in between: %v; the first: %v (%q); upstream calls %d; want a miss, then a hit and 1 call",
			other, res, cs, o.calls.Load())
	}
}

// TestLeaderFindsAPutThatWasUnderWay: a miss whose lookup ran while another request's put of the
// answer was under way (begun, not yet visible), and which then leads a flight of its own, finds
// the stored answer: the put is counted when it ends, not when it begins.
func TestLeaderFindsAPutThatWasUnderWay(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "stored", "Cache-Control", "max-age=60"))
	c := newTestCache(t, nil, Options{})
	fetch := o.fetch()
	serve := func() (Result, string) { return getStored(t, c, fetch, "/race") }
	bAtJoin, aDone := make(chan struct{}), make(chan struct{})
	var joins atomic.Int32
	c.hookJoin = func() {
		if joins.Add(1) == 2 { // B, its lookup missed: it joins once A's request is over
			close(bAtJoin)
			<-aDone
		}
	}
	var started atomic.Bool
	var bRes Result
	var bCS string
	bDone := make(chan struct{})
	c.local.hookPut = func() { // A's put has begun: B looks up now
		if started.CompareAndSwap(false, true) {
			go func() { defer close(bDone); bRes, bCS = serve() }()
			<-bAtJoin
		}
	}
	serve()
	close(aDone)
	<-bDone
	if bRes != ResultHit || o.calls.Load() != 1 {
		t.Fatalf("B: %v (%q), upstream calls %d; want a hit and 1 call", bRes, bCS, o.calls.Load())
	}
}

// getStored GETs target through c and checks that the answer is the origin's "stored"; it returns
// the result and the Cache-Status. It may run outside the test's goroutine.
func getStored(t *testing.T, c *Cache, fetch Fetch, target string) (Result, string) {
	w, res, err := do(t, c, fetch, "GET", target)
	if err != nil || w.Body.String() != "stored" {
		t.Errorf("%s: answer %q, %v", target, w.Body.String(), err)
	}
	return res, w.Header().Get("Cache-Status")
}

// TestCoalescing: 1,000 concurrent misses on one key make exactly one upstream request; the others
// get the stored answer.
func TestCoalescing(t *testing.T) {
	const n = 1000
	release := make(chan struct{})
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("shared"))
	})
	c := newTestCache(t, nil, Options{})
	var waiting sync.WaitGroup
	waiting.Add(n - 1)
	c.hookFollower = waiting.Done
	fetch := o.fetch()
	var wg sync.WaitGroup
	results := make([]Result, n)
	bodies := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := httptest.NewRecorder()
			results[i], _ = c.Serve(w, httptest.NewRequest("GET", "/hot", nil), &Route{Service: "svc", Fetch: fetch})
			bodies[i] = w.Body.String()
		}()
	}
	waiting.Wait() // every follower is waiting on the single leader
	close(release)
	wg.Wait()
	if got := o.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1", got)
	}
	counts := map[Result]int{}
	for i := range n {
		counts[results[i]]++
		if bodies[i] != "shared" {
			t.Fatalf("request %d got %q", i, bodies[i])
		}
	}
	if counts[ResultMiss] != 1 || counts[ResultCollapsed] != n-1 {
		t.Fatalf("results %v", counts)
	}
	if s := c.Stats(); s.Coalesced != n-1 {
		t.Fatalf("coalesced = %d", s.Coalesced)
	}
}

// TestCoalescingUnstorable: when the leader's answer cannot be stored, followers are released as soon
// as its header arrives and make their own requests.
func TestCoalescingUnstorable(t *testing.T) {
	release := make(chan struct{})
	var n atomic.Int64
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		if n.Add(1) == 1 {
			<-release // the leader's body stalls; followers must not wait for it
		}
		_, _ = w.Write([]byte("private"))
	})
	c := newTestCache(t, nil, Options{})
	fetch := o.fetch()
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		do(t, c, fetch, "GET", "/u")
	}()
	// wait for the leader's upstream call, then start the follower
	for o.calls.Load() == 0 {
		select {
		case <-leaderDone:
			t.Fatal("leader finished early")
		default:
		}
		runtimeGosched()
	}
	// Whether the follower joins the leader's flight or arrives after the leader released it, it must
	// complete while the leader's body is still stalled.
	w, res, err := do(t, c, fetch, "GET", "/u")
	if err != nil || res != ResultMiss || w.Body.String() != "private" {
		t.Fatalf("follower: %v %v %q", res, err, w.Body.String())
	}
	close(release)
	<-leaderDone
	if o.calls.Load() != 2 {
		t.Fatalf("calls %d", o.calls.Load())
	}
}

// TestCoalescingFollowerTimeout: a follower's wait is bounded by its own context.
func TestCoalescingFollowerTimeout(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("late"))
	})
	c := newTestCache(t, nil, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	c.hookFollower = cancel // the follower's deadline passes while it waits
	fetch := o.fetch()
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		do(t, c, fetch, "GET", "/slow")
	}()
	for o.calls.Load() == 0 {
		runtimeGosched()
	}
	r := httptest.NewRequest("GET", "/slow", nil).WithContext(ctx)
	w := httptest.NewRecorder()
	_, err := c.Serve(w, r, &Route{Service: "svc", Fetch: fetch})
	if !errors.Is(err, context.Canceled) || w.Code != 200 || w.Body.Len() != 0 || len(w.Header()) != 0 {
		t.Fatalf("follower: err %v, wrote %d %q %v", err, w.Code, w.Body.String(), w.Header())
	}
	close(release)
	<-leaderDone
}

// TestUncacheableKeySkipsCoalescing: once a key's answer was not storable,
// concurrent requests for it go upstream in parallel (hit-for-miss): the
// upstream here answers only when two requests are in at once, which
// coalescing would never allow.
func TestUncacheableKeySkipsCoalescing(t *testing.T) {
	arrived := make(chan struct{}, 2)
	both := make(chan struct{})
	var n atomic.Int64
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if n.Add(1) > 1 { // the first call only teaches the cache
			arrived <- struct{}{}
			<-both
		}
		_, _ = w.Write([]byte("live"))
	})
	c := newTestCache(t, nil, Options{})
	fetch := o.fetch()
	if _, res, _ := do(t, c, fetch, "GET", "/live"); res != ResultMiss {
		t.Fatalf("first: %v", res)
	}
	done := make(chan string, 2)
	for range 2 {
		go func() {
			w, _, _ := do(t, c, fetch, "GET", "/live")
			done <- w.Body.String()
		}()
	}
	<-arrived
	<-arrived // both in the upstream at once: not coalesced
	close(both)
	for range 2 {
		if body := <-done; body != "live" {
			t.Errorf("body %q", body)
		}
	}
}
