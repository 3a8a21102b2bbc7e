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

// RedisConfig is the shared Redis tier of the cache: a standalone server
// (URL), a Redis Cluster (Cluster) or a primary found through Sentinel
// (SentinelMaster and Sentinels); exactly one of them.
type RedisConfig struct {
	// URL of the server: redis://[user:pass@]host:port/db, rediss:// or
	// unix://. Placeholders such as {env.REDIS_URL} are resolved at provision.
	URL string `json:"url,omitempty"`
	// Cluster lists seed nodes of a Redis Cluster (redis:// or rediss://
	// URLs, one scheme; credentials and TLS from the first); the others are
	// discovered, and slots, MOVED/ASK redirects and failovers followed.
	Cluster []string `json:"cluster,omitempty"`
	// SentinelMaster names the primary the Sentinels at Sentinels (URLs as
	// for Cluster) watch; the tier follows it through failovers.
	SentinelMaster string   `json:"sentinel_master,omitempty"`
	Sentinels      []string `json:"sentinels,omitempty"`
	// SentinelPassword authenticates to the sentinels themselves, when they
	// require it; e.g. {env.SENTINEL_PASSWORD}.
	SentinelPassword string `json:"sentinel_password,omitempty"`
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
//	redis [<url>] {
//		cluster      <url>...              # instead of <url>: seed nodes of a cluster
//		sentinel     <master> <url>...     # or: a primary through its sentinels
//		sentinel_password <value>
//		password     <value>
//		pool_size    <n>
//		timeout      <duration>
//		dial_timeout <duration>
//		key_prefix   <string>
//	}
func (r *RedisConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "redis"
	if d.NextArg() {
		r.URL = d.Val()
		if !strings.HasPrefix(r.URL, "{") && !strings.HasPrefix(r.URL, "redis://") && !strings.HasPrefix(r.URL, "rediss://") && !strings.HasPrefix(r.URL, "unix://") {
			return d.Errf("redis: URL %q must start with redis://, rediss:// or unix://", r.URL)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "cluster":
			r.Cluster = append(r.Cluster, d.RemainingArgs()...)
			if len(r.Cluster) == 0 {
				return d.Err("redis: cluster needs at least one seed URL")
			}
			err = nodeURLs(r.Cluster)
		case "sentinel":
			args := d.RemainingArgs()
			if len(args) < 2 || strings.Contains(args[0], "://") {
				return d.Err("redis: sentinel needs the master name, then at least one sentinel URL")
			}
			r.SentinelMaster, r.Sentinels = args[0], args[1:]
			err = nodeURLs(r.Sentinels)
		case "sentinel_password":
			err = cfgparse.String(d, &r.SentinelPassword)
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
			return d.WrapErr(err)
		}
	}
	if err := r.Validate(); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// nodeURLs checks the URLs of cluster or sentinel nodes: redis:// or
// rediss://, all with the same scheme (placeholders are checked when
// resolved, at provision).
func nodeURLs(urls []string) error {
	scheme := ""
	for _, u := range urls {
		if strings.HasPrefix(u, "{") {
			continue
		}
		s, _, _ := strings.Cut(u, "://")
		if s != "redis" && s != "rediss" {
			return fmt.Errorf("redis: node %q must be a redis:// or rediss:// URL", u)
		}
		if scheme != "" && s != scheme {
			return fmt.Errorf("redis: nodes mix %s:// and %s://: use one scheme for all", scheme, s)
		}
		scheme = s
	}
	return nil
}

// Validate rejects a Redis config that cannot work.
func (r *RedisConfig) Validate() error {
	topologies := 0
	for _, set := range []bool{r.URL != "", len(r.Cluster) > 0, r.SentinelMaster != "" || len(r.Sentinels) > 0} {
		if set {
			topologies++
		}
	}
	switch {
	case topologies == 0:
		return fmt.Errorf("redis: needs a URL, a cluster or a sentinel")
	case topologies > 1:
		return fmt.Errorf("redis: a URL, a cluster and a sentinel exclude each other")
	case (r.SentinelMaster == "") != (len(r.Sentinels) == 0):
		return fmt.Errorf("redis: sentinel needs the master name and at least one sentinel URL")
	case r.PoolSize < 0 || r.Timeout < 0 || r.DialTimeout < 0:
		return fmt.Errorf("redis: pool_size and timeouts must not be negative")
	}
	if err := nodeURLs(r.Cluster); err != nil {
		return err
	}
	return nodeURLs(r.Sentinels)
}

// options translates the config into the cache package's Redis options,
// resolving placeholders such as {env.REDIS_URL}; nil without a config.
func (r *RedisConfig) options() *cache.RedisOptions {
	if r == nil {
		return nil
	}
	repl := caddy.NewReplacer()
	resolve := func(urls []string) []string {
		out := make([]string, len(urls))
		for i, u := range urls {
			out[i] = repl.ReplaceKnown(u, "")
		}
		return out
	}
	return &cache.RedisOptions{
		URL:              repl.ReplaceKnown(r.URL, ""),
		Cluster:          resolve(r.Cluster),
		SentinelMaster:   r.SentinelMaster,
		Sentinels:        resolve(r.Sentinels),
		SentinelPassword: repl.ReplaceKnown(r.SentinelPassword, ""),
		Password:         repl.ReplaceKnown(r.Password, ""),
		PoolSize:         r.PoolSize,
		Timeout:          time.Duration(r.Timeout),
		DialTimeout:      time.Duration(r.DialTimeout),
		KeyPrefix:        r.KeyPrefix,
	}
}

// Interface guard
var _ caddyfile.Unmarshaler = (*RedisConfig)(nil)
