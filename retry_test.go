// Retries: which requests are retried, and how the retry budget bounds them.

package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

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
