package cache

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// KeyRules shape the cache keys of one service's requests (Options.Keys). They change the key only:
// the request goes upstream as the client sent it, so a parameter left out of the key must not change
// the upstream's answer. The zero value keeps the default key (path and whole query).
type KeyRules struct {
	// IgnoreQuery lists query parameters left out of the key: a name, or a prefix ending in '*'
	// (utm_*); "*" alone leaves out every parameter.
	IgnoreQuery []string
	// KeepQuery, when set, keeps only the parameters it matches (same patterns); IgnoreQuery still
	// applies to those.
	KeepQuery []string
	// SortQuery orders the kept parameters by name, so ?b=1&a=2 and ?a=2&b=1 share an entry. Repeated
	// names keep their relative order (?a=1&a=2 and ?a=2&a=1 stay apart).
	SortQuery bool
	// Headers are request header fields whose values join the key (absent and empty differ), for an
	// upstream that answers by a header it does not list in Vary, such as a tenant id.
	Headers []string
}

// Validate reports the first malformed parameter pattern or header field name of k.
func (k *KeyRules) Validate() error {
	_, err := compileKeyRules(k)
	return err
}

// compileKeyRules validates rules and returns them ready for use: header names canonical, sorted and
// unique. A nil or empty rule set yields nil (the default key).
func compileKeyRules(k *KeyRules) (*KeyRules, error) {
	if k == nil || (len(k.IgnoreQuery) == 0 && len(k.KeepQuery) == 0 && !k.SortQuery && len(k.Headers) == 0) {
		return nil, nil
	}
	out := &KeyRules{IgnoreQuery: slices.Clone(k.IgnoreQuery), KeepQuery: slices.Clone(k.KeepQuery), SortQuery: k.SortQuery}
	for _, p := range slices.Concat(k.IgnoreQuery, k.KeepQuery) {
		name := strings.TrimSuffix(p, "*")
		if p == "" || strings.Contains(name, "*") || strings.ContainsAny(p, "&=#") {
			return nil, fmt.Errorf("bad query parameter pattern %q: want a name or a prefix ending in '*'", p)
		}
	}
	for _, h := range k.Headers {
		if h == "" || strings.ContainsAny(h, " \t:\r\n") {
			return nil, fmt.Errorf("bad header field name %q", h)
		}
		out.Headers = append(out.Headers, http.CanonicalHeaderKey(h))
	}
	slices.Sort(out.Headers)
	out.Headers = slices.Compact(out.Headers)
	return out, nil
}

// matchParam reports whether the parameter name matches one of the patterns.
func matchParam(patterns []string, name string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if p == name {
			return true
		}
	}
	return false
}

// keeps reports whether a query parameter, given raw (name[=value]), stays in the key.
func (k *KeyRules) keeps(param string) bool {
	name, _, _ := strings.Cut(param, "=")
	if strings.ContainsAny(name, "%+") {
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
	}
	if len(k.KeepQuery) > 0 && !matchParam(k.KeepQuery, name) {
		return false
	}
	return !matchParam(k.IgnoreQuery, name)
}

// query returns the raw query as it enters the key. It returns raw itself (no allocation) when the
// rules leave it as it is.
func (k *KeyRules) query(raw string) string {
	if k == nil || raw == "" || (len(k.IgnoreQuery) == 0 && len(k.KeepQuery) == 0 && !k.SortQuery) {
		return raw
	}
	var stack [16]string
	params := stack[:0]
	changed := false
	for rest := raw; rest != ""; {
		var p string
		p, rest, _ = strings.Cut(rest, "&")
		if p == "" || !k.keeps(p) {
			changed = true
			continue
		}
		params = append(params, p)
	}
	if k.SortQuery && !slices.IsSortedFunc(params, compareParamNames) {
		slices.SortStableFunc(params, compareParamNames)
		changed = true
	}
	if !changed {
		return raw
	}
	return strings.Join(params, "&")
}

func compareParamNames(a, b string) int {
	an, _, _ := strings.Cut(a, "=")
	bn, _, _ := strings.Cut(b, "=")
	return strings.Compare(an, bn)
}

// keyQuery is the query of a request to service as it enters the key.
func (c *Cache) keyQuery(service, raw string) string {
	if k := c.keys[service]; k != nil {
		return k.query(raw)
	}
	return raw
}

// appendPrimaryKey appends r's primary key under service's rules (base key: host, service, path and
// key query; then the credential auth and the key header values) and returns it with the length of
// its base part. Lookups and stores build their keys here alike.
func (c *Cache) appendPrimaryKey(dst []byte, r *http.Request, service, auth string) ([]byte, int) {
	dst = appendBaseKey(dst, r.Host, service, pathOf(r), c.keyQuery(service, r.URL.RawQuery))
	baseLen := len(dst)
	dst = appendAuthKey(dst, auth)
	return c.appendKeyHeaders(dst, service, r.Header), baseLen
}

// appendKeyHeaders appends the header part of the primary key that service's rules ask for.
func (c *Cache) appendKeyHeaders(dst []byte, service string, h http.Header) []byte {
	if k := c.keys[service]; k != nil && len(k.Headers) > 0 {
		return appendHeaderValues(dst, 'H', k.Headers, h)
	}
	return dst
}

// keyURL is the upstream-relative path and key query of a request, in the form Purge prefixes are
// matched in (matchForm): what Entry.URL holds.
func keyURL(path, query string) string {
	if query != "" {
		return matchForm(path + "?" + query)
	}
	return matchForm(path)
}
