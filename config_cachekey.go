package gateway

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-gateway/caddy-gateway/cache"
	"github.com/caddy-gateway/caddy-gateway/upstream"
)

// AllServices is the Keys entry that applies to every service without one of its own.
const AllServices = "*"

// CacheKeyConfig shapes the cache key of one service's requests (CacheConfig.Keys). It changes the
// key only: requests still go upstream as the client sent them, so a parameter or field the key
// leaves out must not change the upstream's answer. Without one, the key is the whole path and query
// (plus the request fields the answer's Vary names, and the client's Authorization).
type CacheKeyConfig struct {
	// IgnoreQuery lists query parameters left out of the key: names, or prefixes ending in '*'
	// (utm_*); "*" alone leaves out the whole query. Default: none.
	IgnoreQuery []string `json:"ignore_query,omitempty"`
	// KeepQuery, when set, keeps only the parameters it matches (same patterns); IgnoreQuery still
	// applies to them. Default: every parameter.
	KeepQuery []string `json:"keep_query,omitempty"`
	// SortQuery orders the parameters by name, so ?b=1&a=2 and ?a=2&b=1 share an entry. Default
	// false: the order counts.
	SortQuery bool `json:"sort_query,omitempty"`
	// Headers are request header fields added to the key, for an upstream that answers by a field
	// it does not name in Vary (a tenant id, say): requests that differ in one never share an
	// entry; absent and empty differ. Default: none.
	Headers []string `json:"headers,omitempty"`
}

// UnmarshalCaddyfile parses the block of a `key [<service>]` line (the service argument is read by
// the caller):
//
//	key [<service>] {
//		ignore_query <name|prefix*>...
//		keep_query   <name|prefix*>...
//		sort_query
//		header       <field>...
//	}
func (k *CacheKeyConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "ignore_query":
			k.IgnoreQuery = append(k.IgnoreQuery, args...)
		case "keep_query":
			k.KeepQuery = append(k.KeepQuery, args...)
		case "header":
			k.Headers = append(k.Headers, args...)
		case "sort_query":
			if len(args) > 0 {
				return d.ArgErr()
			}
			k.SortQuery = true
			continue
		default:
			return d.Errf("cache key: unknown subdirective %q (want ignore_query, keep_query, sort_query or header)", opt)
		}
		if len(args) == 0 {
			return d.Errf("cache key: %s needs at least one argument", opt)
		}
	}
	if err := k.rules().Validate(); err != nil {
		return d.Errf("cache key: %v", err)
	}
	return nil
}

// rules converts the config for the cache package.
func (k *CacheKeyConfig) rules() *cache.KeyRules {
	if k == nil {
		return nil
	}
	return &cache.KeyRules{IgnoreQuery: k.IgnoreQuery, KeepQuery: k.KeepQuery, SortQuery: k.SortQuery, Headers: k.Headers}
}

// keyRules returns the cache key rules of each service: its own, or the AllServices entry.
func (c *CacheConfig) keyRules(services []string) map[string]*cache.KeyRules {
	if len(c.Keys) == 0 {
		return nil
	}
	out := make(map[string]*cache.KeyRules, len(services))
	for _, s := range services {
		k, ok := c.Keys[s]
		if !ok {
			k = c.Keys[AllServices]
		}
		if k != nil {
			out[s] = k.rules()
		}
	}
	return out
}

// unmarshalKey parses a `key [<service>] { ... }` line of the cache block into c.Keys.
func (c *CacheConfig) unmarshalKey(d *caddyfile.Dispenser) error {
	svc := AllServices
	if d.NextArg() {
		svc = d.Val()
		if svc == AllServices {
			return d.Err(`cache key: omit the service to apply to every service, rather than "*"`)
		}
		if err := upstream.ValidateName(svc); err != nil {
			return d.Errf("cache key: %v", err)
		}
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if _, dup := c.Keys[svc]; dup {
		if svc == AllServices {
			return d.Err("cache key: declared twice for every service")
		}
		return d.Errf("cache key: declared twice for service %q", svc)
	}
	k := new(CacheKeyConfig)
	if err := k.UnmarshalCaddyfile(d); err != nil {
		return err
	}
	if c.Keys == nil {
		c.Keys = map[string]*CacheKeyConfig{}
	}
	c.Keys[svc] = k
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*CacheKeyConfig)(nil)
