package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// poolsOf reads /gateway/pools for one service.
func poolsOf(t *testing.T, in *instance, service string) (inFlight, queued int64) {
	t.Helper()
	_, body := in.adminDo("GET", "/gateway/pools")
	var p struct {
		Gateways map[string]struct {
			Services map[string]struct {
				Admission struct {
					InFlight int64 `json:"in_flight"`
					Queued   int64 `json:"queued"`
				} `json:"admission"`
			} `json:"services"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("pools: %v: %s", err, body)
	}
	a := p.Gateways["gateway"].Services[service].Admission
	return a.InFlight, a.Queued
}

// targetState reads one upstream's entry of /gateway/health.
func targetState(t *testing.T, in *instance, service, addr string) (ts struct {
	Address, Breaker string
	Healthy          bool
}) {
	t.Helper()
	_, body := in.adminDo("GET", "/gateway/health")
	var h struct {
		Gateways map[string]struct {
			Services map[string]struct {
				Targets []struct {
					Address, Breaker string
					Healthy          bool
				} `json:"targets"`
			} `json:"services"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatal(err)
	}
	for _, tg := range h.Gateways["gateway"].Services[service].Targets {
		if tg.Address == addr {
			return tg
		}
	}
	t.Fatalf("target %s of %s not listed: %s", addr, service, body)
	return ts
}

func TestRetriesIdempotentRequestsOnly(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		mu.Lock()
		calls[key]++
		n := calls[key]
		mu.Unlock()
		if n <= 2 { // two transient failures, then success
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "busy")
			return
		}
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			retries 2
			retry_backoff 1ms 5ms
		}
	}`, up.URL))
	count := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[key]
	}

	resp, body := in.get("/api/users/get")
	if resp.StatusCode != 200 || count("GET /get") != 3 {
		t.Errorf("GET: status %d after %d upstream calls, want 200 after 3: %s", resp.StatusCode, count("GET /get"), body)
	}
	resp, body = in.do("PUT", "/api/users/put", strings.NewReader("same body each time"), nil)
	if resp.StatusCode != 200 || decodeEcho(t, body).BodyLen != len("same body each time") {
		t.Errorf("PUT: status %d: %s", resp.StatusCode, body)
	}
	resp, body = in.do("POST", "/api/users/post", strings.NewReader("x"), nil)
	if resp.StatusCode != http.StatusServiceUnavailable || count("POST /post") != 1 {
		t.Errorf("POST: status %d after %d calls, want the upstream's 503 after 1", resp.StatusCode, count("POST /post"))
	}
	if string(body) != "busy" {
		t.Errorf("POST: the upstream's own answer should reach the client, got %q", body)
	}
	h := http.Header{"Idempotency-Key": {"k1"}}
	resp, _ = in.do("POST", "/api/users/keyed", strings.NewReader("x"), h)
	if resp.StatusCode != 200 || count("POST /keyed") != 3 {
		t.Errorf("POST with Idempotency-Key: status %d after %d calls", resp.StatusCode, count("POST /keyed"))
	}
	_, pools := in.adminDo("GET", "/gateway/pools")
	if !strings.Contains(string(pools), `"retries":6`) {
		t.Errorf("pools does not count 6 retries: %s", pools)
	}
}

func TestAdmissionQueueShedsWith503AndRetryAfter(t *testing.T) {
	release := make(chan struct{})
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			max_conns 1
			max_pending 1
			queue_timeout 10s
		}
	}`, up.URL))

	results := make(chan int, 2)
	send := func() {
		resp, err := in.client.Get(in.url("/api/users/x"))
		if err != nil {
			results <- -1
			return
		}
		resp.Body.Close()
		results <- resp.StatusCode
	}
	go send()
	testutil.Eventually(t, "one request in flight", func() bool { f, _ := poolsOf(t, in, "users"); return f == 1 })
	go send()
	testutil.Eventually(t, "one request queued", func() bool { _, q := poolsOf(t, in, "users"); return q == 1 })

	start := time.Now()
	resp, body := in.get("/api/users/x")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("over max_conns+max_pending: status %d: %s", resp.StatusCode, body)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("shedding took %v: it must answer at once", time.Since(start))
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if m := decodeJSON(t, body); m["service"] != "users" {
		t.Errorf("body %s", body)
	}
	close(release)
	for range 2 {
		if code := <-results; code != 200 {
			t.Errorf("admitted request answered %d", code)
		}
	}
	testutil.Eventually(t, "pool drained", func() bool { f, q := poolsOf(t, in, "users"); return f == 0 && q == 0 })
}

func TestQueueTimeoutAnswers503(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			max_conns 1
			max_pending 5
			queue_timeout 50ms
		}
	}`, up.URL))
	go func() {
		resp, err := in.client.Get(in.url("/api/users/hold"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, "one request in flight", func() bool { f, _ := poolsOf(t, in, "users"); return f == 1 })
	resp, body := in.get("/api/users/x")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("queue timeout: status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	mustContain(t, string(body), "queue timeout")
}

func TestActiveHealthCheckTakesFailingTargetOutAndBack(t *testing.T) {
	var sick atomic.Bool
	var sickHits atomic.Int64
	good := upstreamServer(t, echoHandler)
	bad := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			if sick.Load() {
				w.WriteHeader(http.StatusInternalServerError)
			}
			return
		}
		sickHits.Add(1)
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s %s {
			health /health 50ms
		}
	}`, good.URL, bad.URL))
	badAddr := strings.TrimPrefix(bad.URL, "http://")
	targetHealthy := func() bool { return targetState(t, in, "users", badAddr).Healthy }
	testutil.Eventually(t, "both targets healthy", targetHealthy)
	sick.Store(true)
	testutil.Eventually(t, "failing target shown unhealthy", func() bool { return !targetHealthy() })
	before := sickHits.Load()
	for range 20 {
		if resp, _ := in.get("/api/users/x"); resp.StatusCode != 200 {
			t.Fatalf("status %d with one healthy target", resp.StatusCode)
		}
	}
	if n := sickHits.Load() - before; n != 0 {
		t.Errorf("unhealthy target got %d requests", n)
	}
	sick.Store(false)
	testutil.Eventually(t, "target back in rotation", targetHealthy)
}

