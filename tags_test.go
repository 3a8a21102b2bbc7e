package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// tagUpstream tags /users/42/* "user-42" (Surrogate-Key) and /products/7 "product-7" (Cache-Tag),
// answers cacheably with a Vary, and counts its requests.
func tagUpstream(t *testing.T) (*atomic.Int64, string) {
	var calls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		h := w.Header()
		h.Set("Cache-Control", "public, max-age=600")
		h.Set("Vary", "Accept-Language")
		switch {
		case strings.HasPrefix(r.URL.Path, "/users/42"):
			h.Set("Surrogate-Key", "user-42 users")
		case r.URL.Path == "/products/7":
			h.Set("Cache-Tag", "product-7,products")
		}
		_, _ = w.Write([]byte(r.URL.Path))
	})
	return &calls, up.URL
}

// TestPurgeByTag: DELETE /gateway/cache?tag=T removes every variant of every URL tagged T, and
// nothing else; clients never see the tag fields; bad queries are a JSON 400 and purge nothing.
func TestPurgeByTag(t *testing.T) {
	calls, upURL := tagUpstream(t)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s
		cache
	}`, upURL))
	paths := []string{"/api/a/users/42", "/api/a/users/42/orders", "/api/a/products/7", "/api/a/users/7"}
	fill := func() {
		for _, p := range paths {
			for _, lang := range []string{"en", "fr"} {
				for range 2 { // a miss, then a hit: neither shows the tags
					resp, _ := in.get(p, "Accept-Language", lang)
					if resp.StatusCode != 200 || resp.Header.Get("Surrogate-Key") != "" || resp.Header.Get("Cache-Tag") != "" {
						t.Fatalf("%s: %d, tag fields %q %q reach the client", p, resp.StatusCode, resp.Header.Get("Surrogate-Key"), resp.Header.Get("Cache-Tag"))
					}
				}
			}
		}
	}
	fill()
	hit := func(p, lang string) bool {
		resp, _ := in.get(p, "Accept-Language", lang, "Cache-Control", "only-if-cached")
		return resp.StatusCode == 200
	}
	purge := func(q string) (int, map[string]any) {
		resp, body := in.adminDo("DELETE", "/gateway/cache?"+q)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%s: not JSON: %s", q, body)
		}
		return resp.StatusCode, out
	}

	// Bad queries: a clear 400, and nothing purged.
	for _, q := range []string{"tag=", "tga=user-42", "tag=user%0142", "tag=a%20b", "tag=user-42&path=/users",
		"tag=" + strings.Repeat("x", 257), "tag=" + strings.Repeat("t&tag=", 64) + "t", "service=&tag=user-42"} {
		if code, out := purge(q); code != http.StatusBadRequest || out["error"] == nil {
			t.Errorf("%.60s: %d %v, want a JSON 400", q, code, out)
		}
	}
	if code, _ := purge("service=nope&tag=user-42"); code != http.StatusNotFound {
		t.Errorf("unknown service: %d, want 404", code)
	}
	for _, p := range paths {
		if !hit(p, "en") || !hit(p, "fr") {
			t.Fatalf("%s was purged by a rejected query", p)
		}
	}

	code, out := purge("tag=user-42&name=gateway")
	if code != 200 || out["removed"] != 4.0 {
		t.Fatalf("purge user-42: %d %v, want 4 removed (2 URLs × 2 variants)", code, out)
	}
	for _, p := range paths {
		for _, lang := range []string{"en", "fr"} {
			if got, want := hit(p, lang), !strings.HasPrefix(p, "/api/a/users/42"); got != want {
				t.Errorf("%s %s: cached %v, want %v", p, lang, got, want)
			}
		}
	}
	before := calls.Load()
	if code, out := purge("tag=product-7&tag=nothing&service=a"); code != 200 || out["removed"] != 2.0 {
		t.Fatalf("purge product-7: %d %v", code, out)
	}
	if hit("/api/a/products/7", "en") || !hit("/api/a/users/7", "en") || calls.Load() != before {
		t.Fatal("the product-7 purge missed or widened")
	}
}

// With keep_tag_headers the tag fields reach clients; tag_headers reads other fields.
func TestTagHeadersConfig(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("X-Tags", "t1 t2")
		w.Header().Set("Surrogate-Key", "s1")
		_, _ = w.Write([]byte("x"))
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s
		cache {
			tag_headers X-Tags
			keep_tag_headers
		}
	}`, up.URL))
	for range 2 {
		resp, _ := in.get("/api/a/x")
		if resp.Header.Get("X-Tags") != "t1 t2" || resp.Header.Get("Surrogate-Key") != "s1" {
			t.Fatalf("kept fields missing: %v", resp.Header)
		}
	}
	if _, body := in.adminDo("DELETE", "/gateway/cache?tag=s1"); !strings.Contains(string(body), `"removed":0`) {
		t.Fatalf("Surrogate-Key is not a tag field here: %s", body)
	}
	if _, body := in.adminDo("DELETE", "/gateway/cache?tag=t2"); !strings.Contains(string(body), `"removed":1`) {
		t.Fatalf("X-Tags tags: %s", body)
	}
}
