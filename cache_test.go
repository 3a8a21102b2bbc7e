package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// cacheStats reads the default gateway's cache counters from the admin API.
func cacheStats(t testing.TB, in *instance) map[string]any {
	t.Helper()
	_, body := in.adminDo("GET", "/gateway/stats")
	gws, _ := decodeJSON(t, body)["gateways"].(map[string]any)
	gw, _ := gws["gateway"].(map[string]any)
	c, _ := gw["cache"].(map[string]any)
	if c == nil {
		t.Fatalf("no cache stats in %s", body)
	}
	return c
}

// TestPurgeAndWriteDuringMiss: a miss is in flight when the service is purged or the URL is written
// to; its answer (fetched before) reaches its own client but is not stored.
func TestPurgeAndWriteDuringMiss(t *testing.T) {
	tests := []struct {
		name   string
		during func(in *instance)
	}{
		{"admin purge of the service", func(in *instance) {
			if resp, body := in.adminDo("DELETE", "/gateway/cache?service=a"); resp.StatusCode != 200 {
				t.Fatalf("purge: %d %s", resp.StatusCode, body)
			}
		}},
		{"admin purge of the path", func(in *instance) {
			if resp, body := in.adminDo("DELETE", "/gateway/cache?service=a&path=/item"); resp.StatusCode != 200 {
				t.Fatalf("purge: %d %s", resp.StatusCode, body)
			}
		}},
		{"post to the url", func(in *instance) {
			if resp, _ := in.do("POST", "/api/a/item?k=1", strings.NewReader("{}"), nil); resp.StatusCode != 201 {
				t.Fatalf("POST: %d", resp.StatusCode)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			release := make(chan struct{})
			var version atomic.Int64
			up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == "POST" {
					version.Add(1)
					w.WriteHeader(201)
					return
				}
				v := version.Load()
				if r.Header.Get("X-First") != "" {
					arrived <- struct{}{}
					<-release
				}
				w.Header().Set("Cache-Control", "max-age=60")
				fmt.Fprintf(w, "v%d", v)
			})
			in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
				service a %s/v1
				cache
			}`, up.URL))
			type answer struct {
				body, cacheStatus string
				err               error
			}
			got := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequest("GET", in.url("/api/a/item?k=1"), nil)
				req.Header.Set("X-First", "1")
				resp, err := in.client.Do(req)
				if err != nil {
					got <- answer{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				got <- answer{string(b), resp.Header.Get("Cache-Status"), err}
			}()
			<-arrived
			tt.during(in)
			close(release)
			if a := <-got; a.err != nil || a.body != "v0" || strings.Contains(a.cacheStatus, "stored") {
				t.Fatalf("in-flight request got %q, Cache-Status %q, %v", a.body, a.cacheStatus, a.err)
			}
			resp, body := in.get("/api/a/item?k=1")
			if cs := resp.Header.Get("Cache-Status"); strings.Contains(cs, "; hit") {
				t.Fatalf("answer fetched before the %s served afterwards: %q, Cache-Status %q", tt.name, body, cs)
			}
		})
	}
}

// TestLocationInvalidationWithBasePath: the upstream's Location carries the service's base path
// (/v1/...), cache entries do not; the invalidation maps one onto the other.
func TestLocationInvalidationWithBasePath(t *testing.T) {
	var n atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.Header().Set("Location", "/v1/cacheable/item")
			w.Header().Set("Content-Location", "/v1/cacheable/item2")
			w.WriteHeader(201)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "n%d", n.Add(1))
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s/v1
		cache
	}`, up.URL))
	for _, p := range []string{"/api/a/cacheable/item", "/api/a/cacheable/item2", "/api/a/cacheable/other"} {
		in.get(p)
		if resp, _ := in.get(p); !strings.Contains(resp.Header.Get("Cache-Status"), "; hit") {
			t.Fatalf("%s not cached: %q", p, resp.Header.Get("Cache-Status"))
		}
	}
	if resp, _ := in.do("POST", "/api/a/create", strings.NewReader("{}"), nil); resp.StatusCode != 201 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	for p, hit := range map[string]bool{"/api/a/cacheable/item": false, "/api/a/cacheable/item2": false, "/api/a/cacheable/other": true} {
		resp, _ := in.get(p)
		if got := strings.Contains(resp.Header.Get("Cache-Status"), "; hit"); got != hit {
			t.Errorf("%s: hit = %v, want %v (Cache-Status %q)", p, got, hit, resp.Header.Get("Cache-Status"))
		}
	}
}

