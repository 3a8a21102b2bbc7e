package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// tokenServer is a real loopback OAuth2 token endpoint (client credentials)
// that counts issuances and can fail or revoke on demand.
type tokenServer struct {
	*httptest.Server
	issued  atomic.Int64
	failing atomic.Bool
	mu      sync.Mutex
	valid   map[string]bool
}

func newTokenServer(t *testing.T, secret string) *tokenServer {
	ts := &tokenServer{valid: map[string]bool{}}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ts.failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		id, sec, ok := r.BasicAuth()
		if !ok {
			_ = r.ParseForm()
			id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != "gateway" || sec != secret {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		n := ts.issued.Add(1)
		tok := fmt.Sprintf("issued-token-%d", n)
		ts.mu.Lock()
		ts.valid[tok] = true
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":3600}`, tok)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) isValid(tok string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.valid[tok]
}

func (ts *tokenServer) revokeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	clear(ts.valid)
}

func TestOAuth2ClientCredentials(t *testing.T) {
	t.Setenv("GW_TEST_OAUTH_SECRET", "client-secret-value-42")
	ts := newTokenServer(t, "client-secret-value-42")
	var upstreamCalls atomic.Int64
	var seenClientCred atomic.Bool
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		a := r.Header.Get("Authorization")
		if strings.Contains(a, "client-own") {
			seenClientCred.Store(true)
		}
		if !ts.isValid(strings.TrimPrefix(a, "Bearer ")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service billing %s {
			oauth2 {
				token_url %s/token
				client_id gateway
				client_secret {env.GW_TEST_OAUTH_SECRET}
				scopes read write
				audience https://billing.example
			}
		}
	}`, up.URL, ts.URL))

	// many concurrent requests, one issuance
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := in.client.Get(in.url("/api/billing/invoices"))
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if resp != nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 || ts.issued.Load() != 1 {
		t.Fatalf("%d failed; %d issuances for 50 requests, want 1", failed.Load(), ts.issued.Load())
	}

	// a revoked token: refreshed once, and the request still succeeds
	ts.revokeAll()
	resp, body := in.get("/api/billing/invoices")
	if resp.StatusCode != 200 || ts.issued.Load() != 2 {
		t.Fatalf("after revocation: status %d, %d issuances: %s", resp.StatusCode, ts.issued.Load(), body)
	}

	// the endpoint down with no usable token: JSON 502/503, no client credential upstream
	ts.revokeAll()
	ts.failing.Store(true)
	before := upstreamCalls.Load()
	resp, body = in.get("/api/billing/invoices", "Authorization", "Bearer client-own-credential")
	// the upstream rejects the stale token with 401; the refresh fails; the client sees the 401
	// or a token error — never its own credential forwarded
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("endpoint down: status %d: %s", resp.StatusCode, body)
	}
	resp, body = in.get("/api/billing/invoices", "Authorization", "Bearer client-own-credential")
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("endpoint down, token invalidated: status %d: %s", resp.StatusCode, body)
	}
	if m := decodeJSON(t, body); m["service"] != "billing" || m["error"] != "token endpoint unavailable" {
		t.Errorf("body %s", body)
	}
	if seenClientCred.Load() {
		t.Error("the client's own credential reached the service")
	}
	if n := upstreamCalls.Load() - before; n > 1 {
		t.Errorf("%d upstream calls while the token endpoint is down", n)
	}

	// recovery when the endpoint returns (after the backoff)
	ts.failing.Store(false)
	testutil.Eventually(t, "recovery after the token endpoint returns", func() bool {
		resp, _ := in.get("/api/billing/invoices")
		return resp.StatusCode == 200
	})

	// metrics count fetches and failures
	m := scrape(t, in)
	if m[`caddy_gateway_credential_fetches_total{service="billing"}`] < 3 || m[`caddy_gateway_credential_failures_total{service="billing"}`] < 1 {
		t.Errorf("credential metrics: fetches %v, failures %v", m[`caddy_gateway_credential_fetches_total{service="billing"}`],
			m[`caddy_gateway_credential_failures_total{service="billing"}`])
	}

	// health shows the credential state, never a secret or token
	_, hb := in.adminDo("GET", "/gateway/health")
	mustContain(t, string(hb), `"kind":"oauth2"`)
	all := string(hb) + in.logs()
	for _, secret := range []string{"client-secret-value-42", "issued-token-"} {
		if strings.Contains(all, secret) {
			t.Errorf("%q leaked to the admin API or logs", secret)
		}
	}
}

func TestTokenFileRotatesWithoutReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	write := func(tok string) {
		tmp := filepath.Join(dir, "token.tmp")
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil { // atomic swap, as mounted secrets do
			t.Fatal(err)
		}
	}
	write("first-file-token")
	seen := make(chan string, 100)
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			token_file %s
		}
	}`, up.URL, file))
	in.get("/api/users/1")
	if got := <-seen; got != "Bearer first-file-token" {
		t.Fatalf("upstream saw %q", got)
	}
	write("second-file-token")
	deadline := time.Now().Add(10 * time.Second)
	for {
		in.get("/api/users/1")
		if got := <-seen; got == "Bearer second-file-token" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("rotated token never reached the upstream")
		}
		time.Sleep(50 * time.Millisecond) // the file is checked at most once a second
	}
}
