package cache

import (
	"net/http"
	"strings"
)

// maxDeltaSeconds is the largest delta-seconds value we honour (RFC 9111 §1.2.2: 2^31, meaning
// "effectively forever"); larger values are clamped to it rather than rejected.
const maxDeltaSeconds = 1 << 31

// directives holds the parsed Cache-Control directives of a request or a response. Absent numeric
// directives are -1; a directive present with an invalid value is recorded in the Invalid fields so the
// freshness rules can treat it as "stale" (RFC 9111 §4.2.1) instead of ignoring it.
type directives struct {
	MaxAge, SMaxAge, MaxStale, MinFresh int64
	StaleWhileRevalidate, StaleIfError  int64
	NoStore, NoCache, Private, Public   bool
	MustRevalidate, ProxyRevalidate     bool
	MustUnderstand, OnlyIfCached        bool
	Immutable, NoTransform              bool
	MaxStaleAny                         bool // request max-stale without a value: any staleness is fine
	Targeted                            bool // parsed from CDN-Cache-Control (RFC 9213), not Cache-Control
	InvalidMaxAge, InvalidSMaxAge       bool
	present                             bool // at least one Cache-Control line was seen
}

// parseCacheControl parses all Cache-Control lines of h without allocating. Unknown directives are
// ignored (RFC 9111 §5.2.3); a value is either a token or a quoted-string, and directive names are
// case-insensitive. When a numeric directive appears twice, the first occurrence wins.
func parseCacheControl(lines []string) directives {
	d := directives{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
	for _, line := range lines {
		d.present = true
		parseCacheControlLine(&d, line)
	}
	return d
}

// parseCacheControlLine adds the directives of one header line to d.
func parseCacheControlLine(d *directives, s string) {
	i := 0
	for i < len(s) {
		// skip separators and whitespace
		for i < len(s) && (s[i] == ',' || s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			return
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		name := s[start:i]
		var value string
		hasValue, quoted, valid := false, false, true
		// a directive name followed by whitespace and then '=' is malformed: its value is ignored
		j := i
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		if j < len(s) && s[j] == '=' {
			if j != i {
				valid = false
			}
			i = j + 1
			hasValue = true
			if i < len(s) && s[i] == '"' {
				quoted = true
				i++
				vs := i
				for i < len(s) && s[i] != '"' {
					if s[i] == '\\' && i+1 < len(s) {
						i++
					}
					i++
				}
				value = s[vs:min(i, len(s))]
				if i < len(s) {
					i++ // closing quote
				} else {
					valid = false
				}
			} else {
				vs := i
				for i < len(s) && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
					i++
				}
				value = s[vs:i]
			}
		}
		// anything else up to the next comma makes the directive malformed
		for i < len(s) && s[i] != ',' {
			if s[i] != ' ' && s[i] != '\t' {
				valid = false
			}
			i++
		}
		if quoted && d.Targeted {
			// A structured-field string where an integer belongs has the wrong type: ignore the
			// directive (RFC 9213 §2.1), do not treat it as an invalid value.
			continue
		}
		applyDirective(d, name, value, hasValue, valid)
	}
}

// applyDirective records one directive in d.
func applyDirective(d *directives, name, value string, hasValue, valid bool) {
	num := func(dst *int64, invalid *bool) {
		if *dst >= 0 || (invalid != nil && *invalid) {
			return // first occurrence wins
		}
		n, ok := parseDeltaSeconds(value)
		if !hasValue || !valid || !ok {
			if invalid != nil {
				*invalid = true
			}
			return
		}
		*dst = n
	}
	switch {
	case strings.EqualFold(name, "max-age"):
		num(&d.MaxAge, &d.InvalidMaxAge)
	case strings.EqualFold(name, "s-maxage"):
		num(&d.SMaxAge, &d.InvalidSMaxAge)
	case strings.EqualFold(name, "no-store"):
		d.NoStore = true
	case strings.EqualFold(name, "no-cache"):
		// A qualified no-cache="field" is treated like the unqualified form: stricter, still correct.
		d.NoCache = true
	case strings.EqualFold(name, "private"):
		d.Private = true
	case strings.EqualFold(name, "public"):
		d.Public = true
	case strings.EqualFold(name, "must-revalidate"):
		d.MustRevalidate = true
	case strings.EqualFold(name, "proxy-revalidate"):
		d.ProxyRevalidate = true
	case strings.EqualFold(name, "must-understand"):
		d.MustUnderstand = true
	case strings.EqualFold(name, "only-if-cached"):
		d.OnlyIfCached = true
	case strings.EqualFold(name, "immutable"):
		d.Immutable = true
	case strings.EqualFold(name, "no-transform"):
		d.NoTransform = true
	case strings.EqualFold(name, "max-stale"):
		if !hasValue {
			d.MaxStaleAny = true
			return
		}
		num(&d.MaxStale, nil)
	case strings.EqualFold(name, "min-fresh"):
		num(&d.MinFresh, nil)
	case strings.EqualFold(name, "stale-while-revalidate"):
		num(&d.StaleWhileRevalidate, nil)
	case strings.EqualFold(name, "stale-if-error"):
		num(&d.StaleIfError, nil)
	}
}

// parseDeltaSeconds parses a non-negative decimal integer (RFC 9111 §1.2.2), clamping it at 2^31.
func parseDeltaSeconds(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < maxDeltaSeconds {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, maxDeltaSeconds), true
}

// responseDirectives returns the directives governing a response: those of CDN-Cache-Control when it
// is present and a valid structured-field dictionary (RFC 9213: the gateway is a CDN-like surrogate
// run by the origin's operator, so the targeted field replaces Cache-Control and Expires), otherwise
// those of Cache-Control.
func responseDirectives(h http.Header) directives {
	if t := h["Cdn-Cache-Control"]; len(t) > 0 && validSFDictionary(t) {
		d := directives{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleWhileRevalidate: -1, StaleIfError: -1, Targeted: true}
		for _, line := range t {
			d.present = true
			parseCacheControlLine(&d, line)
		}
		return d
	}
	return parseCacheControl(h["Cache-Control"])
}

// validSFDictionary reports whether the lines form a structured-field dictionary (RFC 8941 §3.2)
// closely enough: members are keys with an optional bare-item value and parameters.
func validSFDictionary(lines []string) bool {
	for _, line := range lines {
		for m := range strings.SplitSeq(line, ",") {
			m = strings.Trim(m, " \t")
			if m == "" {
				return false
			}
			m, _, _ = strings.Cut(m, ";")
			key, val, hasVal := strings.Cut(m, "=")
			if key == "" || !(isLower(key[0]) || key[0] == '*' || isUpper(key[0])) {
				return false
			}
			for i := 0; i < len(key); i++ {
				c := key[i]
				if !(isLower(c) || isUpper(c) || ('0' <= c && c <= '9') || c == '_' || c == '-' || c == '.' || c == '*') {
					return false
				}
			}
			if hasVal && !validBareItem(val) {
				return false
			}
		}
	}
	return true
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// validBareItem accepts an sf-integer, sf-decimal, sf-string, sf-token or sf-boolean.
func validBareItem(v string) bool {
	if v == "" {
		return false
	}
	switch c := v[0]; {
	case c == '"':
		return len(v) >= 2 && v[len(v)-1] == '"'
	case c == '?':
		return v == "?0" || v == "?1"
	case c == '-' || ('0' <= c && c <= '9'):
		for i := 1; i < len(v); i++ {
			if !(('0' <= v[i] && v[i] <= '9') || v[i] == '.') {
				return false
			}
		}
		return true
	case isLower(c) || isUpper(c) || c == '*':
		return !strings.ContainsAny(v, " \t\"=")
	}
	return false
}

// requestDirectives parses the request's Cache-Control, treating `Pragma: no-cache` as `no-cache`
// when the request has no Cache-Control (RFC 9111 §5.4 keeps that for HTTP/1.0 clients).
func requestDirectives(h http.Header) directives {
	cc := h["Cache-Control"]
	d := parseCacheControl(cc)
	if len(cc) == 0 {
		for _, p := range h["Pragma"] {
			if containsToken(p, "no-cache") {
				d.NoCache = true
			}
		}
	}
	return d
}

// containsToken reports whether the comma-separated list s contains tok (case-insensitive).
func containsToken(s, tok string) bool {
	for s != "" {
		var part string
		part, s, _ = strings.Cut(s, ",")
		if strings.EqualFold(strings.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}
