// Package upstream turns one `service` block of the gateway into a forwarding
// path built on Caddy's own reverse proxy: a provisioned reverseproxy.Handler
// (its transport, load balancing, active and passive health checks, header
// hygiene and streaming) plus what it lacks for an API gateway: per-service
// token injection, a whole-exchange timeout, admission control, exponential
// backoff retries for idempotent requests and JSON-mappable errors.
package upstream

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Defaults applied by Provision when a field is left zero.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultDialTimeout  = 5 * time.Second
	DefaultQueueTimeout = time.Second
	DefaultRetryBase    = 50 * time.Millisecond
	DefaultRetryCap     = time.Second
	// DefaultMaxRetryBody is the largest request body buffered so that
	// a retry can replay it; larger bodies are streamed and never retried.
	DefaultMaxRetryBody = 64 << 10
	// DefaultMaxResponseHeader bounds an upstream answer's head (status
	// line and fields) unless the proxy's `transport http` sets
	// max_response_header: a larger one is a 502.
	DefaultMaxResponseHeader = 1 << 20
)

// Config is one service of the gateway: a name (the first path segment after
// the prefix), its upstream URLs and how to reach them. It is the JSON form of
// a Caddyfile `service` block.
type Config struct {
	// Name is the path segment that selects this service: /api/{name}/...
	// It must be non-empty and must not contain '/'.
	Name string `json:"name"`

	// Upstreams are the base URLs requests are forwarded to, e.g.
	// "http://127.0.0.1:9001" or "https://api.example.com/v2". All must share
	// one scheme and one base path; the path of the request after the service
	// segment is appended to that base path.
	Upstreams []string `json:"upstreams"`

	// Token, when set, replaces the client's Authorization header with
	// "Bearer <token>" on requests to this service only. Placeholders such as
	// {env.USERS_TOKEN} are resolved at provision time, so the JSON config
	// (and `caddy adapt`) only ever shows the placeholder.
	Token string `json:"token,omitempty"`

	// TokenFile is the alternative to Token: a file read at provision time
	// whose content (surrounding whitespace trimmed) is the bearer token.
	TokenFile string `json:"token_file,omitempty"`

	// OAuth2 obtains the bearer token with the OAuth2 client-credentials
	// grant, caches it, refreshes it before it expires and after an
	// upstream 401. Mutually exclusive with Token and TokenFile.
	OAuth2 *OAuth2Config `json:"oauth2,omitempty"`

	// Timeout bounds the whole upstream exchange (queueing, retries and the
	// response body included). Past it the client gets 504. Default 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// DialTimeout bounds connecting to one upstream. Default 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// Retries is how many times an idempotent request (GET, HEAD, OPTIONS,
	// PUT, DELETE, or any request carrying Idempotency-Key) is retried after a
	// connection error or a 502/503/504 answer, with exponential backoff and
	// full jitter, within Timeout. Default 0.
	Retries int `json:"retries,omitempty"`

	// RetryBackoffBase is the first backoff step (doubled per retry); default 50ms.
	RetryBackoffBase caddy.Duration `json:"retry_backoff_base,omitempty"`
	// RetryBackoffCap caps a single backoff wait; default 1s.
	RetryBackoffCap caddy.Duration `json:"retry_backoff_cap,omitempty"`

	// MaxConns is the most requests in flight to this service at once;
	// 0 means unlimited. It also caps the connections per upstream host.
	MaxConns int `json:"max_conns,omitempty"`

	// MaxPending is how many requests may wait for a slot when MaxConns are
	// in flight; past it the gateway answers 503 with Retry-After at once.
	// 0 means no waiting. Only meaningful with MaxConns.
	MaxPending int `json:"max_pending,omitempty"`

	// MinIdle opens this many keep-alive connections to each upstream when
	// the service is provisioned (probing the health path, else "/"), so
	// the first requests after a start or reload do not pay for dialing.
	MinIdle int `json:"min_idle,omitempty"`

	// Breaker opens the circuit to one upstream after consecutive failures:
	// it takes no requests for the cool-down, then one probe request
	// (half-open) closes it again on success or reopens it on failure.
	Breaker *BreakerConfig `json:"breaker,omitempty"`

	// QueueTimeout is how long a request may wait in the queue before it is
	// answered 503. Default 1s.
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`

	// Health enables active health checks of every upstream URL.
	Health *HealthConfig `json:"health,omitempty"`

	// LB is the load-balancing policy across upstreams, one of Caddy's
	// selection policies: round_robin (default), least_conn, random, first,
	// ip_hash, uri_hash, header, cookie...
	LB string `json:"lb,omitempty"`

	// Proxy holds any extra reverse_proxy configuration (transport,
	// header_up/down, passive health, buffering...). The gateway fills in
	// upstreams, host header and timeouts on top of it.
	Proxy *reverseproxy.Handler `json:"proxy,omitempty"`
}

// OAuth2Config is the client-credentials grant a service's token comes from.
type OAuth2Config struct {
	// TokenURL is the token endpoint.
	TokenURL string `json:"token_url"`
	// ClientID identifies the gateway to the token endpoint.
	ClientID string `json:"client_id"`
	// ClientSecret is the client's secret; use a placeholder such as
	// {env.BILLING_SECRET}, resolved at provision.
	ClientSecret string `json:"client_secret,omitempty"`
	// ClientSecretFile is the alternative: a file re-read before each fetch.
	ClientSecretFile string `json:"client_secret_file,omitempty"`
	// Scopes requested, optional.
	Scopes []string `json:"scopes,omitempty"`
	// Audience, optional, sent as the form value "audience".
	Audience string `json:"audience,omitempty"`
	// Timeout of one token fetch. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// BreakerConfig is the per-upstream circuit breaker of a service.
type BreakerConfig struct {
	// Failures is how many consecutive failed exchanges (connection errors,
	// 500/502/503/504 answers) open the circuit to an upstream.
	Failures int `json:"failures"`
	// Cooldown is how long an open circuit stays open before its one
	// half-open probe. Default 10s.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`
}

