package auth

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestErrorText(t *testing.T) {
	cause := &EndpointError{StatusCode: 500, msg: "token endpoint answered HTTP 500"}
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"message only", &Error{Status: 503, Message: MsgUnavailable}, "token endpoint unavailable"},
		{"with cause", unavailable(502, cause), "token endpoint unavailable: token endpoint answered HTTP 500"},
		{"caller deadline", ctxError(context.DeadlineExceeded), "token endpoint timed out: context deadline exceeded"},
		{"caller gone", ctxError(context.Canceled), "token endpoint unavailable: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Fatalf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
	var ee *EndpointError
	if err := error(unavailable(502, cause)); !errors.As(err, &ee) || ee.StatusCode != 500 {
		t.Fatal("the cause is not reachable with errors.As")
	}
}

func TestScrubber(t *testing.T) {
	sc := newScrubber("my id", "p@ss w/rd")
	for _, in := range []string{
		"p@ss w/rd",
		"client_secret=p%40ss+w%2Frd",
		"Basic bXkraWQ6cCU0MHNzK3clMkZyZA==", // QueryEscape'd id:secret, as the library sends it
		"Basic bXkgaWQ6cEBzcyB3L3Jk",         // raw id:secret
	} {
		if out := sc.scrub(in); !strings.Contains(out, "[redacted]") {
			t.Errorf("scrub(%q) = %q", in, out)
		}
	}
	if got := safeText("a\r\nb\x00c" + strings.Repeat("x", 300)); strings.ContainsAny(got, "\r\n\x00") || len([]rune(got)) > maxErrText+1 {
		t.Errorf("safeText = %q", got)
	}
}

// TestSecretsNeverLeak drives every source through success, failure,
// rotation, invalidation and backoff with a debug-level logger, and looks
// for the secrets and every issued token in all logs, State JSON and
// error strings.
func TestSecretsNeverLeak(t *testing.T) {
	clk := newFakeClock()
	obs := newObserved()
	ctx := context.Background()
	var seen []string // everything a client, an operator or a log reader could see
	record := func(s Source, err error) {
		b, jerr := json.Marshal(s.State())
		if jerr != nil {
			t.Fatal(jerr)
		}
		seen = append(seen, string(b))
		if err != nil {
			seen = append(seen, err.Error())
			var e *Error
			if errors.As(err, &e) {
				seen = append(seen, e.Message)
			}
		}
	}

	// OAuth2 with a literal secret, through every state
	ts := newTokenServer(t, testSecret)
	ts.set(func(ts *tokenServer) { ts.expiresIn = 100 })
	cfg := cfgFor(ts)
	cfg.TokenURL = strings.Replace(cfg.TokenURL, "http://", "http://user:"+testSecret+"@", 1) + "?key=" + testSecret
	s := newTestOAuth2(t, cfg, obs.logger, clk)
	for _, step := range []func(){
		func() {},
		func() { clk.Advance(85 * time.Second) }, // refresh ahead
		func() { ts.set(func(ts *tokenServer) { ts.fail = 500 }); clk.Advance(time.Hour) },
		func() {}, // backing off
		func() { ts.set(func(ts *tokenServer) { ts.fail = 0; ts.secret = "other" }); clk.Advance(time.Hour) },
		func() { ts.set(func(ts *tokenServer) { ts.secret = testSecret }); clk.Advance(time.Hour) },
		func() { tok, _ := s.Token(ctx); s.Invalidate(tok) },
	} {
		step()
		_, err := s.Token(ctx)
		record(s, err)
		testutil.Eventually(t, "no fetch in flight", func() bool { return s.State().State != StateRefreshing })
		record(s, nil)
	}

	// OAuth2 with a secret file that rotates
	secretPath := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secretPath, "file-secret-1\n")
	ts2 := newTokenServer(t, "file-secret-1")
	s2 := newTestOAuth2(t, OAuth2Config{TokenURL: ts2.url(), ClientID: ts2.clientID, ClientSecretFile: secretPath}, obs.logger, clk)
	_, err := s2.Token(ctx)
	record(s2, err)
	replaceFile(t, secretPath, "file-secret-2\n")
	ts2.set(func(ts *tokenServer) { ts.fail = 503 })
	clk.Advance(2 * time.Hour)
	_, err = s2.Token(ctx)
	record(s2, err)

	// a token file that rotates and breaks
	tokPath := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokPath, "file-token-1")
	f := newTestFile(t, tokPath, time.Second, clk, &obs)
	replaceFile(t, tokPath, "file-token-2")
	clk.Advance(time.Second)
	_, err = f.Token(ctx)
	record(f, err)
	writeFile(t, tokPath, "")
	clk.Advance(time.Second)
	_, err = f.Token(ctx)
	record(f, err)

	secrets := append([]string{testSecret, "file-secret-1", "file-secret-2", "file-token-1", "file-token-2"},
		append(ts.issuedTokens(), ts2.issuedTokens()...)...)
	if len(ts.issuedTokens()) < 3 {
		t.Fatalf("the scenario issued only %d tokens", len(ts.issuedTokens()))
	}
	all := strings.Join(append(seen, obs.text()), "\n")
	for _, secret := range secrets {
		if strings.Contains(all, secret) {
			t.Errorf("%q leaked into:\n%s", secret, all)
		}
	}
	for _, want := range []string{"[redacted]", "token fetch failed", "token endpoint recovered",
		"upstream rejected the token", "token file changed", `"state":"failing"`, `"retry_in_seconds"`} {
		if !strings.Contains(all, want) {
			t.Errorf("scenario did not cover %q:\n%s", want, all)
		}
	}
}
