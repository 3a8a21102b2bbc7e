package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bad input: requests a Go client would never send (or would normalise) are
// written by hand on a raw TCP connection. Every one must end in a 4xx (JSON
// when the gateway made it; net/http answers some in plain text before any
// handler runs) with the upstream untouched, or in a correct forward; never
// in a 5xx from the gateway, never in a panic, never in a request smuggled
// toward an upstream.

// seenRequest is what the bad-input upstream records of each request.
type seenRequest struct {
	Case    string `json:"case"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	RawPath string `json:"raw_path"`
	Escaped string `json:"escaped"`
	Query   string `json:"query"`
	Headers int    `json:"headers"`
	BodyLen int    `json:"body_len"`
	BodyErr string `json:"body_err"`
}

// requestLog is an upstream that records every request it gets.
type requestLog struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (l *requestLog) handler(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	s := seenRequest{Case: r.Header.Get("X-Case"), Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath,
		Escaped: r.URL.EscapedPath(), Query: r.URL.RawQuery, Headers: len(r.Header), BodyLen: len(b)}
	if err != nil {
		s.BodyErr = err.Error()
	}
	l.mu.Lock()
	l.seen = append(l.seen, s)
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}

func (l *requestLog) all() []seenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenRequest(nil), l.seen...)
}

// forCase returns the requests the upstream saw carrying X-Case: name.
func (l *requestLog) forCase(name string) []seenRequest {
	var out []seenRequest
	for _, s := range l.all() {
		if s.Case == name {
			out = append(out, s)
		}
	}
	return out
}

// rawExchange writes raw on a fresh connection to port and reads one answer.
// With halfClose the write side is shut after raw (a client that stopped
// sending). A connection closed or reset without an answer is returned as
// an error.
func rawExchange(t testing.TB, port int, raw []byte, halfClose bool) (*http.Response, []byte, error) {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		_, err := conn.Write(raw)
		if err == nil && halfClose {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	defer func() {
		conn.Close()
		<-wrote // the writer ends once the connection is closed
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, err
}

// expectation of a bad-input case.
type expectation int

const (
	expReject  expectation = iota // 4xx, upstream not reached
	expForward                    // forwarded once, answered 2xx by the upstream
	expEither                     // expReject or expForward
	expNotOurs                    // outside the prefix: not 5xx, upstream not reached
	expBodyCut                    // 413, the upstream may have been reached but never got more than max_body
)

type badInputCase struct {
	name   string
	method string
	target string   // request target as sent on the wire
	header []string // extra header lines, "Name: value"
	body   string   // bytes after the header block
	noCL   bool     // do not add Content-Length for body (framing given by header)

	exp        expectation
	status     int                      // exact status wanted on rejection (0: any 4xx)
	check      func(seenRequest) string // on a forward: "" or what is wrong
	connErrOK  bool                     // the server may close/reset without an answer (oversized heads)
	netHTTP5xx bool                     // net/http itself may answer 501 (unsupported Transfer-Encoding)
	halfClose  bool
}

const maxBodyLimit = 1024

func (c badInputCase) raw(port int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Case: %s\r\n", c.method, c.target, port, c.name)
	for _, h := range c.header {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	if c.body != "" && !c.noCL {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(c.body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(c.body)
	return b.Bytes()
}

func underV1(want string) func(seenRequest) string {
	return func(s seenRequest) string {
		if s.Escaped != want {
			return fmt.Sprintf("upstream escaped path %q, want %q", s.Escaped, want)
		}
		return ""
	}
}

// staysInV1 holds for any forward: the path is under the service's base
// path and carries no decoded dot-segment.
func staysInV1(s seenRequest) string {
	if !strings.HasPrefix(s.Path, "/v1/") && s.Path != "/v1" {
		return fmt.Sprintf("upstream path %q outside /v1", s.Path)
	}
	for seg := range strings.SplitSeq(s.Path, "/") {
		if seg == ".." || seg == "." {
			return fmt.Sprintf("upstream path %q has a dot-segment", s.Path)
		}
	}
	return ""
}

func badInputCases(port int) []badInputCase {
	longPath := "/api/users/" + strings.Repeat("a", 64<<10)
	manySegs := "/api/users" + strings.Repeat("/s", 20000)
	bigQuery := strings.Repeat("q=0123456789abcdef&", (512<<10)/19)
	hugeQuery := strings.Repeat("q=0123456789abcdef&", (2<<20)/19)
	manyHeaders := make([]string, 10000)
	for i := range manyHeaders {
		manyHeaders[i] = fmt.Sprintf("X-H-%05d: v", i)
	}
	chunk := strings.Repeat("x", 1024)
	chunked2K := "400\r\n" + chunk + "\r\n400\r\n" + chunk + "\r\n0\r\n\r\n"
	smuggle := "GET /api/users/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

	return []badInputCase{
		// malformed paths
		{name: "double-slash-in-rest", method: "GET", target: "/api/users//x", exp: expEither, check: underV1("/v1//x")},
		{name: "double-slash-before-service", method: "GET", target: "/api//users/x", exp: expReject, status: 404},
		{name: "leading-double-slash", method: "GET", target: "//api/users/x", exp: expNotOurs},
		{name: "nul-escaped", method: "GET", target: "/api/users/%00", exp: expReject, status: 400},
		{name: "nul-escaped-mid", method: "GET", target: "/api/users/a%00b/c", exp: expReject, status: 400},
		{name: "nul-in-service", method: "GET", target: "/api/us%00ers/x", exp: expReject, status: 400},
		{name: "nul-raw", method: "GET", target: "/api/users/a\x00b", exp: expReject},
		{name: "overlong-64KiB", method: "GET", target: longPath, exp: expEither, check: underV1("/v1/" + strings.Repeat("a", 64<<10))},
		{name: "20000-segments", method: "GET", target: manySegs, exp: expEither, check: underV1("/v1" + strings.Repeat("/s", 20000))},
		{name: "invalid-escape-zz", method: "GET", target: "/api/users/%zz", exp: expReject},
		{name: "invalid-escape-truncated", method: "GET", target: "/api/users/a%2", exp: expReject},
		{name: "invalid-escape-lone-percent", method: "GET", target: "/api/users/%", exp: expReject},
		{name: "invalid-escape-in-service", method: "GET", target: "/api/%zz/x", exp: expReject},
		{name: "relative-target", method: "GET", target: "api/users/x", exp: expReject},
		// dot-segments in every encoding
		{name: "dotdot", method: "GET", target: "/api/users/../admin/x", exp: expReject, status: 400},
		{name: "dotdot-last", method: "GET", target: "/api/users/x/..", exp: expReject, status: 400},
		{name: "dot", method: "GET", target: "/api/users/./x", exp: expReject, status: 400},
		{name: "dot-escaped", method: "GET", target: "/api/users/%2e/x", exp: expReject, status: 400},
		{name: "dotdot-escaped", method: "GET", target: "/api/users/%2e%2e/admin/x", exp: expReject, status: 400},
		{name: "dotdot-mixed-case", method: "GET", target: "/api/users/%2E%2e/admin/x", exp: expReject, status: 400},
		{name: "dotdot-upper", method: "GET", target: "/api/users/%2E%2E/admin/x", exp: expReject, status: 400},
		{name: "dot-escaped-dot", method: "GET", target: "/api/users/.%2e/admin/x", exp: expReject, status: 400},
		{name: "escaped-dot-dot", method: "GET", target: "/api/users/%2e./admin/x", exp: expReject, status: 400},
		{name: "dotdot-slash-escaped", method: "GET", target: "/api/users/..%2fadmin/x", exp: expReject, status: 400},
		{name: "dotdot-slash-escaped-upper", method: "GET", target: "/api/users/..%2Fadmin/x", exp: expReject, status: 400},
		{name: "dotdot-backslash-escaped", method: "GET", target: "/api/users/..%5cadmin/x", exp: expReject, status: 400},
		{name: "dotdot-backslash-escaped-upper", method: "GET", target: "/api/users/..%5Cadmin/x", exp: expReject, status: 400},
		{name: "dotdot-backslash-raw", method: "GET", target: "/api/users/..\\admin/x", exp: expReject},
		{name: "all-escaped", method: "GET", target: "/api/users/%2e%2e%2f%2e%2e%2fadmin", exp: expReject, status: 400},
		{name: "dotdot-as-service", method: "GET", target: "/api/../admin/x", exp: expReject},
		{name: "escaped-dotdot-as-service", method: "GET", target: "/api/%2e%2e/admin/x", exp: expReject, status: 400},
		{name: "escaped-slash-in-service", method: "GET", target: "/api/users%2f..%2fadmin/x", exp: expReject, status: 400},
		{name: "escaped-slash-in-rest", method: "GET", target: "/api/users/a%2fb", exp: expReject, status: 400},
		{name: "deep-climb", method: "GET", target: "/api/users/a/%2e%2e/%2e%2e/%2e%2e/admin", exp: expReject, status: 400},
		{name: "absolute-form-dotdot", method: "GET", target: fmt.Sprintf("http://127.0.0.1:%d/api/users/../admin/x", port), exp: expReject},
		// Tomcat/Spring/Jetty drop ";params" before resolving dot-segments:
		// "..;" climbs above the service's base path there.
		{name: "dotdot-semicolon", method: "GET", target: "/api/users/..;/admin/x", exp: expReject, status: 400},
		{name: "escaped-dotdot-semicolon", method: "GET", target: "/api/users/%2e%2e;x=1/admin/x", exp: expReject, status: 400},
		// double encoding: forwarded literally (decoded once, by the upstream) or rejected, never decoded twice
		{name: "double-encoded-dotdot", method: "GET", target: "/api/users/%252e%252e/admin", exp: expEither, check: func(s seenRequest) string {
			if s.Escaped != "/v1/%252e%252e/admin" || s.Path != "/v1/%2e%2e/admin" {
				return fmt.Sprintf("upstream got %q (decoded %q): decoded twice or rewritten", s.Escaped, s.Path)
			}
			return ""
		}},
		{name: "double-encoded-slash", method: "GET", target: "/api/users/..%252fadmin", exp: expEither, check: func(s seenRequest) string {
			if s.Escaped != "/v1/..%252fadmin" || s.Path != "/v1/..%2fadmin" {
				return fmt.Sprintf("upstream got %q (decoded %q): decoded twice or rewritten", s.Escaped, s.Path)
			}
			return ""
		}},
		// RFC 3986 §6.2.2.2: a reserved character and its escape are not
		// equivalent; the service gets the path as the client wrote it
		{name: "sub-delims-literal", method: "GET", target: "/api/users/a!b(c)*'d$e,f", exp: expForward, check: underV1("/v1/a!b(c)*'d$e,f")},
		{name: "sub-delims-with-escape", method: "GET", target: "/api/users/a!b/%41", exp: expForward, check: underV1("/v1/a!b/%41")},
		{name: "overlong-utf8-dots", method: "GET", target: "/api/users/%c0%ae%c0%ae/admin", exp: expEither, check: staysInV1},
		{name: "fullwidth-dots", method: "GET", target: "/api/users/%ef%bc%8e%ef%bc%8e/admin", exp: expEither, check: staysInV1},

		// absurd headers
		{name: "header-1MiB", method: "GET", target: "/api/users/x", header: []string{"X-Big: " + strings.Repeat("b", 1<<20)}, exp: expReject, connErrOK: true},
		{name: "headers-10000", method: "GET", target: "/api/users/x", header: manyHeaders, exp: expEither, check: func(s seenRequest) string {
			if s.Headers < 10000 {
				return fmt.Sprintf("upstream got %d headers", s.Headers)
			}
			return ""
		}},
		{name: "host-duplicated", method: "GET", target: "/api/users/x", header: []string{"Host: evil.example"}, exp: expReject},
		{name: "host-invalid", method: "GET", target: "/api/users/x", header: []string{"X-Pad: 1", "Host: a b"}, exp: expReject},
		{name: "header-name-space", method: "GET", target: "/api/users/x", header: []string{"Bad Header: x"}, exp: expReject},
		{name: "header-value-ctl", method: "GET", target: "/api/users/x", header: []string{"X-Ctl: a\x00b"}, exp: expReject},
		{name: "cl-te-smuggle", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: 5", "Transfer-Encoding: chunked"}, body: "0\r\n\r\n" + smuggle,
			exp: expEither, check: func(s seenRequest) string {
				if s.BodyLen != 0 {
					return fmt.Sprintf("upstream body %d bytes, want the empty chunked body", s.BodyLen)
				}
				return ""
			}},
		{name: "te-cl-smuggle", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Transfer-Encoding: chunked", "Content-Length: 3"}, body: "8\r\nSMUGGLED\r\n0\r\n\r\n" + smuggle,
			exp: expEither, check: func(s seenRequest) string {
				if s.BodyLen != 8 {
					return fmt.Sprintf("upstream body %d bytes, want the 8-byte chunked body", s.BodyLen)
				}
				return ""
			}},
		{name: "te-obfuscated", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: 5", "Transfer-Encoding: xchunked"}, body: "0\r\n\r\n" + smuggle,
			exp: expReject, netHTTP5xx: true},
		{name: "te-doubled", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Transfer-Encoding: chunked", "Transfer-Encoding: identity"}, body: "0\r\n\r\n" + smuggle,
			exp: expReject, netHTTP5xx: true},
		{name: "te-list", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Transfer-Encoding: identity, chunked", "Content-Length: 5"}, body: "0\r\n\r\n" + smuggle,
			exp: expReject, netHTTP5xx: true},
		{name: "cl-two-values", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: 5", "Content-Length: 45"}, body: "hello" + smuggle[:40],
			exp: expReject},
		{name: "cl-comma-list", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: 5, 45"}, body: "hello" + smuggle[:40], exp: expReject},
		{name: "cl-negative", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: -1"}, body: "hello", exp: expReject},
		{name: "cl-plus-sign", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: +5"}, body: "hello", exp: expReject},

		// methods
		{name: "method-connect-path", method: "CONNECT", target: "/api/users/x", exp: expReject},
		{name: "method-connect-authority", method: "CONNECT", target: fmt.Sprintf("127.0.0.1:%d", port), exp: expNotOurs},
		{name: "method-trace", method: "TRACE", target: "/api/users/x", exp: expEither, check: func(s seenRequest) string {
			if s.Method != "TRACE" {
				return "method " + s.Method
			}
			return ""
		}},
		{name: "method-unknown", method: "FOO", target: "/api/users/x", exp: expForward, check: func(s seenRequest) string {
			if s.Method != "FOO" || s.Escaped != "/v1/x" {
				return fmt.Sprintf("upstream got %s %s", s.Method, s.Escaped)
			}
			return ""
		}},
		{name: "method-invalid-token", method: "G(ET", target: "/api/users/x", exp: expReject},

		// huge query strings
		{name: "query-512KiB", method: "GET", target: "/api/users/x?" + bigQuery, exp: expEither, check: func(s seenRequest) string {
			if s.Query != bigQuery {
				return fmt.Sprintf("query of %d bytes arrived as %d bytes", len(bigQuery), len(s.Query))
			}
			return ""
		}},
		{name: "query-2MiB", method: "GET", target: "/api/users/x?" + hugeQuery, exp: expReject, connErrOK: true},
		{name: "query-invalid-escape", method: "GET", target: "/api/users/x?a=%zz&b=%00", exp: expEither, check: func(s seenRequest) string {
			if s.Query != "a=%zz&b=%00" {
				return fmt.Sprintf("query %q", s.Query)
			}
			return ""
		}},

		// bodies beyond max_body (1 KiB)
		{name: "body-over-max", method: "POST", target: "/api/users/a", body: strings.Repeat("y", 4096), exp: expReject, status: 413},
		{name: "body-over-max-expect-continue", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: 4096", "Expect: 100-continue"}, exp: expReject, status: 413},
		{name: "body-over-max-chunked", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Transfer-Encoding: chunked"}, body: chunked2K, exp: expBodyCut, status: 413},
		{name: "body-at-max", method: "POST", target: "/api/users/a", body: strings.Repeat("y", maxBodyLimit), exp: expForward,
			check: func(s seenRequest) string {
				if s.BodyLen != maxBodyLimit || s.BodyErr != "" {
					return fmt.Sprintf("upstream body %d bytes (%s)", s.BodyLen, s.BodyErr)
				}
				return ""
			}},
		// the client announces 100 bytes, sends 10 and stops: its fault, not the upstream's
		{name: "body-truncated-by-client", method: "POST", target: "/api/users/a", noCL: true,
			header: []string{"Content-Length: 100"}, body: "0123456789", halfClose: true, exp: expBodyCut, connErrOK: true},
	}
}

func TestBadInputTable(t *testing.T) {
	users := &requestLog{}
	usersUp := upstreamServer(t, users.handler)
	admin := &requestLog{}
	adminUp := upstreamServer(t, admin.handler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s/v1
		service admin %s {
			token badinput-admin-secret
		}
		max_body %d
	}`, usersUp.URL, adminUp.URL, maxBodyLimit))

	for _, c := range badInputCases(in.port) {
		t.Run(c.name, func(t *testing.T) {
			resp, body, err := rawExchange(t, in.port, c.raw(in.port), c.halfClose)
			seen := users.forCase(c.name)
			if err != nil {
				if !c.connErrOK {
					t.Fatalf("no answer: %v", err)
				}
				if len(seen) > 0 && c.exp != expBodyCut {
					t.Fatalf("connection cut, yet the upstream got %+v", seen)
				}
				return
			}
			status := resp.StatusCode
			isJSON := resp.Header.Get("Content-Type") == "application/json"
			short := string(body)
			if len(short) > 300 {
				short = short[:300] + "…"
			}
			if status >= 500 {
				if !(c.netHTTP5xx && status == http.StatusNotImplemented && !isJSON) {
					t.Fatalf("status %d (5xx): %s", status, short)
				}
			}
			forwarded := status >= 200 && status < 300 && len(seen) > 0
			switch c.exp {
			case expForward:
				if !forwarded {
					t.Fatalf("want a forward; status %d, upstream saw %d: %s", status, len(seen), short)
				}
			case expReject:
				if status < 400 {
					t.Fatalf("want 4xx; status %d, upstream saw %+v", status, seen)
				}
			case expEither:
				if !forwarded && status < 400 {
					t.Fatalf("neither a forward nor a 4xx: status %d, upstream saw %d", status, len(seen))
				}
			case expNotOurs:
				if len(seen) > 0 {
					t.Fatalf("a request outside the prefix reached the service: %+v", seen)
				}
			case expBodyCut:
				if status < 400 {
					t.Fatalf("want 4xx; status %d: %s", status, short)
				}
				for _, s := range seen {
					if s.BodyLen > maxBodyLimit || (s.BodyErr == "" && c.halfClose) {
						t.Errorf("upstream got a body of %d bytes (err %q)", s.BodyLen, s.BodyErr)
					}
				}
			}
			if c.status != 0 && status != c.status {
				t.Errorf("status %d, want %d: %s", status, c.status, short)
			}
			if forwarded {
				if len(seen) != 1 {
					t.Errorf("upstream saw %d requests for one: %+v", len(seen), seen)
				}
				if c.check != nil {
					if msg := c.check(seen[0]); msg != "" {
						t.Error(msg)
					}
				}
				return
			}
			if status >= 400 && c.exp != expBodyCut && len(seen) > 0 {
				t.Errorf("answered %d, yet the upstream was reached: %+v", status, seen)
			}
			if status >= 400 && isJSON {
				m := decodeJSON(t, body)
				if m["status"] != float64(status) || m["error"] == "" {
					t.Errorf("JSON error body %s for status %d", body, status)
				}
			}
			if status >= 400 && !isJSON && resp.Header.Get("Content-Type") != "" &&
				!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
				t.Errorf("an error answer that is neither JSON nor net/http's plain text: %q", resp.Header.Get("Content-Type"))
			}
		})
	}

	// nothing smuggled: every request the upstream saw is one a case sent, once
	count := map[string]int{}
	for _, s := range users.all() {
		count[s.Case]++
		if strings.Contains(s.Escaped, "smuggled") || s.Case == "" {
			t.Errorf("request smuggled toward the upstream: %+v", s)
		}
	}
	for name, n := range count {
		if n > 1 {
			t.Errorf("case %s reached the upstream %d times", name, n)
		}
	}
	if got := admin.all(); len(got) > 0 {
		t.Errorf("the admin service was reached: %+v", got)
	}
	if logs := in.logs(); strings.Contains(strings.ToLower(logs), "panic") {
		t.Errorf("panic in the logs:\n%s", tail(logs, 4000))
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TRACE makes a server reflect the request it received, headers included: a
// gateway that forwards it to a service hands that service's token to the
// client. It must not reach a service with a token.
func TestTraceNeverReflectsServiceToken(t *testing.T) {
	const token = "trace-svc-token-5a4b3c"
	reached := make(chan string, 4)
	reflect := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		reached <- r.Method
		// what RFC 9110 §9.3.8 asks of a TRACE target: the request as received
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
		_ = r.Header.Write(&b)
		w.Header().Set("Content-Type", "message/http")
		_, _ = w.Write(b.Bytes())
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service secure %s {
			token %s
		}
	}`, reflect.URL, token))
	for _, method := range []string{"TRACE", "trace", "TRACK"} {
		raw := fmt.Sprintf("%s /api/secure/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer client-cred\r\nConnection: close\r\n\r\n", method)
		resp, body, err := rawExchange(t, in.port, []byte(raw), false)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if bytes.Contains(body, []byte(token)) {
			t.Errorf("%s: the service token reached the client: %d %s", method, resp.StatusCode, body)
		}
		for k, v := range resp.Header {
			if strings.Contains(strings.Join(v, " "), token) {
				t.Errorf("%s: the service token reached the client in %s", method, k)
			}
		}
		if resp.StatusCode >= 500 {
			t.Errorf("%s: status %d", method, resp.StatusCode)
		}
	}
	close(reached)
	for m := range reached {
		if strings.EqualFold(m, "TRACE") || m == "TRACK" {
			t.Errorf("%s was forwarded to a service with a token", m)
		}
	}
}

// The service token never reaches a client (header, error body), a log line
// (debug level, log_credentials on), an admin answer or a metric; a client's
// credential (header, duplicated header, odd case, trailer) never reaches a
// service that has a token. Extends TestTokenReplacesClientAuthorizationForItsServiceOnly
// with failures, trailers and every admin route.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		envToken  = "sEcReT-env-token-7f6e5d"
		fileToken = "sEcReT-file-token-1a2b3c"
		litToken  = "sEcReT-literal-token-9z8y"
		clientCr  = "client-cred-q1w2e3"
	)
	t.Setenv("GW_SECRETS_TEST_TOKEN", envToken)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(fileToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		Auth    []string
		Trailer http.Header
		Header  http.Header
	}
	var mu sync.Mutex
	var got []seen
	record := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // trailers arrive at EOF
		mu.Lock()
		got = append(got, seen{Auth: r.Header.Values("Authorization"), Trailer: r.Trailer.Clone(), Header: r.Header.Clone()})
		mu.Unlock()
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("internal"))
			return
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}
	envUp := upstreamServer(t, record)
	fileUp := upstreamServer(t, record)
	litUp := upstreamServer(t, record)
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slowUp := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	garbage := garbageUpstream(t, "HTTP/1.1 200 OK\r\nthis is not a header line\r\n\r\n")
	refused := freePort(t)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service env %s {
			token {env.GW_SECRETS_TEST_TOKEN}
		}
		service file %s {
			token_file %s
		}
		service lit %s {
			token %s
		}
		service down http://127.0.0.1:%d {
			token {env.GW_SECRETS_TEST_TOKEN}
			dial_timeout 1s
		}
		service slow %s {
			token {env.GW_SECRETS_TEST_TOKEN}
			timeout 200ms
		}
		service garbage %s {
			token {env.GW_SECRETS_TEST_TOKEN}
		}
		cache
		slow_request 1ns
	}`, envUp.URL, fileUp.URL, tokenFile, litUp.URL, litToken, refused, slowUp.URL, garbage))

	tokens := []string{envToken, fileToken, litToken}
	leaks := func(where, s string) {
		t.Helper()
		for _, tok := range tokens {
			if strings.Contains(s, tok) {
				t.Errorf("a service token reached %s: %s", where, tail(s, 2000))
			}
		}
	}
	checkResp := func(what string, resp *http.Response, body []byte) {
		t.Helper()
		var hb bytes.Buffer
		_ = resp.Header.Write(&hb)
		_ = resp.Trailer.Write(&hb)
		leaks(what+" response headers", hb.String())
		leaks(what+" response body", string(body))
	}

	// through the Go client: normal answers, upstream errors, redirects
	for _, path := range []string{"/api/env/a", "/api/file/a", "/api/lit/a", "/api/env/fail", "/api/env/redirect",
		"/api/down/a", "/api/slow/a", "/api/garbage/a", "/api/env/a"} {
		resp, body := in.get(path, "Authorization", "Bearer "+clientCr)
		checkResp(path, resp, body)
		switch path {
		case "/api/down/a", "/api/garbage/a":
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("%s: status %d, want 502", path, resp.StatusCode)
			}
		case "/api/slow/a":
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("%s: status %d, want 504", path, resp.StatusCode)
			}
		}
	}
	// credentials the Go client would normalise: two Authorization fields,
	// odd case, a trailer, Proxy-Authorization, a POST with a body
	raws := []string{
		"GET /api/env/dup HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + clientCr + "\r\nAuthorization: Basic " + clientCr + "\r\nConnection: close\r\n\r\n",
		"GET /api/env/case HTTP/1.1\r\nHost: 127.0.0.1\r\naUTHORIZATION: Bearer " + clientCr + "\r\nConnection: close\r\n\r\n",
		"POST /api/env/trailer HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization\r\nConnection: close\r\n\r\n" +
			"5\r\nhello\r\n0\r\nAuthorization: Bearer " + clientCr + "\r\n\r\n",
		"POST /api/lit/trailer2 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
			"5\r\nhello\r\n0\r\nAuthorization: Bearer " + clientCr + "\r\n\r\n",
		"GET /api/file/proxy HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Authorization: Basic " + clientCr + "\r\nConnection: close\r\n\r\n",
	}
	for _, raw := range raws {
		resp, body, err := rawExchange(t, in.port, []byte(raw), false)
		if err != nil {
			t.Fatalf("%q: %v", raw[:30], err)
		}
		checkResp(raw[:30], resp, body)
		if resp.StatusCode != 200 {
			t.Errorf("%q: status %d: %s", raw[:30], resp.StatusCode, body)
		}
	}

	mu.Lock()
	// 3 answers + fail + redirect + the second /api/env/a through the Go client, 5 raw requests
	if len(got) != 11 {
		t.Errorf("the token services saw %d requests, want 11", len(got))
	}
	trailers := 0
	for _, s := range got {
		if len(s.Trailer) > 0 {
			trailers++
		}
		if len(s.Auth) != 1 || !strings.HasPrefix(s.Auth[0], "Bearer sEcReT-") {
			t.Errorf("a service with a token got Authorization %q", s.Auth)
		}
		var b bytes.Buffer
		_ = s.Header.Write(&b)
		_ = s.Trailer.Write(&b)
		if strings.Contains(b.String(), clientCr) {
			t.Errorf("a client credential reached a service with a token:\n%s", b.String())
		}
	}
	mu.Unlock()
	t.Logf("%d requests reached a token service with trailers", trailers)

	// admin answers, metrics, logs
	for _, path := range []string{"/gateway/stats", "/gateway/profile", "/gateway/memory", "/gateway/memory?top=20",
		"/gateway/health", "/gateway/pools", "/gateway/stats?name=gateway", "/config/", "/config/apps/http", "/metrics"} {
		resp, body := in.adminDo("GET", path)
		if resp.StatusCode != 200 {
			t.Errorf("admin %s: status %d: %s", path, resp.StatusCode, body)
		}
		if path == "/config/" || path == "/config/apps/http" {
			// a literal token in the config is the config; {env.*} and token_file are not shown
			if strings.Contains(string(body), envToken) || strings.Contains(string(body), fileToken) {
				t.Errorf("admin %s resolves a token: %s", path, body)
			}
			continue
		}
		leaks("admin "+path, string(body))
		if path == "/metrics" && strings.Contains(string(body), clientCr) {
			t.Errorf("a client credential reached the metrics")
		}
	}
	resp, body := in.adminDo("DELETE", "/gateway/cache")
	checkResp("admin purge", resp, body)

	logs := in.logs()
	if !strings.Contains(logs, "/api/env/trailer") || !strings.Contains(logs, "upstream exchange failed") {
		t.Fatalf("the logs miss the requests; cannot check them:\n%s", tail(logs, 3000))
	}
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, `"msg":"adjusted config"`) {
			// Caddy logs the config it loads at debug level: a token written
			// literally in the config is there, as in /config/ (the README
			// says to use {env.*} or token_file); resolved ones never are.
			if strings.Contains(line, envToken) || strings.Contains(line, fileToken) {
				t.Errorf("a resolved token reached the config log line: %s", line)
			}
			continue
		}
		leaks("the logs", line)
	}
}