// HealthConfig configures active health checks for a service's upstreams.
type HealthConfig struct {
	// Path is the URI probed on each upstream, e.g. "/health".
	Path string `json:"path"`
	// Interval between probes. Default 10s.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Timeout of one probe. Default 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// ExpectStatus is the status a healthy upstream answers; default any 2xx.
	ExpectStatus int `json:"expect_status,omitempty"`
}

// ValidateName reports whether name can be a service name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("service name is empty")
	case strings.ContainsAny(name, "/\\?#%"):
		return fmt.Errorf("service name %q must not contain '/', '\\', '?', '#' or '%%'", name)
	case name == "." || name == "..":
		return fmt.Errorf("service name %q is a dot-segment", name)
	}
	return nil
}

// ParseUpstream checks one upstream URL and returns it parsed. Only http and
// https with a host and without query or fragment are accepted.
func ParseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("upstream %q: missing host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("upstream %q: must not carry a query, fragment or user info", raw)
	}
	return u, nil
}

// Validate checks the service config without touching the network or files.
func (c *Config) Validate() error {
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if len(c.Upstreams) == 0 {
		return fmt.Errorf("service %q: missing upstream URL", c.Name)
	}
	var scheme, base string
	for i, raw := range c.Upstreams {
		u, err := ParseUpstream(raw)
		if err != nil {
			return fmt.Errorf("service %q: %w", c.Name, err)
		}
		p := strings.TrimSuffix(u.EscapedPath(), "/")
		if i == 0 {
			scheme, base = u.Scheme, p
			continue
		}
		if u.Scheme != scheme || p != base {
			return fmt.Errorf("service %q: all upstreams must share scheme and base path (%s://...%s vs %q)", c.Name, scheme, base, raw)
		}
	}
	if c.Token != "" && c.TokenFile != "" {
		return fmt.Errorf("service %q: token and token_file are mutually exclusive", c.Name)
	}
	if o := c.OAuth2; o != nil {
		if c.Token != "" || c.TokenFile != "" {
			return fmt.Errorf("service %q: oauth2 and token/token_file are mutually exclusive", c.Name)
		}
		u, err := url.Parse(o.TokenURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("service %q: oauth2 token_url %q must be an http(s) URL", c.Name, o.TokenURL)
		}
		if o.ClientID == "" {
			return fmt.Errorf("service %q: oauth2 needs client_id", c.Name)
		}
		if (o.ClientSecret == "") == (o.ClientSecretFile == "") {
			return fmt.Errorf("service %q: oauth2 needs exactly one of client_secret and client_secret_file", c.Name)
		}
		if o.Timeout < 0 {
			return fmt.Errorf("service %q: oauth2 timeout must not be negative", c.Name)
		}
	}
	if b := c.Breaker; b != nil && (b.Failures < 1 || b.Cooldown < 0) {
		return fmt.Errorf("service %q: breaker needs failures >= 1 and a non-negative cooldown", c.Name)
	}
	for field, v := range map[string]int{"retries": c.Retries, "max_conns": c.MaxConns, "max_pending": c.MaxPending, "min_idle": c.MinIdle} {
		if v < 0 {
			return fmt.Errorf("service %q: %s must not be negative", c.Name, field)
		}
	}
	for field, d := range map[string]caddy.Duration{"timeout": c.Timeout, "dial_timeout": c.DialTimeout, "queue_timeout": c.QueueTimeout,
		"retry_backoff_base": c.RetryBackoffBase, "retry_backoff_cap": c.RetryBackoffCap} {
		if d < 0 {
			return fmt.Errorf("service %q: %s must not be negative", c.Name, field)
		}
	}
	if c.MaxPending > 0 && c.MaxConns == 0 {
		return fmt.Errorf("service %q: max_pending needs max_conns", c.Name)
	}
	if h := c.Health; h != nil {
		if !strings.HasPrefix(h.Path, "/") {
			return fmt.Errorf("service %q: health path %q must start with '/'", c.Name, h.Path)
		}
		if h.Interval < 0 || h.Timeout < 0 {
			return fmt.Errorf("service %q: health interval and timeout must not be negative", c.Name)
		}
	}
	if p := c.Proxy; p != nil {
		if len(p.Upstreams) > 0 || p.DynamicUpstreamsRaw != nil {
			return fmt.Errorf("service %q: proxy block must not declare upstreams (list them after the service name)", c.Name)
		}
		if p.Rewrite != nil {
			return fmt.Errorf("service %q: proxy block must not rewrite (the gateway sets the upstream path)", c.Name)
		}
	}
	return nil
}
