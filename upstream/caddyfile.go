package upstream

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-gateway/caddy-gateway/internal/cfgparse"
)

// UnmarshalCaddyfile sets up the service from a `service` block of the
// gateway directive. Syntax:
//
//	service <name> <url...> {
//		token         <value>          # e.g. {env.USERS_TOKEN}
//		token_file    <path>
//		oauth2 {
//			token_url          <url>
//			client_id          <id>
//			client_secret      <value>
//			client_secret_file <path>
//			scopes             <scope...>
//			audience           <value>
//			timeout            <duration>
//		}
//		timeout       <duration>
//		dial_timeout  <duration>
//		retries       <n>
//		retry_backoff <base> [<cap>]
//		max_conns     <n>
//		max_pending   <n>
//		queue_timeout <duration>
//		min_idle      <n>
//		breaker       <failures> [<cooldown>]
//		health        <path> [<interval> [<timeout>]]
//		health_status <code>
//		lb            <policy>
//		proxy {
//			<reverse_proxy subdirectives>
//		}
//	}
//
// d must hold this block alone (Dispenser.NewFromNextSegment). The finished
// config is checked with Validate, the one check of a service, so that a
// Caddyfile error names the line where the service became invalid.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "service"
	if !d.NextArg() {
		return d.Err("service: missing name")
	}
	c.Name = d.Val()
	c.Upstreams = append(c.Upstreams, d.RemainingArgs()...)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := c.unmarshalSubdirective(d); err != nil {
			return err
		}
	}
	if err := c.Validate(); err != nil {
		return d.WrapErr(err) // at the block's last token, where the conflict is complete
	}
	return nil
}

func (c *Config) unmarshalSubdirective(d *caddyfile.Dispenser) error {
	switch d.Val() {
	case "token":
		return cfgparse.String(d, &c.Token)
	case "token_file":
		return cfgparse.String(d, &c.TokenFile)
	case "oauth2":
		if c.OAuth2 != nil {
			return d.Err("oauth2 block declared twice")
		}
		c.OAuth2 = new(OAuth2Config)
		return c.OAuth2.UnmarshalCaddyfile(d.NewFromNextSegment())
	case "timeout":
		return cfgparse.Duration(d, &c.Timeout)
	case "dial_timeout":
		return cfgparse.Duration(d, &c.DialTimeout)
	case "retries":
		return cfgparse.Int(d, &c.Retries)
	case "retry_backoff":
		args := d.RemainingArgs()
		if len(args) < 1 || len(args) > 2 {
			return d.ArgErr()
		}
		if err := cfgparse.DurationArg(d, args[0], &c.RetryBackoffBase); err != nil {
			return err
		}
		if len(args) == 2 {
			return cfgparse.DurationArg(d, args[1], &c.RetryBackoffCap)
		}
	case "max_conns":
		return cfgparse.Int(d, &c.MaxConns)
	case "max_pending":
		return cfgparse.Int(d, &c.MaxPending)
	case "queue_timeout":
		return cfgparse.Duration(d, &c.QueueTimeout)
	case "min_idle":
		return cfgparse.Int(d, &c.MinIdle)
	case "breaker":
		args := d.RemainingArgs()
		if len(args) < 1 || len(args) > 2 {
			return d.ArgErr()
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 1 {
			return d.Errf("breaker: failures %q must be a positive integer", args[0])
		}
		c.Breaker = &BreakerConfig{Failures: n}
		if len(args) == 2 {
			return cfgparse.DurationArg(d, args[1], &c.Breaker.Cooldown)
		}
	case "health":
		args := d.RemainingArgs()
		if len(args) < 1 || len(args) > 3 {
			return d.ArgErr()
		}
		if !strings.HasPrefix(args[0], "/") {
			return d.Errf("health path %q must start with '/'", args[0])
		}
		if c.Health == nil {
			c.Health = new(HealthConfig)
		}
		c.Health.Path = args[0]
		if len(args) > 1 {
			if err := cfgparse.DurationArg(d, args[1], &c.Health.Interval); err != nil {
				return err
			}
		}
		if len(args) > 2 {
			return cfgparse.DurationArg(d, args[2], &c.Health.Timeout)
		}
	case "health_status":
		if c.Health == nil {
			return d.Err("health_status needs a health line before it")
		}
		return cfgparse.Int(d, &c.Health.ExpectStatus)
	case "lb":
		if err := cfgparse.String(d, &c.LB); err != nil {
			return err
		}
		if _, err := caddy.GetModule("http.reverse_proxy.selection_policies." + c.LB); err != nil {
			return d.Errf("lb: unknown policy %q", c.LB)
		}
	case "proxy":
		if c.Proxy != nil {
			return d.Err("proxy block declared twice")
		}
		if d.CountRemainingArgs() > 0 {
			return d.Err("proxy takes no arguments: upstreams follow the service name")
		}
		c.Proxy = new(reverseproxy.Handler)
		return c.Proxy.UnmarshalCaddyfile(d.NewFromNextSegment())
	default:
		return d.Errf("service %q: unknown subdirective %q", c.Name, d.Val())
	}
	return nil
}

// UnmarshalCaddyfile sets up the client-credentials grant from a service's
// `oauth2 { ... }` block (syntax under Config.UnmarshalCaddyfile).
func (o *OAuth2Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "oauth2"
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "token_url":
			err = cfgparse.String(d, &o.TokenURL)
		case "client_id":
			err = cfgparse.String(d, &o.ClientID)
		case "client_secret":
			err = cfgparse.String(d, &o.ClientSecret)
		case "client_secret_file":
			err = cfgparse.String(d, &o.ClientSecretFile)
		case "scopes":
			o.Scopes = append(o.Scopes, d.RemainingArgs()...)
			if len(o.Scopes) == 0 {
				return d.ArgErr()
			}
		case "audience":
			err = cfgparse.String(d, &o.Audience)
		case "timeout":
			err = cfgparse.Duration(d, &o.Timeout)
		default:
			return d.Errf("oauth2: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Config)(nil)
	_ caddyfile.Unmarshaler = (*OAuth2Config)(nil)
)
