package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

const testSecret = "s3cr3t-Value-XYZ"

func cfgFor(ts *tokenServer) OAuth2Config {
	return OAuth2Config{TokenURL: ts.url(), ClientID: ts.clientID, ClientSecret: testSecret}
}

// asError asserts err is an *Error with the given status.
func asError(t *testing.T, err error, status int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Status != status {
		t.Fatalf("status = %d, want %d (%v)", e.Status, status, e)
	}
	if e.Message != MsgUnavailable && e.Status != http.StatusGatewayTimeout {
		t.Fatalf("message = %q", e.Message)
	}
	if strings.Contains(e.Error(), testSecret) {
		t.Fatalf("error leaks the secret: %v", e)
	}
	return e
}

func TestOAuth2ConfigErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "\n")
	ok := OAuth2Config{TokenURL: "https://idp.example/token", ClientID: "gw", ClientSecret: testSecret}
	tests := []struct {
		name string
		edit func(c *OAuth2Config)
		want string
	}{
		{"no url", func(c *OAuth2Config) { c.TokenURL = "" }, "token_url is not a valid URL"},
		{"bad url keeps its credentials", func(c *OAuth2Config) { c.TokenURL = "http://u:" + testSecret + "@%zz/" }, "not a valid URL"},
		{"relative url", func(c *OAuth2Config) { c.TokenURL = "/token" }, "absolute http or https"},
		{"ftp", func(c *OAuth2Config) { c.TokenURL = "ftp://idp/token" }, "absolute http or https"},
		{"no client id", func(c *OAuth2Config) { c.ClientID = "" }, "client_id is required"},
		{"no secret", func(c *OAuth2Config) { c.ClientSecret = "" }, "client_secret or client_secret_file is required"},
		{"both secrets", func(c *OAuth2Config) { c.ClientSecretFile = empty }, "mutually exclusive"},
		{"negative timeout", func(c *OAuth2Config) { c.Timeout = -time.Second }, "timeout"},
		{"missing secret file", func(c *OAuth2Config) { c.ClientSecret, c.ClientSecretFile = "", filepath.Join(dir, "nope") }, "no such file"},
		{"empty secret file", func(c *OAuth2Config) { c.ClientSecret, c.ClientSecretFile = "", empty }, "file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			s, err := OAuth2(cfg, nil)
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), testSecret) {
				t.Fatalf("error %q: want it to contain %q and no secret", err, tt.want)
			}
		})
	}
	s, err := OAuth2(ok, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestOAuth2ClientAuthentication(t *testing.T) {
	tests := []struct {
		name       string
		mode       int
		secretFile bool
		scopes     []string
		audience   string
	}{
		{name: "basic auth", mode: authBasicOnly},
		{name: "form values", mode: authFormOnly},
		{name: "scopes and audience", mode: authEither, scopes: []string{"read", "write"}, audience: "https://billing.example"},
		{name: "secret from file", mode: authEither, secretFile: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t, testSecret)
			ts.set(func(ts *tokenServer) { ts.authMode = tt.mode })
			cfg := cfgFor(ts)
			cfg.Scopes, cfg.Audience = tt.scopes, tt.audience
			if tt.secretFile {
				cfg.ClientSecret, cfg.ClientSecretFile = "", filepath.Join(t.TempDir(), "secret")
				writeFile(t, cfg.ClientSecretFile, testSecret+"\n")
			}
			s := newTestOAuth2(t, cfg, nil, nil)
			tok, err := s.Token(context.Background())
			if err != nil || !ts.valid(tok) {
				t.Fatalf("Token = %q, %v", tok, err)
			}
			ts.mu.Lock()
			form := ts.lastForm
			ts.mu.Unlock()
			if got, want := form.Get("scope"), strings.Join(tt.scopes, " "); got != want {
				t.Errorf("scope = %q, want %q", got, want)
			}
			if got := form.Get("audience"); got != tt.audience {
				t.Errorf("audience = %q, want %q", got, tt.audience)
			}
			if n := ts.issuances.Load(); n != 1 {
				t.Errorf("issuances = %d", n)
			}
		})
	}
}

