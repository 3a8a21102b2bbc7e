package gateway

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"

	"github.com/caddy-gateway/caddy-gateway/handoff"
	"github.com/caddy-gateway/caddy-gateway/upstream"
)

func init() {
	httpcaddyfile.RegisterDirective("gateway", parseGatewayDirective)
	httpcaddyfile.RegisterDirectiveOrder("gateway", httpcaddyfile.Before, "reverse_proxy")
}

// parseGatewayDirective sets up the handler and its route. A path matcher
// such as /api/* gives the default prefix (/api); the gateway then matches
// that prefix itself (so /api answers a JSON 404 rather than falling
// through, and health_path is reachable). Another path matcher is widened
// to the prefix and health_path; a named matcher is kept as it is (widening
// it would AND a path with its other conditions).
func parseGatewayDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	var pathMatcher string
	if h.NextArg() {
		if tok := h.Val(); strings.HasPrefix(tok, "/") {
			pathMatcher = tok
		}
		h.Prev()
	}
	matcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	g := new(Gateway)
	if err := g.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	if pathMatcher != "" {
		prefix := strings.TrimSuffix(strings.TrimSuffix(pathMatcher, "*"), "/")
		simple := strings.HasSuffix(pathMatcher, "/*") && !strings.ContainsAny(prefix, "*?[%")
		if g.Prefix == "" && simple {
			g.Prefix = prefix
		}
		if simple && g.Prefix == prefix {
			// The gateway checks the prefix itself, on the raw path: Caddy's
			// path matcher compares a cleaned, case-folded path, so
			// /api/%2e%2e/admin would not match /api/* and would fall
			// through instead of being rejected. Requests outside the
			// prefix go to the next handler.
			matcherSet = nil
		} else {
			paths := []string{pathMatcher}
			if g.Prefix != "" {
				paths = append(paths, g.Prefix, g.Prefix+"/*")
			}
			if g.HealthPath != "" {
				paths = append(paths, g.HealthPath)
			}
			raw, err := json.Marshal(paths)
			if err != nil {
				return nil, err
			}
			matcherSet = caddy.ModuleMap{"path": raw}
		}
	}
	return append(h.NewRoute(matcherSet, g), handoffWrapper(h)...), nil
}

// handoffWrapper puts the gateway_handoff listener wrapper on the servers
// that serve a gateway, so that a reload loses no request (see package
// handoff). A site block can add a listener wrapper to its server, but
// Caddy's adapter replaces a server's wrappers with those of a global
// `servers` option when one applies — even one that sets no wrappers — so
// the wrapper is also put first in every `servers` option, followed by
// Caddy's `tls` placeholder when the option names none: Caddy terminates
// TLS first when a list names no `tls`, and the wrapper must see the raw
// connections (TLS still comes before the option's own wrappers, as it
// did). A site's own list gets the wrapper alone: several gateway sites can
// share a server, and Caddy allows one `tls` in a list; on an HTTPS server
// the wrapper then finds TLS under it and leaves the listener as it is.
func handoffWrapper(h httpcaddyfile.Helper) []httpcaddyfile.ConfigValue {
	wrapper := json.RawMessage(`{"wrapper":"gateway_handoff"}`)
	tlsPlaceholder := json.RawMessage(`{"wrapper":"tls"}`)
	if opts := reflect.ValueOf(h.Option("servers")); opts.Kind() == reflect.Slice {
		for i := range opts.Len() {
			field := opts.Index(i).FieldByName("ListenerWrappersRaw")
			raws, ok := field.Interface().([]json.RawMessage)
			if !ok || !field.CanSet() || slices.ContainsFunc(raws, isWrapper("gateway_handoff")) {
				continue
			}
			front := []json.RawMessage{wrapper}
			if !slices.ContainsFunc(raws, isWrapper("tls")) {
				front = append(front, tlsPlaceholder)
			}
			field.Set(reflect.ValueOf(append(front, raws...)))
		}
	}
	return []httpcaddyfile.ConfigValue{{Class: "listener_wrapper", Value: new(handoff.Wrapper)}}
}

// isWrapper matches a listener wrapper's JSON by its name.
func isWrapper(name string) func(json.RawMessage) bool {
	return func(raw json.RawMessage) bool {
		var w struct {
			Wrapper string `json:"wrapper"`
		}
		return json.Unmarshal(raw, &w) == nil && w.Wrapper == name
	}
}

