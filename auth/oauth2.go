package auth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// OAuth2Config describes an OAuth2 client-credentials grant (RFC 6749
// section 4.4) whose tokens the gateway sends to one service.
type OAuth2Config struct {
	// TokenURL is the token endpoint (http or https).
	TokenURL string
	// ClientID identifies the gateway to the token endpoint.
	ClientID string
	// ClientSecret is the secret itself, already resolved from placeholders
	// by the caller. Exactly one of ClientSecret and ClientSecretFile.
	ClientSecret string
	// ClientSecretFile is a file holding the secret, looked at again before
	// each fetch so that a rotated secret is used without a reload.
	ClientSecretFile string
	// Scopes are sent space-separated as "scope", when any.
	Scopes []string
	// Audience is sent as the form value "audience" (Auth0, Okta and
	// others select the API a token is for with it), when set.
	Audience string
	// Timeout bounds one fetch, connection included (default 10s): a hung
	// token endpoint must not hold requests longer than that.
	Timeout time.Duration
}

// DefaultOAuth2Timeout is the fetch timeout when OAuth2Config.Timeout is 0.
const DefaultOAuth2Timeout = 10 * time.Second

// Refresh and backoff policy. Tokens are refreshed once 80% of their
// lifetime has passed, and no longer served in the last tenth of it (at
// most 10s): a token must still be valid when the upstream checks it.
// Failed fetches back off exponentially, with jitter so that several
// gateways do not hammer a recovering endpoint in step.
const (
	refreshFraction = 0.8
	maxExpirySkew   = 10 * time.Second
	backoffBase     = time.Second
	backoffCap      = 60 * time.Second
)

// Guard against refresh loops driven by Invalidate: an upstream that
// rejects every fresh token (wrong audience), or a token endpoint that
// answers with the same token again. The first few rejections of young
// tokens are honored at once; after that, at most one per growing cooldown.
const (
	quickRejectAge  = 30 * time.Second // a token rejected younger than this counts
	freeRejects     = 3
	rejectCooldown  = time.Second
	maxRejectCooldn = time.Minute
)

// OAuth2 returns a Source for the client-credentials grant, built on
// golang.org/x/oauth2/clientcredentials.
//
// The first Token call fetches a token; concurrent callers share that fetch.
// The token is cached and refreshed ahead of expiry by the first request
// that comes after 80% of its lifetime: the fetch runs in the background
// while that request and the following ones keep getting the still-valid
// token, so steady traffic never waits for the endpoint. There is no
// timer goroutine: an idle service costs the token endpoint nothing, and
// the only goroutine is a fetch, bounded by Timeout and cancelled by Close.
//
// A failed fetch answers its waiters with *Error 502 and starts a backoff
// (1s doubling to 60s, jittered); until it ends Token answers *Error 503 at
// once without contacting the endpoint — unless a still-valid cached token
// exists, which is served. The first request after the backoff tries
// again, so the source recovers by itself when the endpoint returns.
//
// The token endpoint is reached with a client of its own, with a timeout
// and without following redirects (a redirect would carry the secret to
// another address).
func OAuth2(cfg OAuth2Config, logger *zap.Logger) (Source, error) {
	return newOAuth2(cfg, logger, time.Now)
}