// garbageUpstream is a TCP server that answers every connection with resp
// and closes it.
func garbageUpstream(t *testing.T, resp string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				// read the request head, then answer
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, resp)
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// A request body the gateway answers before it was read to its end leaves
// the rest of it on the connection, and a request hidden in that rest must
// never run: the answer says Connection: close and the connection ends
// after it. Caddy replaces the request's Body with its own wrapper, so once
// something closed the body early (http.MaxBytesReader past max_body, Go's
// transport after an upstream answered without reading it) net/http took
// the body for consumed, kept the connection, and parsed the body's rest as
// requests: a request placed just past what it had read ran, with the
// admin service's token. The hidden request's offset is where net/http
// stopped: max_body+1 bytes read through http.MaxBytesReader, then 256 KiB
// drained by its Close.
func TestUnreadRequestBodyClosesTheConnection(t *testing.T) {
	const hiddenAt = maxBodyLimit + 1 + 256<<10
	cases := []struct {
		name     string
		maxBody  string
		target   string
		bodySize int
		status   int
		json     bool // the gateway's own answer
	}{
		{"chunked body over max_body", "max_body 1KiB", "/api/users/upload", 300_000, http.StatusRequestEntityTooLarge, true},
		{"chunked body to an unknown service", "max_body 1KiB", "/api/nope/upload", 300_000, http.StatusNotFound, true},
		// the upstream's own answer, while most of a large body is still unsent
		{"upstream answers before reading the body", "", "/api/early/upload", 16 << 20, http.StatusOK, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			users := &requestLog{}
			usersUp := upstreamServer(t, users.handler)
			admin := &requestLog{}
			adminUp := upstreamServer(t, admin.handler)
			early := &requestLog{}
			earlyUp := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
				// answers at once and never reads the body, like an upload
				// endpoint refusing it
				early.mu.Lock()
				early.seen = append(early.seen, seenRequest{Case: r.Header.Get("X-Case"), Path: r.URL.Path})
				early.mu.Unlock()
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "refused unread")
			})
			in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
				service users %s
				service early %s
				service admin %s {
					token unread-body-admin-secret
				}
				%s
			}`, usersUp.URL, earlyUp.URL, adminUp.URL, c.maxBody))
			hidden := fmt.Sprintf("GET /api/admin/hidden HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Case: hidden\r\n\r\n", in.port)
			data := bytes.Repeat([]byte("y"), c.bodySize)
			copy(data[hiddenAt:], hidden)
			var raw bytes.Buffer
			fmt.Fprintf(&raw, "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Case: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
				c.target, in.port, c.name, len(data))
			raw.Write(data)
			raw.WriteString("\r\n0\r\n\r\n")

			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
			if err != nil {
				t.Fatalf("dialing the gateway: %v", err)
			}
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				_, _ = conn.Write(raw.Bytes()) // cut short when the gateway closes: expected
			}()
			defer func() {
				conn.Close()
				<-wrote
			}()
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the answer's body: %v", err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, c.status, body)
			}
			if c.json {
				if m := decodeJSON(t, body); m["status"] != float64(c.status) {
					t.Errorf("error body %s", body)
				}
			}
			if !resp.Close {
				t.Errorf("answer without Connection: close (header %q), while the body's rest is on the wire", resp.Header.Get("Connection"))
			}
			// nothing follows the answer: no answer to a request parsed from
			// the body, the connection closed (EOF, or a reset for the body
			// bytes it did not read)
			rest, err := io.ReadAll(br)
			if len(rest) > 0 {
				t.Errorf("the connection went on after the answer: %.300q", rest)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the connection stayed open after the answer")
			}
			if got := admin.all(); len(got) > 0 {
				t.Errorf("the request hidden in the body reached the token service: %+v", got)
			}
			for _, s := range append(users.all(), early.all()...) {
				if s.Case != c.name {
					t.Errorf("a request the client did not send as one reached an upstream: %+v", s)
				}
			}
		})
	}
}