func TestOAuth2ConcurrentCallersShareOneFetch(t *testing.T) {
	ts := newTokenServer(t, testSecret)
	s := newTestOAuth2(t, cfgFor(ts), nil, nil)
	release := ts.block()

	const n = 100
	var wg sync.WaitGroup
	toks := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { toks[i], errs[i] = s.Token(context.Background()) })
	}
	testutil.Eventually(t, "the first token request", func() bool { return ts.requests.Load() == 1 })
	if st := s.State().State; st != StateRefreshing {
		t.Errorf("state while fetching = %q", st)
	}
	release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil || toks[i] != toks[0] || !ts.valid(toks[i]) {
			t.Fatalf("caller %d: %q, %v", i, toks[i], errs[i])
		}
	}
	if got := ts.issuances.Load(); got != 1 {
		t.Fatalf("issuances = %d, want 1", got)
	}
	if got := ts.requests.Load(); got != 1 {
		t.Fatalf("requests = %d, want 1", got)
	}
	st := s.State()
	if st.State != StateOK || st.Fetches != 1 || st.ExpiresInSeconds == nil || *st.ExpiresInSeconds < 3500 ||
		st.RefreshedAt == nil || time.Since(*st.RefreshedAt) > time.Minute {
		t.Fatalf("state = %+v", st)
	}
}

func TestOAuth2RefreshAheadWithoutWaiting(t *testing.T) {
	clk := newFakeClock()
	ts := newTokenServer(t, testSecret)
	ts.set(func(ts *tokenServer) { ts.expiresIn = 100 })
	s := newTestOAuth2(t, cfgFor(ts), nil, clk)
	ctx := context.Background()

	t1, err := s.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(79 * time.Second) // before 80%: nothing happens
	if tok, _ := s.Token(ctx); tok != t1 || ts.requests.Load() != 1 {
		t.Fatalf("before 80%%: %q, %d requests", tok, ts.requests.Load())
	}

	// Past 80% with the endpoint stalled: callers still get the old token
	// at once, and only one refresh is started however many call.
	release := ts.block()
	defer release()
	clk.Advance(2 * time.Second)
	for range 20 {
		if tok, err := s.Token(ctx); tok != t1 || err != nil {
			t.Fatalf("during refresh: %q, %v", tok, err)
		}
	}
	testutil.Eventually(t, "the refresh request", func() bool { return ts.requests.Load() == 2 })
	if st := s.State(); st.State != StateRefreshing || st.ExpiresInSeconds == nil || *st.ExpiresInSeconds != 9 {
		t.Fatalf("state during refresh = %+v", st) // stale at 90s, now 81s
	}
	release()
	testutil.Eventually(t, "the refreshed token", func() bool { return s.State().Fetches == 2 })
	t2, err := s.Token(ctx)
	if err != nil || t2 == t1 || !ts.valid(t2) {
		t.Fatalf("after refresh: %q, %v", t2, err)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Fatalf("requests = %d, want 2", n)
	}
}

// TestOAuth2ExpiryCrossedWithRealTime uses the wall clock and 2s tokens:
// steady traffic crosses several expiries, every token it gets is valid at
// the token server, and no call fails.
func TestOAuth2ExpiryCrossedWithRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 4s")
	}
	ts := newTokenServer(t, testSecret)
	ts.set(func(ts *tokenServer) { ts.expiresIn = 2 })
	s := newTestOAuth2(t, cfgFor(ts), nil, nil)
	end := time.Now().Add(4 * time.Second)
	calls := 0
	for time.Now().Before(end) {
		tok, err := s.Token(context.Background())
		if err != nil || !ts.valid(tok) {
			t.Fatalf("call %d: %q valid=%v, %v", calls, tok, ts.valid(tok), err)
		}
		calls++
		time.Sleep(10 * time.Millisecond) // pacing of the traffic, not synchronisation
	}
	if n := ts.issuances.Load(); n < 2 || n > 4 {
		t.Fatalf("issuances = %d over 4s of 2s tokens", n)
	}
}