func TestAllTargetsDownAnswers503NamingTheService(t *testing.T) {
	bad := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			health /health 50ms
		}
		health_path /ready
	}`, bad.URL))
	testutil.Eventually(t, "public health 503", func() bool {
		resp, body := in.get("/ready")
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), `"users"`)
	})
	var resp *http.Response
	var body []byte
	testutil.Eventually(t, "503 from the gateway", func() bool {
		resp, body = in.get("/api/users/x")
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if m := decodeJSON(t, body); m["service"] != "users" {
		t.Errorf("body %s", body)
	}
}

// A down upstream must not multiply load: the retry budget caps retries.
func TestRetryBudgetBoundsLoadOnADownUpstream(t *testing.T) {
	var calls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			retries 3
			retry_backoff 1ms 1ms
		}
	}`, up.URL))
	const requests = 600
	for range requests {
		if resp, _ := in.get("/api/users/x"); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// without a budget: 4 × 600 = 2400 calls; with it: 600 + 20% + a floor of 100
	if n := calls.Load(); n > requests+requests/5+100 {
		t.Errorf("%d upstream calls for %d requests: retries not bounded", n, requests)
	}
}

func TestBreakerTakesAFailingTargetOutAfterConsecutiveFailures(t *testing.T) {
	var badHits atomic.Int64
	good := upstreamServer(t, echoHandler)
	bad := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s %s {
			lb round_robin
			breaker 2 1m
		}
	}`, good.URL, bad.URL))
	for range 30 {
		in.get("/api/users/x")
	}
	if n := badHits.Load(); n != 2 {
		t.Errorf("failing target got %d requests, want 2 before its circuit opened", n)
	}
	resp, _ := in.get("/api/users/x")
	if resp.StatusCode != 200 {
		t.Errorf("status %d with the good target in rotation", resp.StatusCode)
	}
}

func TestMinIdleOpensWarmConnections(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			min_idle 3
		}
	}`, up.URL))
	testutil.Eventually(t, "3 idle connections without any client request", func() bool {
		_, body := in.adminDo("GET", "/gateway/pools")
		return strings.Contains(string(body), `"open":3`) && strings.Contains(string(body), `"idle":3`)
	})
}

// The admission limiter survives a reload: a request in flight on the old
// config still holds its slot, so the new config does not admit more.
func TestAdmissionLimitSurvivesReload(t *testing.T) {
	release := make(chan struct{})
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		echoHandler(w, r)
	})
	block := fmt.Sprintf(`gateway /api/* {
		service users %s {
			max_conns 1
		}
	}`, up.URL)
	in := startCaddy(t, block)
	held := make(chan int, 1)
	go func() {
		resp, err := in.client.Get(in.url("/api/users/hold"))
		if err != nil {
			held <- -1
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	testutil.Eventually(t, "one request in flight", func() bool { f, _ := poolsOf(t, in, "users"); return f == 1 })
	in.load(block)
	if f, _ := poolsOf(t, in, "users"); f != 1 {
		t.Errorf("after reload: in_flight %d, want the old request's 1", f)
	}
	resp, body := in.get("/api/users/other")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second request during the held one, after reload: %d %s", resp.StatusCode, body)
	}
	close(release)
	if code := <-held; code != 200 {
		t.Errorf("held request: %d", code)
	}
}

// After the cool-down an open circuit lets exactly one probe through: a
// failing probe opens it again, a good one closes it.
func TestBreakerHalfOpenSendsOneProbe(t *testing.T) {
	var sick atomic.Bool
	sick.Store(true)
	var badHits atomic.Int64
	good := upstreamServer(t, echoHandler)
	bad := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		if sick.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s %s {
			lb round_robin
			breaker 2 300ms
		}
	}`, good.URL, bad.URL))
	badAddr := strings.TrimPrefix(bad.URL, "http://")
	breakerState := func() string { return targetState(t, in, "users", badAddr).Breaker }
	for range 10 {
		in.get("/api/users/x")
	}
	if n := badHits.Load(); n != 2 || breakerState() != "open" {
		t.Fatalf("after 2 failures: %d hits, breaker %q", n, breakerState())
	}
	testutil.Eventually(t, "half-open after the cool-down", func() bool { return breakerState() == "half-open" })
	for range 10 { // one of these is the probe; it fails
		in.get("/api/users/x")
	}
	if n := badHits.Load(); n != 3 {
		t.Errorf("half-open let %d requests through, want exactly 1 probe", n-2)
	}
	if s := breakerState(); s != "open" {
		t.Errorf("after a failed probe: breaker %q, want open", s)
	}
	sick.Store(false)
	testutil.Eventually(t, "half-open again", func() bool { return breakerState() == "half-open" })
	in.get("/api/users/x") // the probe goes first to the half-open target, and succeeds
	if s := breakerState(); s != "closed" {
		t.Fatalf("after a good probe: breaker %q, want closed", s)
	}
	before := badHits.Load()
	for range 10 {
		in.get("/api/users/x")
	}
	if n := badHits.Load() - before; n < 4 {
		t.Errorf("closed target got %d of 10 round-robin requests", n)
	}
}