// UnmarshalCaddyfile sets up the gateway from Caddyfile tokens. Syntax:
//
//	gateway [<matcher>] {
//		name     <name>
//		prefix   <path>
//		service  <name> <url...> {
//			token         <value>          # e.g. {env.USERS_TOKEN}
//			token_file    <path>
//			timeout       <duration>
//			dial_timeout  <duration>
//			retries       <n>
//			retry_backoff <base> [<cap>]
//			max_conns     <n>
//			max_pending   <n>
//			queue_timeout <duration>
//			min_idle      <n>
//			breaker       <failures> [<cooldown>]
//			health        <path> [<interval> [<timeout>]]
//			health_status <code>
//			lb            <policy>
//			proxy {
//				<reverse_proxy subdirectives>
//			}
//		}
//		cache {
//			max_size               <size>
//			max_item_size          <size>
//			default_ttl            <duration>
//			stale_while_revalidate <duration>
//			stale_if_error         <duration>
//			key [<service>] {
//				ignore_query <name|prefix*>...
//				keep_query   <name|prefix*>...
//				sort_query
//				header       <field>...
//			}
//			redis <url> {
//				password     <value>
//				pool_size    <n>
//				timeout      <duration>
//				dial_timeout <duration>
//				key_prefix   <string>
//			}
//		}
//		health_path           <path>
//		slow_request          <duration>
//		max_body              <size>
//		memory_interval       <duration>
//		memory_leak_threshold <size>
//	}
func (g *Gateway) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		switch d.Val() {
		case "name":
			if err := parseString(d, &g.Name); err != nil {
				return err
			}
		case "prefix":
			if err := parseString(d, &g.Prefix); err != nil {
				return err
			}
			if !strings.HasPrefix(g.Prefix, "/") {
				return d.Errf("prefix %q must start with '/'", g.Prefix)
			}
		case "service":
			svc, err := parseService(d)
			if err != nil {
				return err
			}
			if seen[svc.Name] {
				return d.Errf("service %q declared twice", svc.Name)
			}
			seen[svc.Name] = true
			g.Services = append(g.Services, svc)
		case "cache":
			if g.Cache != nil {
				return d.Err("cache block declared twice")
			}
			c, err := parseCache(d)
			if err != nil {
				return err
			}
			g.Cache = c
		case "health_path":
			if err := parseString(d, &g.HealthPath); err != nil {
				return err
			}
			if !strings.HasPrefix(g.HealthPath, "/") {
				return d.Errf("health_path %q must start with '/'", g.HealthPath)
			}
		case "slow_request":
			if err := parseDuration(d, &g.SlowRequest); err != nil {
				return err
			}
		case "max_body":
			if err := parseSize(d, &g.MaxBody); err != nil {
				return err
			}
		case "memory_interval":
			if err := parseDuration(d, &g.MemoryInterval); err != nil {
				return err
			}
		case "memory_leak_threshold":
			if err := parseSize(d, &g.MemoryLeakThreshold); err != nil {
				return err
			}
		default:
			return d.Errf("unknown gateway subdirective %q", d.Val())
		}
	}
	if len(g.Services) == 0 {
		return d.Err("gateway: declare at least one service")
	}
	return nil
}

// parseService parses `service NAME URL... { ... }`.
func parseService(d *caddyfile.Dispenser) (*upstream.Config, error) {
	if !d.NextArg() {
		return nil, d.Err("service: missing name")
	}
	c := &upstream.Config{Name: d.Val()}
	if err := upstream.ValidateName(c.Name); err != nil {
		return nil, d.Errf("service: %v", err)
	}
	for d.NextArg() {
		if _, err := upstream.ParseUpstream(d.Val()); err != nil {
			return nil, d.Errf("service %q: %v", c.Name, err)
		}
		c.Upstreams = append(c.Upstreams, d.Val())
	}
	if len(c.Upstreams) == 0 {
		return nil, d.Errf("service %q: missing upstream URL", c.Name)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "token":
			err = parseString(d, &c.Token)
		case "token_file":
			err = parseString(d, &c.TokenFile)
		case "oauth2":
			if c.OAuth2 != nil {
				return nil, d.Err("oauth2 block declared twice")
			}
			c.OAuth2, err = parseOAuth2(d)
		case "timeout":
			err = parseDuration(d, &c.Timeout)
		case "dial_timeout":
			err = parseDuration(d, &c.DialTimeout)
		case "retries":
			err = parseInt(d, &c.Retries)
		case "retry_backoff":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return nil, d.ArgErr()
			}
			if err := durationArg(d, args[0], &c.RetryBackoffBase); err != nil {
				return nil, err
			}
			if len(args) == 2 {
				err = durationArg(d, args[1], &c.RetryBackoffCap)
			}
		case "max_conns":
			err = parseInt(d, &c.MaxConns)
		case "max_pending":
			err = parseInt(d, &c.MaxPending)
		case "queue_timeout":
			err = parseDuration(d, &c.QueueTimeout)
		case "min_idle":
			err = parseInt(d, &c.MinIdle)
		case "breaker":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return nil, d.ArgErr()
			}
			n, e := strconv.Atoi(args[0])
			if e != nil || n < 1 {
				return nil, d.Errf("breaker: failures %q must be a positive integer", args[0])
			}
			c.Breaker = &upstream.BreakerConfig{Failures: n}
			if len(args) == 2 {
				err = durationArg(d, args[1], &c.Breaker.Cooldown)
			}
		case "health":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 3 {
				return nil, d.ArgErr()
			}
			if !strings.HasPrefix(args[0], "/") {
				return nil, d.Errf("health path %q must start with '/'", args[0])
			}
			if c.Health == nil {
				c.Health = new(upstream.HealthConfig)
			}
			c.Health.Path = args[0]
			if len(args) > 1 {
				if err := durationArg(d, args[1], &c.Health.Interval); err != nil {
					return nil, err
				}
			}
			if len(args) > 2 {
				err = durationArg(d, args[2], &c.Health.Timeout)
			}
		case "health_status":
			if c.Health == nil {
				return nil, d.Err("health_status needs a health line before it")
			}
			err = parseInt(d, &c.Health.ExpectStatus)
		case "lb":
			err = parseString(d, &c.LB)
			if err == nil {
				if _, e := caddy.GetModule("http.reverse_proxy.selection_policies." + c.LB); e != nil {
					return nil, d.Errf("lb: unknown policy %q", c.LB)
				}
			}
		case "proxy":
			if c.Proxy != nil {
				return nil, d.Err("proxy block declared twice")
			}
			if d.CountRemainingArgs() > 0 {
				return nil, d.Err("proxy takes no arguments: upstreams follow the service name")
			}
			rp := new(reverseproxy.Handler)
			if err := rp.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return nil, err
			}
			c.Proxy = rp
		default:
			return nil, d.Errf("service %q: unknown subdirective %q", c.Name, d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Token != "" && c.TokenFile != "" {
		return nil, d.Errf("service %q: token and token_file are mutually exclusive", c.Name)
	}
	if c.OAuth2 != nil && (c.Token != "" || c.TokenFile != "") {
		return nil, d.Errf("service %q: oauth2 and token/token_file are mutually exclusive", c.Name)
	}
	if err := c.Validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return c, nil
}