func TestOAuth2InvalidateRefreshesOnce(t *testing.T) {
	tests := []struct {
		name string
		run  func(s Source, t1 string) []string // returns the tokens callers got afterwards
	}{
		{"50 invalidations then 50 calls", func(s Source, t1 string) []string {
			var wg sync.WaitGroup
			for range 50 {
				wg.Go(func() { s.Invalidate(t1) })
			}
			wg.Wait()
			return callConcurrently(s, 50)
		}},
		{"50 callers each invalidate then call", func(s Source, t1 string) []string {
			var mu sync.Mutex
			var wg sync.WaitGroup
			var out []string
			for range 50 {
				wg.Go(func() {
					s.Invalidate(t1)
					tok, _ := s.Token(context.Background())
					mu.Lock()
					out = append(out, tok)
					mu.Unlock()
				})
			}
			wg.Wait()
			return out
		}},
		{"late invalidation of an old token is ignored", func(s Source, t1 string) []string {
			s.Invalidate(t1)
			t2, _ := s.Token(context.Background())
			for range 10 {
				s.Invalidate(t1)
			}
			return append(callConcurrently(s, 10), t2)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t, testSecret)
			s := newTestOAuth2(t, cfgFor(ts), nil, nil)
			t1, err := s.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			toks := tt.run(s, t1)
			if n := ts.issuances.Load(); n != 2 {
				t.Fatalf("issuances = %d, want 2", n)
			}
			for _, tok := range toks {
				if tok == t1 || !ts.valid(tok) {
					t.Fatalf("got %q (t1 %q)", tok, t1)
				}
			}
		})
	}
}

func callConcurrently(s Source, n int) []string {
	out := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i], _ = s.Token(context.Background()) })
	}
	wg.Wait()
	return out
}

// TestOAuth2RevokedTokenIsReplaced plays the transport: a request whose
// token the upstream rejects invalidates it and retries once.
func TestOAuth2RevokedTokenIsReplaced(t *testing.T) {
	ts := newTokenServer(t, testSecret)
	s := newTestOAuth2(t, cfgFor(ts), nil, nil)
	request := func() bool {
		tok, err := s.Token(context.Background())
		if err != nil {
			return false
		}
		if ts.valid(tok) {
			return true
		}
		s.Invalidate(tok) // 401
		tok, err = s.Token(context.Background())
		return err == nil && ts.valid(tok)
	}
	if !request() {
		t.Fatal("first request failed")
	}
	for round := range 3 {
		for _, tok := range ts.issuedTokens() {
			ts.revoke(tok)
		}
		var wg sync.WaitGroup
		for range 30 {
			wg.Go(func() {
				if !request() {
					t.Error("request failed after revocation")
				}
			})
		}
		wg.Wait()
		if n := ts.issuances.Load(); n != int64(round+2) {
			t.Fatalf("round %d: issuances = %d", round, n)
		}
	}
}

// TestOAuth2InvalidateLoopGuard: a token endpoint that answers with the
// same token again, and an upstream that rejects it, must not cause one
// fetch per request.
func TestOAuth2InvalidateLoopGuard(t *testing.T) {
	clk := newFakeClock()
	ts := newTokenServer(t, testSecret)
	ts.set(func(ts *tokenServer) { ts.sameToken = "always-the-same" })
	s := newTestOAuth2(t, cfgFor(ts), nil, clk)
	for range 50 {
		tok, err := s.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Invalidate(tok)
	}
	if n := ts.issuances.Load(); n != 1+freeRejects {
		t.Fatalf("issuances = %d, want %d", n, 1+freeRejects)
	}
	clk.Advance(rejectCooldown)
	s.Invalidate("always-the-same")
	_, _ = s.Token(context.Background())
	if n := ts.issuances.Load(); n != 2+freeRejects {
		t.Fatalf("after the cooldown: issuances = %d, want %d", n, 2+freeRejects)
	}
	// a token that lived long is always replaced on the first rejection
	clk.Advance(time.Hour)
	s.Invalidate("always-the-same")
	_, _ = s.Token(context.Background())
	if n := ts.issuances.Load(); n != 3+freeRejects {
		t.Fatalf("after an hour: issuances = %d, want %d", n, 3+freeRejects)
	}
}