func newOAuth2(cfg OAuth2Config, logger *zap.Logger, now clock) (*oauth2Source, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || cfg.TokenURL == "" {
		// url.Parse's error repeats the URL, which may hold credentials
		return nil, errors.New("oauth2: token_url is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("oauth2: token_url must be an absolute http or https URL")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("oauth2: client_id is required")
	}
	if cfg.ClientSecret != "" && cfg.ClientSecretFile != "" {
		return nil, errors.New("oauth2: client_secret and client_secret_file are mutually exclusive")
	}
	if cfg.ClientSecret == "" && cfg.ClientSecretFile == "" {
		return nil, errors.New("oauth2: client_secret or client_secret_file is required")
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("oauth2: timeout must not be negative")
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultOAuth2Timeout
	}
	endpoint := *u
	endpoint.User, endpoint.RawQuery, endpoint.Fragment = nil, "", ""
	logger = logger.With(zap.String("token_endpoint", endpoint.String()))

	s := &oauth2Source{
		timeout:     timeout,
		logger:      logger,
		now:         now,
		backoffBase: backoffBase,
		backoffCap:  backoffCap,
	}
	if cfg.ClientSecretFile != "" {
		s.secretFile, err = newFileValue(cfg.ClientSecretFile, "client secret file", DefaultFileCheck, logger, now)
		if err != nil {
			return nil, fmt.Errorf("oauth2: %w", err)
		}
	}
	if host := u.Hostname(); u.Scheme == "http" && !isLoopback(host) {
		logger.Warn("token endpoint uses plain http: the client secret crosses the network unencrypted")
	}

	var params url.Values
	if cfg.Audience != "" {
		params = url.Values{"audience": {cfg.Audience}}
	}
	s.conf = &clientcredentials.Config{
		ClientID:       cfg.ClientID,
		ClientSecret:   cfg.ClientSecret,
		TokenURL:       cfg.TokenURL,
		Scopes:         append([]string(nil), cfg.Scopes...),
		EndpointParams: params,
	}
	var transport *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		transport = dt.Clone()
	} else {
		transport = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	s.client = &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type oauth2Source struct {
	conf        *clientcredentials.Config // ClientSecret is set per fetch from secretFile; fetches never overlap
	secretFile  *fileValue
	client      *http.Client
	timeout     time.Duration
	logger      *zap.Logger
	now         clock
	backoffBase time.Duration
	backoffCap  time.Duration

	ctx    context.Context // cancelled by Close; parent of every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup // running fetches

	mu           sync.Mutex
	closed       bool
	tok          string
	obtained     time.Time
	refreshAt    time.Time // zero: the token does not expire
	staleAt      time.Time // not served from then on; zero: never
	flight       *flight   // the fetch in progress, shared by its waiters
	consecutive  int       // failed fetches since the last success
	retryAt      time.Time // no fetch before this after failures
	failingSince time.Time
	lastErr      *EndpointError
	fetches      int64
	failures     int64
	quickRejects int
	lastReject   time.Time
}

// flight is one fetch; done is closed once tok or err is set.
type flight struct {
	done chan struct{}
	tok  string
	err  *Error
}

// usable reports whether the cached token may be sent. s.mu is held.
func (s *oauth2Source) usable(now time.Time) bool {
	return s.tok != "" && (s.staleAt.IsZero() || now.Before(s.staleAt))
}

func (s *oauth2Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	now := s.now()
	if s.usable(now) {
		tok := s.tok
		if !s.closed && s.flight == nil && !s.refreshAt.IsZero() && !now.Before(s.refreshAt) && !now.Before(s.retryAt) {
			s.startLocked() // refresh ahead; nobody waits for it
		}
		s.mu.Unlock()
		return tok, nil
	}
	f := s.flight
	if f == nil {
		switch {
		case s.closed:
			s.mu.Unlock()
			return "", unavailable(http.StatusServiceUnavailable, errors.New("credential source closed"))
		case now.Before(s.retryAt):
			err := unavailable(http.StatusServiceUnavailable, fmt.Errorf("backing off for %s after %d failed fetches: %w",
				s.retryAt.Sub(now).Round(time.Millisecond), s.consecutive, s.lastErr))
			s.mu.Unlock()
			return "", err
		}
		f = s.startLocked()
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return "", f.err
		}
		return f.tok, nil
	case <-ctx.Done():
		return "", ctxError(ctx.Err())
	}
}

// startLocked starts a fetch. s.mu is held and s.closed is false.
func (s *oauth2Source) startLocked() *flight {
	f := &flight{done: make(chan struct{})}
	s.flight = f
	s.wg.Add(1)
	go s.fetch(f)
	return f
}

func (s *oauth2Source) fetch(f *flight) {
	defer s.wg.Done()
	start := time.Now()
	tok, lifetime, ferr := s.retrieve()
	took := time.Since(start)

	s.mu.Lock()
	now := s.now()
	s.flight = nil
	var log func()
	if ferr != nil {
		s.failures++
		s.consecutive++
		if s.failingSince.IsZero() {
			s.failingSince = now
		}
		s.lastErr = ferr
		wait := s.backoff(s.consecutive)
		s.retryAt = now.Add(wait)
		f.err = unavailable(http.StatusBadGateway, ferr)
		if !s.closed {
			fields := []zap.Field{zap.String("error", ferr.Error()), zap.Int("consecutive_failures", s.consecutive),
				zap.Duration("retry_in", wait), zap.Bool("serving_cached_token", s.usable(now)), zap.Duration("took", took)}
			if ferr.StatusCode != 0 {
				fields = append(fields, zap.Int("status", ferr.StatusCode))
			}
			log = func() { s.logger.Warn("token fetch failed", fields...) }
		}
	} else {
		s.fetches++
		if s.consecutive > 0 {
			failedFor, n := now.Sub(s.failingSince), s.consecutive
			log = func() {
				s.logger.Info("token endpoint recovered", zap.Duration("failed_for", failedFor), zap.Int("failed_fetches", n))
			}
		} else {
			n := s.fetches
			log = func() {
				s.logger.Debug("token obtained", zap.Duration("expires_in", lifetime), zap.Duration("took", took), zap.Int64("fetches", n))
			}
		}
		s.tok, s.obtained = tok, now
		s.refreshAt, s.staleAt = time.Time{}, time.Time{}
		if lifetime > 0 {
			s.refreshAt = now.Add(time.Duration(float64(lifetime) * refreshFraction))
			s.staleAt = now.Add(lifetime - min(maxExpirySkew, lifetime/10))
		}
		s.consecutive, s.retryAt, s.failingSince, s.lastErr = 0, time.Time{}, time.Time{}, nil
		f.tok = tok
	}
	s.mu.Unlock()
	if log != nil {
		log() // before waking the waiters: their request is logged after
	}
	close(f.done)
}

// backoff is the wait after n consecutive failures: exponential, capped,
// with jitter in its upper half.
func (s *oauth2Source) backoff(n int) time.Duration {
	d := s.backoffCap
	if n < 32 {
		d = min(s.backoffCap, s.backoffBase<<(n-1))
	}
	if half := int64(d / 2); half > 0 {
		d = time.Duration(half + rand.Int64N(half+1))
	}
	return d
}

// retrieve performs one token request. It recovers its own panics: a fetch
// must always complete, or its waiters would hang.
func (s *oauth2Source) retrieve() (tok string, lifetime time.Duration, ferr *EndpointError) {
	var sc scrubber
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("panic while fetching a token; recovered",
				zap.String("panic", safeText(sc.scrub(fmt.Sprint(r)))), zap.StackSkip("stack", 1))
			tok, lifetime, ferr = "", 0, &EndpointError{msg: "internal error while fetching a token"}
		}
	}()
	if s.secretFile != nil {
		s.conf.ClientSecret = s.secretFile.checkNow()
	}
	sc = newScrubber(s.conf.ClientID, s.conf.ClientSecret)

	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	t, err := s.conf.Token(context.WithValue(ctx, oauth2.HTTPClient, s.client))
	if err != nil {
		return "", 0, describeFetchError(err, sc)
	}
	if tt := t.TokenType; tt != "" && !strings.EqualFold(tt, "bearer") {
		return "", 0, &EndpointError{StatusCode: http.StatusOK,
			msg: fmt.Sprintf("token endpoint issued a %q token; only bearer tokens are supported", safeWord(tt))}
	}
	if !validHeaderValue(t.AccessToken) {
		return "", 0, &EndpointError{StatusCode: http.StatusOK, msg: "token endpoint issued an access token with control characters"}
	}
	if !t.Expiry.IsZero() {
		// the library computed Expiry from expires_in with the wall clock;
		// take the lifetime back so that expiry follows s.now
		lifetime = time.Until(t.Expiry).Round(time.Second)
		if lifetime <= 0 {
			return "", 0, &EndpointError{StatusCode: http.StatusOK, msg: "token endpoint issued an already expired token"}
		}
	}
	return t.AccessToken, lifetime, nil
}

