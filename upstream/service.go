package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-gateway/caddy-gateway/auth"
	"github.com/caddy-gateway/caddy-gateway/pool"
)

// Service is a provisioned service: Caddy's reverse proxy handler for its
// upstreams, plus admission, retries, timeout and token injection. It is
// safe for concurrent use; ServeHTTP-time code only reads its fields.
type Service struct {
	// Name is the service's path segment.
	Name string
	// OnRetry, when set before the service takes traffic, is called for
	// each retry (the gateway counts them in its metrics).
	OnRetry func()

	cfg        *Config
	basePath   string // upstream base path without trailing slash, escaped
	proxy      *reverseproxy.Handler
	transport  *reverseproxy.HTTPTransport
	timeout    time.Duration
	retries    int
	backoff    pool.Backoff
	budget     *pool.Budget
	limiter    *pool.Limiter
	limiterKey string
	conns      *pool.ConnCounter
	cred       auth.Source         // nil: forward the client's own Authorization
	breakers   map[string]*breaker // by dial address; nil without a breaker
	logger     *zap.Logger

	retried atomic.Int64
}

// limiters keeps each service's admission limiter across config reloads:
// requests still in flight on the old config hold their slots, so the new
// config does not admit max_conns more on top of them.
var limiters = caddy.NewUsagePool()

type sharedLimiter struct{ *pool.Limiter }

func (sharedLimiter) Destruct() error { return nil }

