package routing

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSplitRoute: whatever the path, Split never panics and never routes
// outside the prefix, to an empty or separator-bearing service name, or to
// a path with a decoded dot-segment; the upstream gets the path decoded
// once, never twice. CI runs it briefly (see the README's test command);
// failing inputs are kept under testdata/fuzz/FuzzSplitRoute.
func FuzzSplitRoute(f *testing.F) {
	for _, seed := range []string{
		"/api/users/42", "/api", "/api/", "/api//users", "/apix/users", "/api/users", "/api/users/",
		"/api/users//x", "/api/users/../admin", "/api/users/%2e%2e/admin", "/api/users/%2E%2e/admin",
		"/api/users/.%2e/x", "/api/users/..%2fadmin", "/api/users/..%5cadmin", "/api/users/%252e%252e/x",
		"/api/users/%00", "/api/users/%zz", "/api/users/%", "/api/users/a%2", "/api/%2e%2e/x", "/api/users%2fx/y",
		"/api/caf%C3%A9/x%3Fy", "/api/users/..;/admin", "/api/./x", "/api/users/\\..\\x", "/api/u/%c0%ae%c0%ae/",
	} {
		f.Add("/api", seed)
	}
	f.Add("/", "/users/x")
	f.Add("/a/b", "/a/b/svc/%2e")
	f.Fuzz(func(t *testing.T, prefix, escaped string) {
		service, rest, err := Split(prefix, escaped)
		if err != nil {
			return
		}
		if !strings.HasPrefix(escaped, prefix) {
			t.Fatalf("routed %q outside prefix %q", escaped, prefix)
		}
		if service == "" || strings.ContainsAny(service, "/\\\x00") || service == "." || service == ".." {
			t.Fatalf("service %q from %q", service, escaped)
		}
		if !strings.HasPrefix(rest, "/") {
			t.Fatalf("rest %q from %q does not start with /", rest, escaped)
		}
		for seg := range strings.SplitSeq(rest[1:], "/") {
			dec, err := url.PathUnescape(seg)
			if err != nil {
				t.Fatalf("rest %q from %q: segment %q does not decode: %v", rest, escaped, seg, err)
			}
			if dec == "." || dec == ".." || strings.ContainsAny(dec, "/\\\x00") {
				t.Fatalf("rest %q from %q: segment %q decodes to %q", rest, escaped, seg, dec)
			}
		}
		// what the upstream gets: no dot-segment once decoded, and its
		// escaped form is rest itself (decoded once, never twice)
		u := &url.URL{Scheme: "http", Host: "upstream"}
		SetPath(u, rest)
		for seg := range strings.SplitSeq(u.Path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("upstream path %q from %q has a dot-segment", u.Path, escaped)
			}
		}
		// a path as the gateway gets it: r.URL.EscapedPath() of a parsed request
		pu, perr := url.ParseRequestURI(escaped)
		realistic := perr == nil && pu.RawQuery == "" && !pu.ForceQuery && pu.EscapedPath() == escaped
		if realistic && u.EscapedPath() != rest {
			t.Fatalf("upstream escaped path %q, want %q (from %q)", u.EscapedPath(), rest, escaped)
		}
	})
}