func (s *oauth2Source) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token == "" || token != s.tok {
		return // already replaced (or dropped) since that request was sent
	}
	now := s.now()
	n := 1
	if now.Sub(s.obtained) < quickRejectAge {
		n = s.quickRejects + 1
	}
	if n > freeRejects {
		cool := maxRejectCooldn
		if k := n - freeRejects - 1; k < 16 {
			cool = min(maxRejectCooldn, rejectCooldown<<k)
		}
		if now.Sub(s.lastReject) < cool {
			s.logger.Debug("upstream keeps rejecting fresh tokens; not fetching another yet",
				zap.Int("quick_rejections", s.quickRejects), zap.Duration("cooldown", cool))
			return
		}
	}
	s.quickRejects, s.lastReject = n, now
	s.tok = ""
	s.refreshAt, s.staleAt = time.Time{}, time.Time{}
	s.logger.Info("upstream rejected the token; the next request fetches a new one",
		zap.Duration("token_age", now.Sub(s.obtained)))
}

func (s *oauth2Source) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	st := State{Kind: KindOAuth2, State: StateOK, Fetches: s.fetches, Failures: s.failures, RefreshedAt: optionalTime(s.obtained)}
	switch {
	case s.consecutive > 0:
		st.State = StateFailing
		st.FailingSince = optionalTime(s.failingSince)
		st.LastError = s.lastErr.Error()
		if s.flight == nil && now.Before(s.retryAt) {
			st.RetryInSeconds = secondsUntil(now, s.retryAt)
		}
	case s.flight != nil:
		st.State = StateRefreshing
	}
	if s.usable(now) && !s.staleAt.IsZero() {
		st.ExpiresInSeconds = secondsUntil(now, s.staleAt)
	}
	return st
}

func (s *oauth2Source) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.client.CloseIdleConnections()
}
