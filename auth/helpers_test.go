package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { testutil.VerifyMain(m) }

// newFakeClock drives expiry, refresh-ahead and backoff without sleeping.
func newFakeClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
}

// Client authentication modes of the token server.
const (
	authEither = iota
	authBasicOnly
	authFormOnly
)

// tokenServer is a real loopback OAuth2 token endpoint (client
// credentials) that counts requests and issuances and can be told to fail,
// block, revoke tokens or issue short-lived ones.
type tokenServer struct {
	srv      *httptest.Server
	clientID string

	requests  atomic.Int64 // every request
	issuances atomic.Int64 // tokens issued

	mu         sync.Mutex
	secret     string
	authMode   int
	expiresIn  int    // 0: no expires_in
	fail       int    // answer this status instead of a token
	raw        string // answer this 200 body (content type JSON) instead of a token
	tokenType  string
	sameToken  string        // issue this token every time
	gate       chan struct{} // when set, issuance waits for it to be closed
	lastForm   url.Values
	issued     map[string]time.Time // token → real expiry (zero: none)
	revoked    map[string]bool
	redirectTo string
}

func newTokenServer(t *testing.T, secret string) *tokenServer {
	t.Helper()
	ts := &tokenServer{clientID: "gateway", secret: secret, expiresIn: 3600, tokenType: "bearer",
		issued: map[string]time.Time{}, revoked: map[string]bool{}}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) url() string { return ts.srv.URL + "/oauth/token" }

func (ts *tokenServer) set(f func(ts *tokenServer)) {
	ts.mu.Lock()
	f(ts)
	ts.mu.Unlock()
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	ts.requests.Add(1)
	writeJSON := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		writeJSON(400, map[string]string{"error": "invalid_request"})
		return
	}
	ts.mu.Lock()
	secret, mode, fail, raw, gate, redirect := ts.secret, ts.authMode, ts.fail, ts.raw, ts.gate, ts.redirectTo
	ts.lastForm = r.PostForm
	ts.mu.Unlock()

	if redirect != "" {
		http.Redirect(w, r, redirect, http.StatusTemporaryRedirect)
		return
	}
	id, sec, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		sec, _ = url.QueryUnescape(sec)
	} else {
		id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != ts.clientID || sec != secret || basic && mode == authFormOnly || !basic && mode == authBasicOnly {
		// a careless server echoing what it got: the source must scrub it
		writeJSON(401, map[string]string{"error": "invalid_client", "error_description": "bad secret " + sec})
		return
	}
	if fail != 0 {
		writeJSON(fail, map[string]string{"error": "server_error", "error_description": "cannot issue for " + sec})
		return
	}
	if raw != "" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(raw))
		return
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	n := ts.issuances.Add(1)
	ts.mu.Lock()
	tok := ts.sameToken
	if tok == "" {
		tok = fmt.Sprintf("tok-%d-%d", n, time.Now().UnixNano())
	}
	exp := time.Time{}
	if ts.expiresIn > 0 {
		exp = time.Now().Add(time.Duration(ts.expiresIn) * time.Second)
	}
	ts.issued[tok] = exp
	resp := map[string]any{"access_token": tok, "token_type": ts.tokenType}
	if ts.expiresIn != 0 {
		resp["expires_in"] = ts.expiresIn
	}
	ts.mu.Unlock()
	writeJSON(200, resp)
}

// valid is what an upstream checking tokens against this server decides.
func (ts *tokenServer) valid(tok string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, ok := ts.issued[tok]
	return ok && !ts.revoked[tok] && (exp.IsZero() || time.Now().Before(exp))
}

func (ts *tokenServer) revoke(tok string) { ts.set(func(ts *tokenServer) { ts.revoked[tok] = true }) }

func (ts *tokenServer) issuedTokens() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []string
	for tok := range ts.issued {
		out = append(out, tok)
	}
	return out
}

// block makes issuances wait until the returned func is called.
func (ts *tokenServer) block() (release func()) {
	gate := make(chan struct{})
	ts.set(func(ts *tokenServer) { ts.gate = gate })
	var once sync.Once
	return func() {
		once.Do(func() {
			ts.set(func(ts *tokenServer) { ts.gate = nil })
			close(gate)
		})
	}
}

// observed is a debug-level logger whose every entry can be searched.
type observed struct {
	logger *zap.Logger
	logs   *observer.ObservedLogs
}

func newObserved() observed {
	core, logs := observer.New(zapcore.DebugLevel)
	return observed{logger: zap.New(core), logs: logs}
}

// text renders every entry, context fields included.
func (o observed) text() string {
	var b strings.Builder
	for _, e := range o.logs.AllUntimed() {
		fmt.Fprintf(&b, "%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}

func newTestOAuth2(t *testing.T, cfg OAuth2Config, logger *zap.Logger, clk *testutil.Clock) *oauth2Source {
	t.Helper()
	now := time.Now
	if clk != nil {
		now = clk.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	s, err := newOAuth2(cfg, logger, now)
	if err != nil {
		t.Fatalf("newOAuth2: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content next to path and renames it over path, as
// secret managers and editors do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
