// Package routing splits a gateway request path into its service and the
// path below it, rejecting what could escape the service.
package routing

import (
	"errors"
	"net/url"
	"strings"
)

// Routing errors; each becomes a JSON 4xx answer.
var (
	// ErrNoService: the path is the prefix itself, nothing names a service.
	ErrNoService = errors.New("no service in path")
	// ErrBadPath: the path could escape its service or smuggle a separator.
	ErrBadPath = errors.New("invalid path")
	// ErrNotOurs: the path is not under the gateway's prefix at all.
	ErrNotOurs = errors.New("path outside the gateway prefix")
)

// Split splits the escaped request path into the service name and the
// rest of the path (escaped, starting with '/'), below prefix.
//
// Dot-segments and encoded separators are rejected rather than cleaned: a
// request such as /api/users/..%2fadmin/x must never reach another service
// (with that service's token) or a path above its service's base path, and
// an API client has no reason to send them.
func Split(prefix, escaped string) (service, rest string, err error) {
	if !strings.HasPrefix(escaped, prefix) {
		return "", "", ErrNotOurs
	}
	p := escaped[len(prefix):]
	if p == "" || p == "/" {
		return "", "", ErrNoService
	}
	if p[0] != '/' {
		return "", "", ErrNotOurs // e.g. /apix with prefix /api
	}
	p = p[1:]
	rest = "/"
	if i := strings.IndexByte(p, '/'); i >= 0 {
		p, rest = p[:i], p[i:]
	}
	if p == "" {
		return "", "", ErrNoService // "//": an empty service segment
	}
	if service, err = cleanSegment(p); err != nil {
		return "", "", err
	}
	if err := checkRest(rest); err != nil {
		return service, "", err
	}
	return service, rest, nil
}

// cleanSegment unescapes one path segment and rejects the ones that would
// change the path's structure once decoded.
func cleanSegment(seg string) (string, error) {
	dec := seg
	if strings.IndexByte(seg, '%') >= 0 {
		var err error
		if dec, err = url.PathUnescape(seg); err != nil {
			return "", ErrBadPath
		}
	}
	if isDotSegment(dec) || strings.ContainsAny(dec, "/\\\x00") {
		return "", ErrBadPath
	}
	return dec, nil
}

// isDotSegment reports "." and "..", also followed by ";params": Tomcat,
// Jetty and Spring drop path parameters before resolving dot-segments, so
// "..;x" climbs there.
func isDotSegment(s string) bool {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	return s == "." || s == ".."
}

// checkRest validates every segment of the path after the service name.
func checkRest(rest string) error {
	for seg := range strings.SplitSeq(rest[1:], "/") {
		if _, err := cleanSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

// SetPath points u at the service-relative path rest (escaped form).
func SetPath(u *url.URL, rest string) {
	if strings.IndexByte(rest, '%') < 0 {
		// RawPath too: Go would escape sub-delims such as '!' or '*'
		u.Path, u.RawPath = rest, rest
		return
	}
	dec, _ := url.PathUnescape(rest) // validated by Split
	u.Path, u.RawPath = dec, rest
}
