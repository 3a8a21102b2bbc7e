package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCacheKeyBlock runs a real Caddy whose Caddyfile shapes the cache key: utm_* is left out of
// every service's key, and the tenants service adds X-Tenant to its own.
func TestCacheKeyBlock(t *testing.T) {
	var calls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = fmt.Fprintf(w, "tenant=%s query=%s", r.Header.Get("X-Tenant"), r.URL.RawQuery)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service news %[1]s
		service tenants %[1]s
		cache {
			key {
				ignore_query utm_*
			}
			key tenants {
				header X-Tenant
			}
		}
	}`, up.URL))

	_, bare := in.get("/api/news/a")
	resp, tagged := in.get("/api/news/a?utm_source=x")
	if string(tagged) != string(bare) || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") || calls.Load() != 1 {
		t.Fatalf("?utm_source=x did not share the bare URL's entry: %q vs %q, %q, %d calls", tagged, bare, resp.Header.Get("Cache-Status"), calls.Load())
	}
	if _, other := in.get("/api/news/a?page=2"); calls.Load() != 2 || !strings.Contains(string(other), "page=2") {
		t.Fatalf("?page=2 shared the entry: %q", other)
	}

	// tenants has its own key block: utm_* counts there, X-Tenant too.
	_, a := in.get("/api/tenants/x", "X-Tenant", "alice")
	_, b := in.get("/api/tenants/x", "X-Tenant", "bob")
	resp, a2 := in.get("/api/tenants/x", "X-Tenant", "alice")
	if string(a) != "tenant=alice query=" || string(b) != "tenant=bob query=" || string(a2) != string(a) || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Fatalf("tenants shared an entry: %q %q %q (%q)", a, b, a2, resp.Header.Get("Cache-Status"))
	}
	if _, none := in.get("/api/tenants/x"); string(none) != "tenant= query=" {
		t.Fatalf("a request without X-Tenant got %q", none)
	}
}