func TestOAuth2EndpointFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, ts *tokenServer, cfg *OAuth2Config)
		want    string // in State.LastError and Error()
		status  int    // EndpointError.StatusCode
		timeout bool
	}{
		{name: "500", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.fail = 500 })
		}, want: "HTTP 500 (server_error): cannot issue for [redacted]", status: 500},
		{name: "wrong secret", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.secret = "another" })
		}, want: "HTTP 401 (invalid_client): bad secret [redacted]", status: 401},
		{name: "connection refused", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.srv.Close()
		}, want: "token endpoint request failed"},
		{name: "timeout", setup: func(t *testing.T, ts *tokenServer, cfg *OAuth2Config) {
			t.Cleanup(ts.block()) // before the server's Cleanup closes it
			cfg.Timeout = 50 * time.Millisecond
		}, want: "did not answer in time", timeout: true},
		{name: "not json", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.raw = "<html>" + testSecret })
		}, want: "cannot parse json"},
		{name: "no access_token", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.raw = `{"token_type":"bearer"}` })
		}, want: "missing access_token"},
		{name: "error in a 200", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.raw = `{"error":"invalid_scope"}` })
		}, want: "HTTP 200 (invalid_scope)", status: 200},
		{name: "not bearer", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.tokenType = "mac" })
		}, want: `issued a "mac" token`, status: 200},
		{name: "header injection", setup: func(_ *testing.T, ts *tokenServer, _ *OAuth2Config) {
			ts.set(func(ts *tokenServer) { ts.sameToken = "a\r\nX-Evil: 1" })
		}, want: "control characters", status: 200},
		{name: "redirect not followed", setup: func(t *testing.T, ts *tokenServer, _ *OAuth2Config) {
			other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
				t.Error("the redirect was followed: the secret went elsewhere")
			}))
			t.Cleanup(other.Close)
			ts.set(func(ts *tokenServer) { ts.redirectTo = other.URL })
		}, want: "HTTP 307", status: 307},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			ts := newTokenServer(t, testSecret)
			cfg := cfgFor(ts)
			tt.setup(t, ts, &cfg)
			obs := newObserved()
			s := newTestOAuth2(t, cfg, obs.logger, clk)

			_, err := s.Token(context.Background())
			e := asError(t, err, http.StatusBadGateway)
			var ee *EndpointError
			if !errors.As(err, &ee) || ee.StatusCode != tt.status {
				t.Fatalf("cause %#v, want status %d", ee, tt.status)
			}
			if !strings.Contains(e.Error(), tt.want) {
				t.Fatalf("Error() = %q, want %q", e.Error(), tt.want)
			}
			if tt.timeout != errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("errors.Is(DeadlineExceeded) = %v", !tt.timeout)
			}
			st := s.State()
			if st.State != StateFailing || st.FailingSince == nil || st.Failures != 1 || st.RetryInSeconds == nil ||
				!strings.Contains(st.LastError, tt.want) {
				t.Fatalf("state = %+v", st)
			}

			// backing off: 503 at once, the endpoint is not contacted
			before := ts.requests.Load()
			for range 5 {
				_, err = s.Token(context.Background())
				asError(t, err, http.StatusServiceUnavailable)
			}
			if ts.requests.Load() != before {
				t.Fatal("the endpoint was contacted while backing off")
			}
			if strings.Contains(obs.text(), testSecret) {
				t.Fatalf("logs leak the secret:\n%s", obs.text())
			}
			if obs.logs.FilterMessage("token fetch failed").Len() != 1 {
				t.Fatalf("logs:\n%s", obs.text())
			}
		})
	}
}