// TestCacheErrorsAndPurgeAnswers: only-if-cached with nothing stored is the gateway's JSON 504;
// purge paths stop at segment boundaries; an unknown service is a 404 naming it.
func TestCacheErrorsAndPurgeAnswers(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, r.URL.Path)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s
		cache
	}`, up.URL))

	resp, body := in.get("/api/a/nothing", "Cache-Control", "only-if-cached")
	m := decodeJSON(t, body)
	if resp.StatusCode != 504 || resp.Header.Get("Content-Type") != "application/json" ||
		m["status"] != float64(504) || m["service"] != "a" || m["error"] == "" || m["request_id"] == nil {
		t.Fatalf("only-if-cached miss: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	for _, p := range []string{"/cacheable/item", "/cacheable/item2", "/cacheable/item/sub", "/cacheable/item?x=1"} {
		in.get("/api/a" + p)
	}
	tests := []struct {
		query   string
		status  int
		removed float64
	}{
		{"service=a&path=/cacheable/it", 200, 0},
		{"service=a&path=/cacheable/item", 200, 3},
		{"service=a&path=/cacheable/item2", 200, 1},
		{"service=nope", 404, 0},
		{"service=nope&path=/x", 404, 0},
	}
	for _, tt := range tests {
		resp, body := in.adminDo("DELETE", "/gateway/cache?"+tt.query)
		if resp.StatusCode != tt.status {
			t.Fatalf("%s: %d %s", tt.query, resp.StatusCode, body)
		}
		m := decodeJSON(t, body)
		if tt.status == 404 {
			if !strings.Contains(fmt.Sprint(m["error"]), `"nope"`) {
				t.Errorf("%s: %s", tt.query, body)
			}
			continue
		}
		if m["removed"] != tt.removed {
			t.Errorf("%s: removed %v, want %v", tt.query, m["removed"], tt.removed)
		}
	}
}

// TestAdminPurgeEscapedPathsAndStrictQuery: a purge names a path the way the client requested it —
// written into the admin URL as the client sent it, or encoded once more as a query value should be —
// and removes the entry the gateway stored for that request, which is keyed by the client's escaped
// spelling. A purge query that cannot be read exactly (an invalid escape, an empty service, a relative
// or empty path, a parameter given twice) is a 400 that removes nothing: url.Values dropped what it
// could not parse, which widened `path=/%zz` to the whole service and `service=` to every service.
func TestAdminPurgeEscapedPathsAndStrictQuery(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, r.URL.EscapedPath())
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s
		service b %s
		cache
	}`, up.URL, up.URL))
	cacheStatus := func(path string) string {
		t.Helper()
		resp, body := in.get(path)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return resp.Header.Get("Cache-Status")
	}
	purge := func(query string) (int, map[string]any) {
		t.Helper()
		resp, body := in.adminDo("DELETE", "/gateway/cache?"+query)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("purge %s: Content-Type %q: %s", query, ct, body)
		}
		return resp.StatusCode, decodeJSON(t, body)
	}

	t.Run("escaped paths", func(t *testing.T) {
		for _, variant := range []string{"caf%C3%A9", "a%20b", "x%41", "sub!delims(1)"} {
			path := "/e/" + variant
			for _, spelling := range []struct{ name, value string }{
				{"as requested", path},
				{"query-encoded", url.QueryEscape(path)},
				{"lower-case hex", strings.ToLower(path)},
				{"parent, query-encoded", url.QueryEscape("/e")},
			} {
				t.Run(variant+"/"+spelling.name, func(t *testing.T) {
					if code, m := purge("service=a"); code != 200 {
						t.Fatalf("emptying the service: %d %v", code, m)
					}
					cacheStatus("/api/a" + path)
					if cs := cacheStatus("/api/a" + path); !strings.Contains(cs, "; hit") {
						t.Fatalf("not stored: Cache-Status %q", cs)
					}
					code, m := purge("service=a&path=" + spelling.value)
					if code != 200 || m["removed"] != float64(1) {
						t.Fatalf("purge path=%s: %d %v, want 200 and 1 removed", spelling.value, code, m)
					}
					if cs := cacheStatus("/api/a" + path); !strings.Contains(cs, "fwd=miss") {
						t.Errorf("still served from the cache after the purge: Cache-Status %q", cs)
					}
				})
			}
		}
	})

	t.Run("bad queries", func(t *testing.T) {
		stored := []string{"/api/a/e/p1", "/api/a/e/p2", "/api/b/e/p1"}
		for _, p := range stored {
			cacheStatus(p)
		}
		for _, q := range []string{
			"service=a&path=/%zz",
			"service=a&path=/e/p1%",
			"service=a&%zz",
			"service=",
			"service=&path=/e/p1",
			"service=a&path=relative",
			"service=a&path=e/p1",
			"service=a&path=",
			"service=a&service=b",
			"service=a&path=/e/p1&path=/e/p2",
			"path=/e/p1",
			"service=a&paht=/e/p1",
			"bogus=1",
		} {
			t.Run(q, func(t *testing.T) {
				code, m := purge(q)
				if code != http.StatusBadRequest {
					t.Fatalf("status %d, want 400: %v", code, m)
				}
				if msg, _ := m["error"].(string); msg == "" {
					t.Errorf("no error message: %v", m)
				}
			})
		}
		for _, p := range stored {
			if cs := cacheStatus(p); !strings.Contains(cs, "; hit") {
				t.Errorf("%s: removed by a rejected purge (Cache-Status %q)", p, cs)
			}
		}
	})
}

