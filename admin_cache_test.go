package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestAdminCacheLookup asks a real Caddy what its cache holds for a URL (GET /gateway/cache), checks
// the explained-miss counters in /gateway/stats and Prometheus, the Cache-Status detail, and that bad
// queries get a JSON 400 or 404 and never the token.
func TestAdminCacheLookup(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/priv") {
			w.Header().Set("Cache-Control", "private, max-age=60")
		} else {
			w.Header().Set("Cache-Control", "max-age=60, stale-while-revalidate=30")
			w.Header().Set("Etag", `"e1"`)
		}
		_, _ = w.Write([]byte("hello"))
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			token lookup-secret-token
		}
		cache
	}`, up.URL))
	in.get("/api/users/pub?a=1")
	resp, _ := in.get("/api/users/priv")
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "detail=private") {
		t.Fatalf("Cache-Status %q", cs)
	}

	type result struct {
		Gateways map[string]struct {
			URL      string `json:"url"`
			Variants []struct {
				Status       int    `json:"status"`
				FreshSeconds int64  `json:"fresh_seconds"`
				SWR          int64  `json:"stale_while_revalidate_seconds"`
				BodySize     int    `json:"body_size"`
				ETag         string `json:"etag"`
			} `json:"variants"`
			LastDecision *struct {
				Reason string `json:"reason"`
				Stored bool   `json:"stored"`
			} `json:"last_decision"`
		} `json:"gateways"`
	}
	lookup := func(q string) (int, result, string) {
		resp, body := in.adminDo("GET", "/gateway/cache?"+q)
		if strings.Contains(string(body), "lookup-secret-token") {
			t.Fatalf("token in the answer: %s", body)
		}
		var r result
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
		} else {
			decodeJSON(t, body)
		}
		return resp.StatusCode, r, string(body)
	}
	code, r, body := lookup("service=users&path=/pub%3Fa%3D1")
	v := r.Gateways["gateway"].Variants
	if code != 200 || len(v) != 1 || v[0].Status != 200 || v[0].ETag != `"e1"` || v[0].BodySize != 5 || v[0].SWR != 30 || v[0].FreshSeconds < 50 {
		t.Fatalf("pub: %d %s", code, body)
	}
	code, r, body = lookup("service=users&path=/priv")
	if g := r.Gateways["gateway"]; code != 200 || len(g.Variants) != 0 || g.LastDecision == nil || g.LastDecision.Reason != "private" {
		t.Fatalf("priv: %d %s", code, body)
	}
	for _, q := range []string{"", "service=users", "path=/pub", "service=users&path=pub", "service=users&path=/p&path=/q", "service=users&paht=/pub", "service=users&path=/%zz"} {
		if code, _, body := lookup(q); code != http.StatusBadRequest {
			t.Errorf("%q: %d %s", q, code, body)
		}
	}
	if code, _, body := lookup("service=nosuch&path=/pub"); code != http.StatusNotFound {
		t.Errorf("unknown service: %d %s", code, body)
	}

	_, body2 := in.adminDo("GET", "/gateway/stats")
	if !strings.Contains(string(body2), `"reasons":{"users":{"private":1}}`) {
		t.Errorf("stats lack the reason: %s", body2)
	}
	if n := scrape(t, in)[`caddy_gateway_cache_miss_reasons_total{reason="private",service="users"}`]; n != 1 {
		t.Errorf("metric = %v", n)
	}
}