// parseOAuth2 parses a service's `oauth2 { ... }` block.
func parseOAuth2(d *caddyfile.Dispenser) (*upstream.OAuth2Config, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	o := new(upstream.OAuth2Config)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "token_url":
			err = parseString(d, &o.TokenURL)
		case "client_id":
			err = parseString(d, &o.ClientID)
		case "client_secret":
			err = parseString(d, &o.ClientSecret)
		case "client_secret_file":
			err = parseString(d, &o.ClientSecretFile)
		case "scopes":
			o.Scopes = append(o.Scopes, d.RemainingArgs()...)
			if len(o.Scopes) == 0 {
				return nil, d.ArgErr()
			}
		case "audience":
			err = parseString(d, &o.Audience)
		case "timeout":
			err = parseDuration(d, &o.Timeout)
		default:
			return nil, d.Errf("oauth2: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return o, nil
}

// parseCache parses the `cache { ... }` block.
func parseCache(d *caddyfile.Dispenser) (*CacheConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(CacheConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "max_size":
			err = parseSize(d, &c.MaxSize)
		case "max_item_size":
			err = parseSize(d, &c.MaxItemSize)
		case "default_ttl":
			err = parseDuration(d, &c.DefaultTTL)
		case "stale_while_revalidate":
			err = parseDuration(d, &c.StaleWhileRevalidate)
		case "stale_if_error":
			err = parseDuration(d, &c.StaleIfError)
		case "redis":
			if c.Redis != nil {
				return nil, d.Err("cache: redis declared twice")
			}
			c.Redis, err = parseRedis(d)
		case "key":
			err = c.unmarshalKey(d)
		default:
			return nil, d.Errf("cache: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// parseRedis parses `redis <url> { password, pool_size, timeout, dial_timeout, key_prefix }`.
func parseRedis(d *caddyfile.Dispenser) (*RedisConfig, error) {
	if !d.NextArg() {
		return nil, d.Err("redis: missing URL")
	}
	r := &RedisConfig{URL: d.Val()}
	if !strings.HasPrefix(r.URL, "{") && !strings.HasPrefix(r.URL, "redis://") && !strings.HasPrefix(r.URL, "rediss://") && !strings.HasPrefix(r.URL, "unix://") {
		return nil, d.Errf("redis: URL %q must start with redis://, rediss:// or unix://", r.URL)
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "password":
			err = parseString(d, &r.Password)
		case "pool_size":
			err = parseInt(d, &r.PoolSize)
		case "timeout":
			err = parseDuration(d, &r.Timeout)
		case "dial_timeout":
			err = parseDuration(d, &r.DialTimeout)
		case "key_prefix":
			err = parseString(d, &r.KeyPrefix)
		default:
			return nil, d.Errf("redis: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

func parseString(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: missing value", name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: too many arguments", name)
	}
	return nil
}

func parseInt(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var s string
	if err := parseString(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return d.Errf("%s: %q is not a non-negative integer", name, s)
	}
	*dst = n
	return nil
}

func parseDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := parseString(d, &s); err != nil {
		return err
	}
	return durationArg(d, s, dst)
}

func durationArg(d *caddyfile.Dispenser, s string, dst *caddy.Duration) error {
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur < 0 {
		return d.Errf("bad duration %q: want e.g. 500ms, 30s, 5m", s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

func parseSize(d *caddyfile.Dispenser, dst *int64) error {
	var s string
	if err := parseString(d, &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return d.Errf("bad size %q: want e.g. 512KiB, 64MiB", s)
	}
	*dst = int64(n)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Gateway)(nil)