func TestOAuth2BackoffAndRecovery(t *testing.T) {
	clk := newFakeClock()
	ts := newTokenServer(t, testSecret)
	ts.set(func(ts *tokenServer) { ts.fail = 503 })
	obs := newObserved()
	s := newTestOAuth2(t, cfgFor(ts), obs.logger, clk)
	ctx := context.Background()

	// each round: one attempt (502), then 503s until the backoff ends;
	// the backoff grows and stays within the cap
	var last int64
	for round := 1; round <= 10; round++ {
		_, err := s.Token(ctx)
		asError(t, err, http.StatusBadGateway)
		st := s.State()
		if st.Failures != int64(round) || st.RetryInSeconds == nil {
			t.Fatalf("round %d: state %+v", round, st)
		}
		retry := *st.RetryInSeconds
		if retry > 60 || round > 1 && round < 7 && retry < last {
			t.Fatalf("round %d: retry in %ds after %ds", round, retry, last)
		}
		last = retry
		_, err = s.Token(ctx)
		asError(t, err, http.StatusServiceUnavailable)
		clk.Advance(time.Duration(retry) * time.Second)
	}
	if last < 30 {
		t.Fatalf("backoff after 10 failures is %ds", last)
	}

	ts.set(func(ts *tokenServer) { ts.fail = 0 })
	tok, err := s.Token(ctx)
	if err != nil || !ts.valid(tok) {
		t.Fatalf("after recovery: %q, %v", tok, err)
	}
	st := s.State()
	if st.State != StateOK || st.LastError != "" || st.FailingSince != nil || st.RetryInSeconds != nil || st.Fetches != 1 {
		t.Fatalf("state after recovery = %+v", st)
	}
	if obs.logs.FilterMessage("token endpoint recovered").Len() != 1 {
		t.Fatalf("logs:\n%s", obs.text())
	}
}

func TestOAuth2ServesCachedTokenWhileEndpointFails(t *testing.T) {
	clk := newFakeClock()
	ts := newTokenServer(t, testSecret)
	ts.set(func(ts *tokenServer) { ts.expiresIn = 100 })
	s := newTestOAuth2(t, cfgFor(ts), nil, clk)
	ctx := context.Background()
	t1, _ := s.Token(ctx)

	ts.set(func(ts *tokenServer) { ts.fail = 500 })
	clk.Advance(85 * time.Second)
	if tok, err := s.Token(ctx); tok != t1 || err != nil {
		t.Fatalf("%q, %v", tok, err)
	}
	testutil.Eventually(t, "the failed refresh", func() bool { return s.State().Failures == 1 })
	st := s.State()
	if st.State != StateFailing || st.ExpiresInSeconds == nil || *st.ExpiresInSeconds != 5 {
		t.Fatalf("state = %+v", st)
	}
	if tok, err := s.Token(ctx); tok != t1 || err != nil { // still valid: served
		t.Fatalf("%q, %v", tok, err)
	}

	clk.Advance(6 * time.Second) // past usability, past the first backoff
	_, err := s.Token(ctx)
	asError(t, err, http.StatusBadGateway)
	_, err = s.Token(ctx)
	asError(t, err, http.StatusServiceUnavailable)

	ts.set(func(ts *tokenServer) { ts.fail = 0 })
	clk.Advance(backoffCap)
	if tok, err := s.Token(ctx); err != nil || tok == t1 {
		t.Fatalf("after recovery: %q, %v", tok, err)
	}
}

func TestOAuth2CallerContext(t *testing.T) {
	tests := []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		target error
		status int
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			context.Canceled, http.StatusBadGateway},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded, http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t, testSecret)
			s := newTestOAuth2(t, cfgFor(ts), nil, nil)
			release := ts.block()
			defer release()

			other := make(chan string)
			go func() { tok, _ := s.Token(context.Background()); other <- tok }()
			ctx, cancel := tt.ctx()
			defer cancel()
			errc := make(chan error)
			go func() { _, err := s.Token(ctx); errc <- err }()
			testutil.Eventually(t, "the token request", func() bool { return ts.requests.Load() == 1 })
			if tt.target == context.Canceled {
				cancel()
			}
			err := <-errc
			asError(t, err, tt.status)
			if !errors.Is(err, tt.target) {
				t.Fatalf("%v is not %v", err, tt.target)
			}
			// the shared fetch goes on for the other caller
			release()
			if tok := <-other; !ts.valid(tok) {
				t.Fatalf("other caller got %q", tok)
			}
		})
	}
}

