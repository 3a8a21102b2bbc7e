package gateway

import (
	"net/url"
	"strings"
	"testing"
)

// Fuzz targets. CI runs each briefly:
//
//	go test -run '^$' -fuzz '^FuzzSplitRoute$' -fuzztime 20s .
//	go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 20s .
//
// Inputs that failed are kept under testdata/fuzz/<Target>/ and replayed by
// every plain `go test`.

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
		service, rest, err := splitRoute(prefix, escaped)
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
		setPath(u, rest)
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

func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"gateway /api/* {\n\tservice users http://127.0.0.1:9001\n}",
		"gateway {\n\tservice users http://127.0.0.1:9001 http://127.0.0.1:9002 {\n\t\ttoken {env.T}\n\t\ttimeout 30s\n\t\tdial_timeout 5s\n" +
			"\t\tretries 2\n\t\tretry_backoff 50ms 1s\n\t\tmax_conns 20\n\t\tmax_pending 1000\n\t\tqueue_timeout 1s\n" +
			"\t\thealth /health 10s 2s\n\t\thealth_status 200\n\t\tlb least_conn\n\t\tproxy {\n\t\t\ttransport http {\n\t\t\t\tkeepalive 90s\n\t\t\t}\n" +
			"\t\t\theader_up X-Gateway gw\n\t\t\tmax_fails 3\n\t\t}\n\t}\n\tcache {\n\t\tmax_size 256MiB\n\t\tmax_item_size 1MiB\n" +
			"\t\tdefault_ttl 60s\n\t\tstale_while_revalidate 30s\n\t\tstale_if_error 5m\n\t}\n\thealth_path /health\n\tslow_request 100ms\n" +
			"\tmax_body 10MiB\n\tmemory_interval 60s\n\tmemory_leak_threshold 10MiB\n\tname main\n\tprefix /api\n}",
		"@internal remote_ip 127.0.0.1/8\ngateway @internal {\n\tprefix /services\n\tservice echo http://127.0.0.1:9010\n\thealth_path /ready\n}",
		"gateway /v1* {\n\tservice a https://a.example/base/\n}",
		"gateway {\n\tservice a http://x {\n\t\tproxy\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\tproxy {\n\t\t\tto http://y\n\t\t}\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\thealth_status 200\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\tretry_backoff\n\t}\n}",
		"gateway {\n\tcache {\n\t\tredis localhost:6379\n\t}\n}",
		"gateway {\n\tmax_body 99999999999999999999EiB\n}",
		"gateway {\n\tservice\n}",
		"gateway {\n\tservice .. http://x\n}",
		"gateway {\n\tservice a ftp://x\n}",
		"gateway {\n\tservice a http://x {\n\t\tlb\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\ttoken a\n\t\ttoken_file b\n\t}\n}",
		"gateway {\n\tservice a http://x {\n}",
		"gateway {{{\n}}}",
		"gateway \"",
		"gateway `x`",
		"gateway /api/* {\n\tservice a http://x\n}\ngateway /api/* {\n\tservice a http://x\n}",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, block string) {
		// "import" would read files (or globs) from the machine running the fuzzer.
		if strings.Contains(block, "import") {
			t.Skip()
		}
		// as the gateway directive of a site, and as a whole Caddyfile
		_, _ = adaptCaddyfile(t, "http://127.0.0.1:8080 {\n"+block+"\n}\n")
		_, _ = adaptCaddyfile(t, block)
	})
}
