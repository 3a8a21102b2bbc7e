// Retries through Caddy: the retry budget bounds them (which requests are
// retried is tested in upstream/, TestRetriesIdempotentRequestsOnly).

package gateway

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
)

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
