package gateway

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-gateway/caddy-gateway/handoff"
	"github.com/caddy-gateway/caddy-gateway/internal/cfgparse"
	"github.com/caddy-gateway/caddy-gateway/upstream"
)

func init() {
	httpcaddyfile.RegisterDirective("gateway", parseGatewayDirective)
	httpcaddyfile.RegisterDirectiveOrder("gateway", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterGlobalOption("gateway_handoff", parseHandoffOption)
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
	routes := h.NewRoute(matcherSet, g)
	if handoffOff, _ := h.Option("gateway_handoff").(bool); handoffOff {
		return routes, nil
	}
	return append(routes, handoffWrapper(h)...), nil
}

// parseHandoffOption parses the global option that turns the reload
// hand-over off:
//
//	{
//		gateway_handoff off
//	}
//
// With it off, the gateway directive adds no listener wrapper, so the
// servers are exactly as stock Caddy builds them (a reload then loses what
// stock Caddy loses). "on" is the default.
func parseHandoffOption(d *caddyfile.Dispenser, _ any) (any, error) {
	d.Next() // option name
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	var off bool
	switch d.Val() {
	case "off":
		off = true
	case "on":
	default:
		return nil, d.Errf("gateway_handoff: want on or off, not %q", d.Val())
	}
	if d.NextArg() || d.NextBlock(0) {
		return nil, d.ArgErr()
	}
	return off, nil
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
//			<see upstream.Config.UnmarshalCaddyfile>
//		}
//		cache {
//			<see CacheConfig.UnmarshalCaddyfile>
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
			if err := cfgparse.String(d, &g.Name); err != nil {
				return err
			}
		case "prefix":
			if err := cfgparse.String(d, &g.Prefix); err != nil {
				return err
			}
			if !strings.HasPrefix(g.Prefix, "/") {
				return d.Errf("prefix %q must start with '/'", g.Prefix)
			}
		case "service":
			svc := new(upstream.Config)
			if err := svc.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
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
			g.Cache = new(CacheConfig)
			if err := g.Cache.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
		case "health_path":
			if err := cfgparse.String(d, &g.HealthPath); err != nil {
				return err
			}
			if !strings.HasPrefix(g.HealthPath, "/") {
				return d.Errf("health_path %q must start with '/'", g.HealthPath)
			}
		case "slow_request":
			if err := cfgparse.Duration(d, &g.SlowRequest); err != nil {
				return err
			}
		case "max_body":
			if err := cfgparse.Size(d, &g.MaxBody); err != nil {
				return err
			}
		case "memory_interval":
			if err := cfgparse.Duration(d, &g.MemoryInterval); err != nil {
				return err
			}
		case "memory_leak_threshold":
			if err := cfgparse.Size(d, &g.MemoryLeakThreshold); err != nil {
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

// Interface guard
var _ caddyfile.Unmarshaler = (*Gateway)(nil)