// TestFatGetNeverReachesTheCache: a GET carrying a body is forwarded with it, and its answer (which
// the upstream may base on the body) is neither stored nor served from the cache: the next plain GET
// of the URL gets the plain answer.
func TestFatGetNeverReachesTheCache(t *testing.T) {
	var calls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "body="+string(b))
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s
		cache
	}`, up.URL))
	steps := []struct {
		body     string
		chunked  bool
		want     string
		wantCS   string
		upstream int64
	}{
		{"role=admin", false, "body=role=admin", "fwd=bypass; detail=request-body", 1},
		{"role=admin", true, "body=role=admin", "fwd=bypass; detail=request-body", 2},
		{"", false, "body=", "fwd=miss; stored", 3},
		{"", false, "body=", "; hit", 3},
		{"role=admin", false, "body=role=admin", "fwd=bypass; detail=request-body", 4},
	}
	for i, s := range steps {
		var body io.Reader
		if s.body != "" {
			body = strings.NewReader(s.body)
			if s.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
		}
		resp, got := in.do(http.MethodGet, "/api/a/search", body, nil)
		cs := resp.Header.Get("Cache-Status")
		if resp.StatusCode != 200 || string(got) != s.want || !strings.Contains(cs, s.wantCS) || calls.Load() != s.upstream {
			t.Fatalf("step %d (body %q, chunked %v): %d %q Cache-Status %q, upstream calls %d; want %q %q %d",
				i, s.body, s.chunked, resp.StatusCode, got, cs, calls.Load(), s.want, s.wantCS, s.upstream)
		}
	}
}