func TestOAuth2Close(t *testing.T) {
	ts := newTokenServer(t, testSecret)
	ctx := context.Background()

	// a fetch in flight is cancelled, its waiter answered
	s := newTestOAuth2(t, cfgFor(ts), nil, nil)
	release := ts.block()
	defer release()
	errc := make(chan error)
	go func() { _, err := s.Token(ctx); errc <- err }()
	testutil.Eventually(t, "the token request", func() bool { return ts.requests.Load() == 1 })
	s.Close()
	asError(t, <-errc, http.StatusBadGateway)
	s.Close() // idempotent
	_, err := s.Token(ctx)
	if e := asError(t, err, http.StatusServiceUnavailable); !strings.Contains(e.Error(), "closed") {
		t.Fatal(e)
	}
	release()

	// a valid token is still served after Close, without fetching
	s2 := newTestOAuth2(t, cfgFor(ts), nil, nil)
	tok, err := s2.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	n := ts.requests.Load()
	if got, err := s2.Token(ctx); got != tok || err != nil || ts.requests.Load() != n {
		t.Fatalf("after Close: %q, %v", got, err)
	}
}

type panicTransport struct{}

func (panicTransport) RoundTrip(*http.Request) (*http.Response, error) {
	panic("boom " + testSecret)
}

func TestOAuth2FetchPanicIsRecovered(t *testing.T) {
	clk := newFakeClock()
	ts := newTokenServer(t, testSecret)
	obs := newObserved()
	cfg := cfgFor(ts)
	// http.Client's timeout goroutine, skipped over by the panic, lives
	// until the timeout: keep it short for goleak
	cfg.Timeout = 50 * time.Millisecond
	s := newTestOAuth2(t, cfg, obs.logger, clk)
	good := s.client.Transport
	s.client.Transport = panicTransport{} // no fetch runs yet: no race

	_, err := s.Token(context.Background())
	if e := asError(t, err, http.StatusBadGateway); !strings.Contains(e.Error(), "internal error") {
		t.Fatal(e)
	}
	entries := obs.logs.FilterMessage("panic while fetching a token; recovered").All()
	if len(entries) != 1 || strings.Contains(obs.text(), testSecret) || !strings.Contains(obs.text(), "boom [redacted]") {
		t.Fatalf("logs:\n%s", obs.text())
	}

	s.mu.Lock() // the failed fetch is over
	s.client.Transport = good
	s.mu.Unlock()
	clk.Advance(backoffCap)
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOAuth2SecretFileRotation(t *testing.T) {
	clk := newFakeClock()
	ts := newTokenServer(t, "first-secret")
	path := filepath.Join(t.TempDir(), "secret")
	writeFile(t, path, "first-secret\n")
	cfg := OAuth2Config{TokenURL: ts.url(), ClientID: ts.clientID, ClientSecretFile: path}
	obs := newObserved()
	s := newTestOAuth2(t, cfg, obs.logger, clk)
	t1, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// the secret rotates at the provider and in the mounted file
	ts.set(func(ts *tokenServer) { ts.secret = "second-secret" })
	replaceFile(t, path, "second-secret\n")
	s.Invalidate(t1)
	t2, err := s.Token(context.Background()) // no clock advance needed: a fetch always looks
	if err != nil || !ts.valid(t2) {
		t.Fatalf("after rotation: %q, %v", t2, err)
	}
	if text := obs.text(); strings.Contains(text, "first-secret") || strings.Contains(text, "second-secret") {
		t.Fatalf("logs leak a secret:\n%s", text)
	}
}
