package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-gateway/caddy-gateway/cache"
	"github.com/caddy-gateway/caddy-gateway/internal/cfgparse"
)

// CacheConfig configures the response cache shared by all services of a
// gateway. Sizes are bytes.
type CacheConfig struct {
	// MaxSize bounds the bytes held by cached entries. Default 256 MiB.
	MaxSize int64 `json:"max_size,omitempty"`
	// MaxItemSize: larger answers are streamed through, not stored. Default 1 MiB, or MaxSize when
	// that is smaller.
	MaxItemSize int64 `json:"max_item_size,omitempty"`
	// DefaultTTL is the freshness given to storable answers that carry no
	// freshness information of their own. Default 0: such answers are not
	// reused without revalidation, as RFC 9111 expects.
	DefaultTTL caddy.Duration `json:"default_ttl,omitempty"`
	// StaleWhileRevalidate serves a stale entry at once for this long after
	// it expired, refreshing it in the background.
	StaleWhileRevalidate caddy.Duration `json:"stale_while_revalidate,omitempty"`
	// StaleIfError serves a stale entry for this long after it expired
	// when the upstream fails or answers 5xx.
	StaleIfError caddy.Duration `json:"stale_if_error,omitempty"`
	// Keys shape the cache key per service (service name → rules; "*" for
	// every service without its own). Default: the whole path and query.
	Keys map[string]*CacheKeyConfig `json:"keys,omitempty"`
	// TagHeaders are the answer fields whose tags (separated by commas or
	// white space) index the stored answer, for DELETE /gateway/cache?tag=.
	// Default: Surrogate-Key and Cache-Tag.
	TagHeaders []string `json:"tag_headers,omitempty"`
	// KeepTagHeaders passes the tag fields on to clients. Default false: they
	// are removed from every answer of a gateway with a cache.
	KeepTagHeaders bool `json:"keep_tag_headers,omitempty"`
	// Redis adds a shared second tier that several Caddy instances use:
	// local miss → Redis → upstream; purges reach every instance.
	Redis *RedisConfig `json:"redis,omitempty"`
}

// UnmarshalCaddyfile sets up the cache from the gateway's `cache` block.
// Syntax:
//
//	cache {
//		max_size               <size>
//		max_item_size          <size>
//		default_ttl            <duration>
//		stale_while_revalidate <duration>
//		stale_if_error         <duration>
//		key [<service>] {
//			<see CacheKeyConfig>
//		}
//		tag_headers <field>...
//		keep_tag_headers
//		redis <url> {
//			<see RedisConfig>
//		}
//	}
func (c *CacheConfig) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "cache"
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "max_size":
			err = cfgparse.Size(d, &c.MaxSize)
		case "max_item_size":
			err = cfgparse.Size(d, &c.MaxItemSize)
		case "default_ttl":
			err = cfgparse.Duration(d, &c.DefaultTTL)
		case "stale_while_revalidate":
			err = cfgparse.Duration(d, &c.StaleWhileRevalidate)
		case "stale_if_error":
			err = cfgparse.Duration(d, &c.StaleIfError)
		case "key":
			err = c.unmarshalKey(d)
		case "tag_headers":
			fields := d.RemainingArgs()
			if len(fields) == 0 {
				return d.ArgErr()
			}
			for _, f := range fields {
				if !validFieldName(f) {
					return d.Errf("cache: tag_headers: %q is not a header field name", f)
				}
				c.TagHeaders = append(c.TagHeaders, http.CanonicalHeaderKey(f))
			}
		case "keep_tag_headers":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.KeepTagHeaders = true
		case "redis":
			if c.Redis != nil {
				return d.Err("cache: redis declared twice")
			}
			c.Redis = new(RedisConfig)
			err = c.Redis.UnmarshalCaddyfile(d.NewFromNextSegment())
		default:
			return d.Errf("cache: unknown subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Validate rejects a cache config that cannot work, naming the field.
// services holds the names the gateway declares.
func (c *CacheConfig) Validate(services map[string]bool) error {
	if c.MaxSize < 0 || c.MaxItemSize < 0 || c.DefaultTTL < 0 || c.StaleWhileRevalidate < 0 || c.StaleIfError < 0 {
		return fmt.Errorf("cache: sizes and durations must not be negative")
	}
	for _, f := range c.TagHeaders {
		if !validFieldName(f) {
			return fmt.Errorf("cache: tag_headers: %q is not a header field name", f)
		}
	}
	for svc, k := range c.Keys {
		if svc != AllServices && !services[svc] {
			return fmt.Errorf("cache: key for service %q, which is not declared", svc)
		}
		if err := k.rules().Validate(); err != nil {
			return fmt.Errorf("cache: key of service %q: %w", svc, err)
		}
	}
	if c.MaxSize > 0 && c.MaxItemSize > c.MaxSize {
		return fmt.Errorf("cache: max_item_size (%d) exceeds max_size (%d)", c.MaxItemSize, c.MaxSize)
	}
	if c.Redis != nil {
		return c.Redis.Validate()
	}
	return nil
}

// options translates the config into the cache package's options for a
// gateway with the given services; the caller adds the collaborators
// (runner, detach, logger).
func (c *CacheConfig) options(services []string) cache.Options {
	return cache.Options{
		Keys:                 c.keyRules(services),
		TagHeaders:           c.tagHeaders(),
		Redis:                c.Redis.options(),
		MaxSize:              c.MaxSize,
		MaxItemSize:          c.MaxItemSize,
		DefaultTTL:           time.Duration(c.DefaultTTL),
		StaleWhileRevalidate: time.Duration(c.StaleWhileRevalidate),
		StaleIfError:         time.Duration(c.StaleIfError),
	}
}

// tagHeaders are the canonical tag fields (nil: the cache's defaults).
func (c *CacheConfig) tagHeaders() []string {
	if len(c.TagHeaders) == 0 {
		return nil
	}
	out := make([]string, len(c.TagHeaders))
	for i, f := range c.TagHeaders {
		out[i] = http.CanonicalHeaderKey(f)
	}
	return out
}

// strippedHeaders are the fields removed from every answer to clients: the
// tag fields, unless KeepTagHeaders.
func (c *CacheConfig) strippedHeaders() []string {
	if c.KeepTagHeaders {
		return nil
	}
	if f := c.tagHeaders(); f != nil {
		return f
	}
	return cache.DefaultTagHeaders
}

// validFieldName reports whether f is an HTTP field name (RFC 9110 token).
func validFieldName(f string) bool {
	if f == "" {
		return false
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", rune(c)) {
			return false
		}
	}
	return true
}

// Interface guard
var _ caddyfile.Unmarshaler = (*CacheConfig)(nil)
