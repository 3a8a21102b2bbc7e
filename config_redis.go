package gateway

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-gateway/caddy-gateway/cache"
	"github.com/caddy-gateway/caddy-gateway/internal/cfgparse"
)

// RedisConfig is the shared Redis tier of the cache.
type RedisConfig struct {
	// URL of the server: redis://[user:pass@]host:port/db, rediss:// or
	// unix://. Placeholders such as {env.REDIS_URL} are resolved at provision.
	URL string `json:"url"`
	// Password, overriding the URL's; e.g. {env.REDIS_PASSWORD}.
	Password string `json:"password,omitempty"`
	// PoolSize of the client. Default 10 per GOMAXPROCS.
	PoolSize int `json:"pool_size,omitempty"`
	// Timeout is the most Redis may add to one request. Default 50ms; past
	// it, and while Redis is down, the gateway serves from the local tier
	// and the upstream, and reconnects by itself.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// DialTimeout of one connection, off the request path. Default 250ms.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// KeyPrefix of the keys and the purge channel; instances sharing a
	// cache must use the same one. Default "caddy-gateway".
	KeyPrefix string `json:"key_prefix,omitempty"`
}

// UnmarshalCaddyfile sets up the Redis tier from the cache's `redis` block.
// Syntax:
//
//	redis <url> {
//		password     <value>
//		pool_size    <n>
//		timeout      <duration>
//		dial_timeout <duration>
//		key_prefix   <string>
//	}
func (r *RedisConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "redis"
	if !d.NextArg() {
		return d.Err("redis: missing URL")
	}
	r.URL = d.Val()
	if !strings.HasPrefix(r.URL, "{") && !strings.HasPrefix(r.URL, "redis://") && !strings.HasPrefix(r.URL, "rediss://") && !strings.HasPrefix(r.URL, "unix://") {
		return d.Errf("redis: URL %q must start with redis://, rediss:// or unix://", r.URL)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "password":
			err = cfgparse.String(d, &r.Password)
		case "pool_size":
			err = cfgparse.Int(d, &r.PoolSize)
		case "timeout":
			err = cfgparse.Duration(d, &r.Timeout)
		case "dial_timeout":
			err = cfgparse.Duration(d, &r.DialTimeout)
		case "key_prefix":
			err = cfgparse.String(d, &r.KeyPrefix)
		default:
			return d.Errf("redis: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Validate rejects a Redis config that cannot work.
func (r *RedisConfig) Validate() error {
	if r.URL == "" || r.PoolSize < 0 || r.Timeout < 0 || r.DialTimeout < 0 {
		return fmt.Errorf("cache: redis needs a URL, and pool_size and timeouts must not be negative")
	}
	return nil
}

// options translates the config into the cache package's Redis options,
// resolving placeholders such as {env.REDIS_URL}; nil without a config.
func (r *RedisConfig) options() *cache.RedisOptions {
	if r == nil {
		return nil
	}
	repl := caddy.NewReplacer()
	return &cache.RedisOptions{
		URL:         repl.ReplaceKnown(r.URL, ""),
		Password:    repl.ReplaceKnown(r.Password, ""),
		PoolSize:    r.PoolSize,
		Timeout:     time.Duration(r.Timeout),
		DialTimeout: time.Duration(r.DialTimeout),
		KeyPrefix:   r.KeyPrefix,
	}
}

// Interface guard
var _ caddyfile.Unmarshaler = (*RedisConfig)(nil)
