// Admission (the in-flight limit and its queue) and the upstream connection pool.

package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
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

func TestAdmissionQueueShedsWith503AndRetryAfter(t *testing.T) {
	up, release := heldUpstream(t, "/")
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			max_conns 1
			max_pending 1
			queue_timeout 10s
		}
	}`, up))

	first := in.getAsync("/api/users/x")
	testutil.Eventually(t, "one request in flight", func() bool { f, _ := poolsOf(t, in, "users"); return f == 1 })
	second := in.getAsync("/api/users/x")
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
	for _, status := range []<-chan int{first, second} {
		if code := <-status; code != 200 {
			t.Errorf("admitted request answered %d", code)
		}
	}
	testutil.Eventually(t, "pool drained", func() bool { f, q := poolsOf(t, in, "users"); return f == 0 && q == 0 })
}

func TestQueueTimeoutAnswers503(t *testing.T) {
	up, release := heldUpstream(t, "/")
	t.Cleanup(func() { close(release) })
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			max_conns 1
			max_pending 5
			queue_timeout 50ms
		}
	}`, up))
	in.getAsync("/api/users/hold")
	testutil.Eventually(t, "one request in flight", func() bool { f, _ := poolsOf(t, in, "users"); return f == 1 })
	resp, body := in.get("/api/users/x")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("queue timeout: status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	mustContain(t, string(body), "queue timeout")
}

// The admission limiter survives a reload: a request in flight on the old
// config still holds its slot, so the new config does not admit more.
func TestAdmissionLimitSurvivesReload(t *testing.T) {
	up, release := heldUpstream(t, "/hold")
	block := fmt.Sprintf(`gateway /api/* {
		service users %s {
			max_conns 1
		}
	}`, up)
	in := startCaddy(t, block)
	held := in.getAsync("/api/users/hold")
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
