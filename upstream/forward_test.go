package upstream

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// newTestService provisions the service cfg describes, as the gateway does,
// and cleans it up at the end of the test.
func newTestService(t *testing.T, cfg *Config) *Service {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddyContext(t))
	s, err := New(ctx, t.Name(), cfg, zap.NewNop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Cleanup()
		cancel()
	})
	return s
}

// caddyContext loads an empty Caddy config (admin endpoint off) once, for
// the context a service is provisioned in: Caddy's reverse proxy looks up
// apps through it. The config is stopped when the package's tests end.
func caddyContext(t *testing.T) caddy.Context {
	t.Helper()
	if ctx := caddy.ActiveContext(); ctx.Context != nil {
		return ctx
	}
	if err := caddy.Load([]byte(`{"admin":{"disabled":true}}`), true); err != nil {
		t.Fatal(err)
	}
	return caddy.ActiveContext()
}

// forward sends a request for the service-relative target through s, as
// the gateway's handler does inside Caddy's server.
func forward(s *Service, method, target string, hdr ...string) (*httptest.ResponseRecorder, error) {
	return forwardBody(s, method, target, "", hdr...)
}

// forwardBody is forward with a request body (none when body is empty).
func forwardBody(s *Service, method, target, body string, hdr ...string) (*httptest.ResponseRecorder, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
	return w, s.Forward(w, r)
}

// The upstream sees the service-relative path under its base path, the
// query, and the service's token in place of the client's credentials.
func TestForwardPrependsBasePathAndReplacesAuthorization(t *testing.T) {
	var gotPath, gotQuery, gotAuth atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.EscapedPath())
		gotQuery.Store(r.URL.RawQuery)
		gotAuth.Store(r.Header.Get("Authorization"))
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	s := newTestService(t, &Config{Name: "users", Upstreams: []string{up.URL + "/v1/"}, Token: "service-token"})
	w, err := forward(s, "GET", "/items/a%2Fb?q=1", "Authorization", "Bearer client-secret")
	if err != nil || w.Code != 200 || w.Body.String() != "ok" {
		t.Fatalf("forward: %v %d %q", err, w.Code, w.Body.String())
	}
	if p := gotPath.Load(); p != "/v1/items/a%2Fb" {
		t.Errorf("upstream path %q, want /v1/items/a%%2Fb", p)
	}
	if q := gotQuery.Load(); q != "q=1" {
		t.Errorf("upstream query %q", q)
	}
	if a := gotAuth.Load(); a != "Bearer service-token" {
		t.Errorf("upstream Authorization %q, want the service's token", a)
	}
	if s.BasePath() != "/v1" {
		t.Errorf("BasePath %q", s.BasePath())
	}
}

// An upstream that refuses connections is a 502 *Error, and one that does
// not answer within timeout a 504: nothing written, a status to answer.
func TestForwardMapsFailuresToStatuses(t *testing.T) {
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	for _, tt := range []struct {
		name, url string
		want      int
	}{
		{"refused", refusedURL, http.StatusBadGateway},
		{"no answer", slow.URL, http.StatusGatewayTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestService(t, &Config{Name: "svc", Upstreams: []string{tt.url}, Timeout: caddy.Duration(200 * time.Millisecond)})
			w, err := forward(s, "GET", "/x")
			var ue *Error
			if !errors.As(err, &ue) || ue.Status != tt.want {
				t.Fatalf("err %v, want an *Error with status %d", err, tt.want)
			}
			if w.Body.Len() != 0 || strings.Contains(ue.Message, "127.0.0.1") {
				t.Fatalf("wrote %q; message %q shows the upstream's address", w.Body.String(), ue.Message)
			}
		})
	}
}

// Idempotent requests (GET, PUT with its body sent again each time, a POST
// with an Idempotency-Key) are retried after transient failures until one
// succeeds; a plain POST is sent once and the upstream's own answer
// delivered.
func TestRetriesIdempotentRequestsOnly(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	count := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[key]
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		mu.Lock()
		calls[key]++
		n := calls[key]
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		if n <= 2 { // two transient failures, then a success
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "busy")
			return
		}
		_, _ = fmt.Fprintf(w, "third time: %q", body)
	}))
	defer up.Close()
	s := newTestService(t, &Config{Name: "svc", Upstreams: []string{up.URL}, Retries: 2,
		RetryBackoffBase: caddy.Duration(time.Millisecond), RetryBackoffCap: caddy.Duration(time.Millisecond)})

	w, err := forward(s, "GET", "/get")
	if err != nil || w.Code != 200 || count("GET /get") != 3 {
		t.Fatalf("GET: %v %d %q after %d calls, want 200 after 3", err, w.Code, w.Body.String(), count("GET /get"))
	}
	if st := s.PoolStats(); st.Retries != 2 {
		t.Errorf("retries counted %d, want 2", st.Retries)
	}
	w, err = forwardBody(s, "PUT", "/put", "same body each time")
	if err != nil || w.Code != 200 || w.Body.String() != `third time: "same body each time"` {
		t.Errorf("PUT: %v %d %q, want the body sent again on the third attempt", err, w.Code, w.Body.String())
	}
	w, err = forwardBody(s, "POST", "/post", "x")
	if err != nil || w.Code != http.StatusServiceUnavailable || w.Body.String() != "busy" || count("POST /post") != 1 {
		t.Errorf("POST: %v %d %q after %d calls, want the upstream's own 503 after 1", err, w.Code, w.Body.String(), count("POST /post"))
	}
	w, err = forwardBody(s, "POST", "/keyed", "x", "Idempotency-Key", "k1")
	if err != nil || w.Code != 200 || count("POST /keyed") != 3 {
		t.Errorf("POST with Idempotency-Key: %v %d after %d calls, want 200 after 3", err, w.Code, count("POST /keyed"))
	}
	if st := s.PoolStats(); st.Retries != 6 {
		t.Errorf("retries counted %d, want 6 (GET, PUT, keyed POST: 2 each)", st.Retries)
	}
}

// After <failures> consecutive failures the breaker opens: the next request
// is refused without reaching the upstream, and the target shows it.
func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer up.Close()
	s := newTestService(t, &Config{Name: "svc", Upstreams: []string{up.URL}, Breaker: &BreakerConfig{Failures: 2, Cooldown: caddy.Duration(time.Hour)}})
	for i := range 2 {
		if w, _ := forward(s, "GET", "/x"); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: %d, want the upstream's 503", i, w.Code)
		}
	}
	w, err := forward(s, "GET", "/x")
	var ue *Error
	if !errors.As(err, &ue) || ue.Status != http.StatusServiceUnavailable || w.Body.Len() != 0 {
		t.Fatalf("with the breaker open: %v, wrote %q", err, w.Body.String())
	}
	if calls.Load() != 2 {
		t.Fatalf("the upstream saw %d requests, want 2: an open breaker sends none", calls.Load())
	}
	targets := s.Targets()
	if len(targets) != 1 || targets[0].Breaker != BreakerOpen {
		t.Fatalf("targets %+v, want one with an open breaker", targets)
	}
}
