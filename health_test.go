// Target health: active checks, the breaker, and what a client sees when no target is up.

package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

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