// New builds and provisions the service described by cfg. ctx is the Caddy
// context of the config being loaded; every goroutine the service starts
// (active health checks) ends when that context is cancelled. scope names
// the gateway, so state kept across reloads is not shared between two
// gateways' services of the same name. cfg must have passed Validate.
func New(ctx caddy.Context, scope string, cfg *Config, logger *zap.Logger) (*Service, error) {
	queueTimeout := durationOr(cfg.QueueTimeout, DefaultQueueTimeout)
	limiterKey := fmt.Sprintf("%s/%s/%d/%d/%s", scope, cfg.Name, cfg.MaxConns, cfg.MaxPending, queueTimeout)
	lim, _, err := limiters.LoadOrNew(limiterKey, func() (caddy.Destructor, error) {
		return sharedLimiter{pool.NewLimiter(cfg.MaxConns, cfg.MaxPending, queueTimeout)}, nil
	})
	if err != nil {
		return nil, err
	}
	s := &Service{
		Name:    cfg.Name,
		cfg:     cfg,
		timeout: durationOr(cfg.Timeout, DefaultTimeout),
		retries: cfg.Retries,
		backoff: pool.Backoff{
			Base: durationOr(cfg.RetryBackoffBase, DefaultRetryBase),
			Cap:  durationOr(cfg.RetryBackoffCap, DefaultRetryCap),
		},
		budget:     pool.NewBudget(0.2, 10, 10*time.Second),
		limiter:    lim.(sharedLimiter).Limiter,
		limiterKey: limiterKey,
		conns:      new(pool.ConnCounter),
		// Not logger.With: that encodes the field into a buffer of its own per service, ~1 KB and
		// several objects each of 10,000 services would keep; the rare log lines add it themselves.
		logger: logger,
	}
	provisioned := false
	defer func() {
		if !provisioned {
			_ = s.Cleanup() // releases what was built so far
		}
	}()

	cred, err := newCredential(cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", cfg.Name, err)
	}
	s.cred = cred

	h := new(reverseproxy.Handler)
	if cfg.Proxy != nil {
		// copy so that provisioning never writes into the user's config
		raw, err := json.Marshal(cfg.Proxy)
		if err != nil {
			return nil, fmt.Errorf("service %q: proxy: %w", cfg.Name, err)
		}
		if err := json.Unmarshal(raw, h); err != nil {
			return nil, fmt.Errorf("service %q: proxy: %w", cfg.Name, err)
		}
	}

	var scheme string
	for _, raw := range cfg.Upstreams {
		u, _ := ParseUpstream(raw) // validated above
		scheme = u.Scheme
		s.basePath = strings.TrimSuffix(u.EscapedPath(), "/")
		h.Upstreams = append(h.Upstreams, &reverseproxy.Upstream{Dial: dialAddress(u)})
	}

	t, err := s.buildTransport(ctx, h, scheme)
	if err != nil {
		return nil, fmt.Errorf("service %q: transport: %w", cfg.Name, err)
	}
	s.transport = t
	h.TransportRaw = nil
	tt := &gatewayTransport{HTTPTransport: t, cred: cred}
	h.Transport = tt

	// The upstream sees its own Host, as an API client calling it directly
	// would, unless the proxy block sets one with header_up.
	tt.setHost = h.Headers == nil || h.Headers.Request == nil ||
		(h.Headers.Request.Set.Get("Host") == "" && h.Headers.Request.Add.Get("Host") == "")

	if h.LoadBalancing == nil {
		h.LoadBalancing = new(reverseproxy.LoadBalancing)
	}
	if cfg.LB != "" || h.LoadBalancing.SelectionPolicyRaw == nil {
		policy := cfg.LB
		if policy == "" {
			policy = "round_robin"
		}
		h.LoadBalancing.SelectionPolicyRaw = json.RawMessage(fmt.Sprintf(`{"policy":%q}`, policy))
	}

	if hc := cfg.Health; hc != nil {
		if h.HealthChecks == nil {
			h.HealthChecks = new(reverseproxy.HealthChecks)
		}
		h.HealthChecks.Active = &reverseproxy.ActiveHealthChecks{
			URI:          hc.Path,
			Interval:     caddy.Duration(durationOr(hc.Interval, 10*time.Second)),
			Timeout:      caddy.Duration(durationOr(hc.Timeout, 5*time.Second)),
			ExpectStatus: hc.ExpectStatus,
			// Two failed probes in a row, not Caddy's one: a reload cancels the old config's probe
			// in flight, and Caddy counts that as a failure (TestStopAndReloadLeaveNothingBehind
			// saw a 503 "no healthy upstream" from it).
			Fails: 2,
		}
	}

	if b := cfg.Breaker; b != nil {
		s.breakers = make(map[string]*breaker, len(h.Upstreams))
		for _, u := range h.Upstreams {
			s.breakers[u.Dial] = &breaker{threshold: int64(b.Failures), cooldown: durationOr(b.Cooldown, 10*time.Second)}
		}
		tt.record = s.recordOutcome
	}

	if err := h.Provision(ctx); err != nil {
		return nil, fmt.Errorf("service %q: provisioning reverse proxy: %w", cfg.Name, err)
	}
	if s.breakers != nil {
		h.LoadBalancing.SelectionPolicy = &breakerSelector{inner: h.LoadBalancing.SelectionPolicy, breakers: s.breakers}
	}
	s.proxy = h
	provisioned = true
	if cfg.MinIdle > 0 {
		s.warmUp(ctx, cfg.Upstreams)
	}
	return s, nil
}

// warmUp opens MinIdle keep-alive connections to each upstream in the
// background; it ends with the config's context.
func (s *Service) warmUp(ctx caddy.Context, upstreams []string) {
	path := "/"
	if s.cfg.Health != nil {
		path = s.cfg.Health.Path
	}
	client := &http.Client{Transport: s.transport.Transport, Timeout: s.timeout}
	for _, u := range upstreams {
		go func() {
			defer func() {
				if v := recover(); v != nil {
					s.logger.Error("warm-up panicked", zap.String("service", s.Name), zap.Any("panic", v))
				}
			}()
			if err := s.conns.WarmUp(ctx, client, strings.TrimSuffix(u, "/")+path, s.cfg.MinIdle); err != nil {
				s.logger.Warn("opening warm connections failed", zap.String("service", s.Name), zap.Error(err))
			}
		}()
	}
}

// buildTransport provisions Caddy's HTTP transport for the service, taking
// the user's `proxy { transport http {...} }` settings when present, and
// wraps its dialer so open connections are counted from real state.
func (s *Service) buildTransport(ctx caddy.Context, h *reverseproxy.Handler, scheme string) (*reverseproxy.HTTPTransport, error) {
	t := new(reverseproxy.HTTPTransport)
	if h.TransportRaw != nil {
		var probe struct {
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal(h.TransportRaw, &probe); err != nil {
			return nil, err
		}
		if probe.Protocol != "http" {
			return nil, fmt.Errorf("only the http transport is supported, not %q", probe.Protocol)
		}
		if err := json.Unmarshal(h.TransportRaw, t); err != nil {
			return nil, err
		}
	}
	if t.DialTimeout == 0 {
		t.DialTimeout = caddy.Duration(durationOr(s.cfg.DialTimeout, DefaultDialTimeout))
	}
	if t.KeepAlive == nil {
		t.KeepAlive = new(reverseproxy.KeepAlive)
	}
	if t.KeepAlive.MaxIdleConnsPerHost == 0 {
		// Caddy's default of 32 idle connections per host costs throughput
		// under many concurrent clients; idle sockets are cheap.
		t.KeepAlive.MaxIdleConnsPerHost = max(128, s.cfg.MaxConns, s.cfg.MinIdle)
	}
	if t.MaxResponseHeaderSize == 0 {
		// Go's default is 10 MB of response head per answer, every byte of
		// which the gateway would hold and pass on; no API needs more than
		// net/http's server accepts from its own clients (1 MiB).
		// `transport http { max_response_header <size> }` overrides it.
		t.MaxResponseHeaderSize = DefaultMaxResponseHeader
	}
	if scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	if t.TLS == nil && len(t.Versions) == 0 {
		// Cleartext: Caddy's default versions (1.1 and 2) speak HTTP/1.1 to an http:// upstream
		// anyway (HTTP/2 without TLS is "h2c", asked for by name), but "2" would still build an
		// HTTP/2 transport per service that never carries a request.
		t.Versions = []string{"1.1"}
	}
	if err := t.Provision(ctx); err != nil {
		return nil, err
	}
	if t.Transport != nil && t.Transport.DialContext != nil {
		t.Transport.DialContext = s.conns.WrapDial(t.Transport.DialContext)
	}
	return t, nil
}

// Cleanup releases what New provisioned: the reverse proxy's upstream
// registrations and connections, and the transport's idle connections.
func (s *Service) Cleanup() error {
	var errs []error
	if s.proxy != nil {
		errs = append(errs, s.proxy.Cleanup())
	}
	if s.transport != nil {
		errs = append(errs, s.transport.Cleanup())
	}
	if s.cred != nil {
		s.cred.Close()
	}
	if s.limiterKey != "" {
		_, _ = limiters.Delete(s.limiterKey)
	}
	return errors.Join(errs...)
}

// BasePath is the path the service's upstream URLs put in front of the
// request path, escaped and without a trailing slash ("" for none).
func (s *Service) BasePath() string { return s.basePath }

// Credential reports the state of the service's credential for the admin
// API (kind, ok/refreshing/failing, expiry), or nil when the service
// forwards the client's own Authorization. Never the token itself.
func (s *Service) Credential() *auth.State {
	if s.cred == nil {
		return nil
	}
	st := s.cred.State()
	return &st
}

// newCredential builds the source of the service's bearer token: a static
// token (placeholders resolved now), a file re-read when it changes, or an
// OAuth2 client-credentials grant.
func newCredential(cfg *Config, logger *zap.Logger) (auth.Source, error) {
	if cfg.OAuth2 == nil && cfg.TokenFile == "" && cfg.Token == "" {
		return nil, nil
	}
	logger = logger.With(zap.String("service", cfg.Name))
	switch {
	case cfg.OAuth2 != nil:
		o := cfg.OAuth2
		secret := ""
		if o.ClientSecret != "" {
			secret = caddy.NewReplacer().ReplaceKnown(o.ClientSecret, "")
			if secret == "" {
				return nil, fmt.Errorf("oauth2 client_secret resolves to an empty value (is its environment variable set?)")
			}
		}
		src, err := auth.OAuth2(auth.OAuth2Config{
			TokenURL: o.TokenURL, ClientID: o.ClientID, ClientSecret: secret, ClientSecretFile: o.ClientSecretFile,
			Scopes: o.Scopes, Audience: o.Audience, Timeout: time.Duration(o.Timeout),
		}, logger.Named("oauth2"))
		if err != nil {
			return nil, fmt.Errorf("oauth2: %w", err)
		}
		return src, nil
	case cfg.TokenFile != "":
		src, err := auth.File(cfg.TokenFile, time.Second, logger.Named("token_file"))
		if err != nil {
			return nil, fmt.Errorf("token_file: %w", err)
		}
		return src, nil
	default: // cfg.Token != ""
		tok := caddy.NewReplacer().ReplaceKnown(cfg.Token, "")
		if tok == "" {
			// never echo the configured value: it may be a literal secret
			return nil, fmt.Errorf("token resolves to an empty value (is its environment variable set?)")
		}
		if strings.ContainsAny(tok, "\r\n") {
			return nil, fmt.Errorf("token contains a line break")
		}
		if tok == cfg.Token {
			// no placeholder: the secret itself is in the config
			logger.Warn("the token is written literally in the config, where Caddy's GET /config/ shows it; use {env.NAME} or token_file")
		}
		return auth.Static(tok), nil
	}
}

// dialAddress turns an upstream URL into the host:port Caddy dials.
func dialAddress(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func durationOr(d caddy.Duration, def time.Duration) time.Duration {
	if d > 0 {
		return time.Duration(d)
	}
	return def
}

// nopNext terminates the reverse proxy's middleware chain: the gateway is
// always the last handler for a routed request.
var nopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// Healthy reports whether at least one upstream of the service can take a
// request (healthy by active and passive checks, under its own limits, its
// circuit not open).
func (s *Service) Healthy() bool {
	now := time.Now()
	for _, u := range s.proxy.Upstreams {
		if u.Available() && (s.breakers == nil || s.breakers[u.Dial].available(now)) {
			return true
		}
	}
	return false
}

// Targets reports each upstream's state for the admin API. Only the dial
// address is shown: never a token or header.
func (s *Service) Targets() []TargetState {
	now := time.Now()
	out := make([]TargetState, 0, len(s.proxy.Upstreams))
	for _, u := range s.proxy.Upstreams {
		ts := TargetState{
			Address:     u.String(),
			Healthy:     u.Healthy(),
			Available:   u.Available(),
			NumRequests: u.Host.NumRequests(),
			Fails:       u.Host.Fails(),
		}
		if b := s.breakers[u.Dial]; b != nil {
			ts.Breaker = b.state(now)
			ts.Available = ts.Available && b.available(now)
			b.mu.Lock()
			ts.LastError = b.lastError
			b.mu.Unlock()
		}
		out = append(out, ts)
	}
	return out
}

// EachTarget calls fn with each upstream's dial address and health,
// without allocating (the gauge updater runs it every second).
func (s *Service) EachTarget(fn func(addr string, healthy bool)) {
	for _, u := range s.proxy.Upstreams {
		fn(u.Dial, u.Healthy())
	}
}

// TargetState is one upstream's health as the admin API shows it.
type TargetState struct {
	Address     string `json:"address"`
	Healthy     bool   `json:"healthy"`
	Available   bool   `json:"available"`
	NumRequests int    `json:"num_requests"`
	Fails       int    `json:"fails"`
	// Breaker is the circuit state (closed, open, half-open) when the
	// service has a breaker; LastError its last failure (no addresses).
	Breaker   string `json:"breaker,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// PoolStats is a service's admission and connection state for the admin API.
type PoolStats struct {
	Admission   pool.LimiterStats `json:"admission"`
	Connections pool.ConnStats    `json:"connections"`
	Retries     int64             `json:"retries"`
	MaxConns    int               `json:"max_conns"`
	MaxPending  int               `json:"max_pending"`
}

// PoolStats reports the service's admission queue and connections.
func (s *Service) PoolStats() PoolStats {
	return PoolStats{
		Admission:   s.limiter.Stats(),
		Connections: s.conns.Stats(),
		Retries:     s.retried.Load(),
		MaxConns:    s.cfg.MaxConns,
		MaxPending:  s.cfg.MaxPending,
	}
}
