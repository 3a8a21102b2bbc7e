package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// upstreamServer starts a real loopback upstream for one test.
func upstreamServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestRoutingForwardsMethodPathQueryAndBody(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	based := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s
		service v2 %s/base/v2
	}`, up.URL, based.URL))

	tests := []struct {
		method, path     string
		wantPath, wantRQ string
	}{
		{"GET", "/api/users/42?x=1&y=%20z", "/42", "x=1&y=%20z"},
		{"DELETE", "/api/users/a/b/c", "/a/b/c", ""},
		{"PUT", "/api/users", "/", ""},
		{"PATCH", "/api/v2/items/7?q", "/base/v2/items/7", "q"},
		{"GET", "/api/users/caf%C3%A9/x%3Fy", "/café/x?y", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := in.do(tt.method, tt.path, strings.NewReader("payload"), nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			e := decodeEcho(t, body)
			if e.Method != tt.method || e.Path != tt.wantPath || e.Query != tt.wantRQ {
				t.Errorf("upstream saw %s %s ?%s; want %s %s ?%s", e.Method, e.Path, e.Query, tt.method, tt.wantPath, tt.wantRQ)
			}
			if e.BodyLen != len("payload") {
				t.Errorf("upstream body length %d", e.BodyLen)
			}
		})
	}
}

func TestLargePostArrivesIntact(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service files %s
	}`, up.URL))
	payload := bigBody(4 << 20)
	resp, body := in.do("POST", "/api/files/upload", bytes.NewReader(payload), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e := decodeEcho(t, body)
	if e.BodyLen != len(payload) || e.BodySum != fmt.Sprintf("%x", sha256.Sum256(payload)) {
		t.Fatalf("upstream got %d bytes (sum %s), want %d", e.BodyLen, e.BodySum, len(payload))
	}
}

// An event stream reaches the client event by event: the upstream sends
// the second event only after the client has read the first, so a gateway
// that buffered the answer would deadlock and time out.
func TestEventStreamIsFlushedChunkByChunk(t *testing.T) {
	clientGotFirst := make(chan struct{})
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-clientGotFirst:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service events %s
	}`, up.URL))
	resp, err := in.client.Get(in.url("/api/events/stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	close(clientGotFirst)
	_, _ = rd.ReadString('\n')
	line, err = rd.ReadString('\n')
	if err != nil || line != "data: two\n" {
		t.Fatalf("second event: %q, %v", line, err)
	}
}

func TestNotFoundAnswersJSON(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s
	}`, up.URL))
	for _, path := range []string{"/api/nope/x", "/api", "/api/", "/api//users", "/api/nope"} {
		t.Run(path, func(t *testing.T) {
			resp, body := in.get(path)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			m := decodeJSON(t, body)
			if m["error"] == "" || m["error"] == nil {
				t.Errorf("no error message: %s", body)
			}
			if _, ok := m["service"]; !ok {
				t.Errorf("no service field: %s", body)
			}
		})
	}
	_, body := in.get("/api/nope/x")
	if m := decodeJSON(t, body); m["service"] != "nope" {
		t.Errorf("service field %v, want nope", m["service"])
	}
}

func TestUpstreamSeesItsHostForwardedHeadersAndNoHopByHop(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s
	}`, up.URL))
	h := http.Header{}
	h.Set("Connection", "X-Secret-Hop, keep-alive")
	h.Set("X-Secret-Hop", "must-not-pass")
	h.Set("Proxy-Authorization", "Basic cHJveHk6cHc=")
	h.Set("TE", "trailers")
	h.Set("Upgrade", "h2c")
	h.Set("X-Kept", "yes")
	resp, body := in.do("GET", "/api/users/1", nil, h)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	e := decodeEcho(t, body)
	upHost := strings.TrimPrefix(up.URL, "http://")
	if e.Host != upHost {
		t.Errorf("upstream Host %q, want its own %q", e.Host, upHost)
	}
	if got := e.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got := e.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	if got := e.Header.Get("X-Forwarded-Host"); got != fmt.Sprintf("127.0.0.1:%d", in.port) {
		t.Errorf("X-Forwarded-Host %q", got)
	}
	for _, hop := range []string{"X-Secret-Hop", "Proxy-Authorization", "Te", "Upgrade"} {
		if v := e.Header.Get(hop); v != "" {
			t.Errorf("hop-by-hop %s forwarded: %q", hop, v)
		}
	}
	if e.Header.Get("X-Kept") != "yes" {
		t.Error("end-to-end header X-Kept lost")
	}
}

func TestDotSegmentsNeverEscapeTheirService(t *testing.T) {
	users := upstreamServer(t, echoHandler)
	admin := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("admin service reached with %s", r.URL)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s/v1
		service admin %s {
			token admin-secret
		}
	}`, users.URL, admin.URL))
	for _, path := range []string{
		"/api/users/../admin/x", "/api/users/%2e%2e/admin/x", "/api/users/..%2fadmin/x", "/api/users/%2e%2e%2fadmin",
		"/api/users/.%2e/x", "/api/users/a/%2E%2E/%2E%2E/x", "/api/users/x%5c..%5cadmin", "/api/users/%00",
		"/api/%2e%2e/admin/x", "/api/users%2f..%2fadmin/x", "/api/users/./x",
	} {
		t.Run(path, func(t *testing.T) {
			// send the path as is: no client-side cleaning
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if resp.StatusCode == 200 {
				var buf bytes.Buffer
				_, _ = buf.ReadFrom(resp.Body)
				e := decodeEcho(t, buf.Bytes())
				if !strings.HasPrefix(e.Path, "/v1/") || strings.Contains(e.Path, "..") {
					t.Fatalf("upstream path %q escaped /v1", e.Path)
				}
				return
			}
			if resp.StatusCode != 400 && resp.StatusCode != 404 {
				t.Fatalf("status %d, want 400 or a clean forward", resp.StatusCode)
			}
		})
	}
}

func TestTokenReplacesClientAuthorizationForItsServiceOnly(t *testing.T) {
	t.Setenv("GW_TEST_USERS_TOKEN", "users-secret-token-1234")
	tokenFile := filepath.Join(t.TempDir(), "billing")
	if err := os.WriteFile(tokenFile, []byte("billing-secret-token-5678\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var seen = make(chan string, 10)
	record := func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
		echoHandler(w, r)
	}
	users := upstreamServer(t, record)
	billing := upstreamServer(t, record)
	open := upstreamServer(t, record)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			token {env.GW_TEST_USERS_TOKEN}
		}
		service billing %s {
			token_file %s
		}
		service open %s
	}`, users.URL, billing.URL, tokenFile, open.URL))

	tests := []struct{ path, want string }{
		{"/api/users/1", "Bearer users-secret-token-1234"},
		{"/api/billing/1", "Bearer billing-secret-token-5678"},
		{"/api/open/1", "Bearer client-own-credential"},
	}
	for _, tt := range tests {
		resp, body := in.get(tt.path, "Authorization", "Bearer client-own-credential")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tt.path, resp.StatusCode)
		}
		if got := <-seen; got != tt.want {
			t.Errorf("%s: upstream saw Authorization %q, want %q", tt.path, got, tt.want)
		}
		for k, v := range resp.Header {
			if strings.Contains(strings.Join(v, ","), "secret-token") {
				t.Errorf("%s: token leaked in response header %s", tt.path, k)
			}
		}
		if strings.Contains(string(body), "secret-token") && tt.path == "/api/open/1" {
			t.Errorf("%s: another service's token in the body", tt.path)
		}
	}
	// without a client credential the token is still sent
	in.get("/api/users/2")
	if got := <-seen; got != "Bearer users-secret-token-1234" {
		t.Errorf("no client credential: upstream saw %q", got)
	}

	// never in the admin API, never in any log line (debug level, credentials logging on)
	for _, path := range []string{"/gateway/health", "/gateway/pools", "/config/"} {
		_, body := in.adminDo("GET", path)
		if bytes.Contains(body, []byte("secret-token")) {
			t.Errorf("admin %s shows a token: %s", path, body)
		}
	}
	logs := in.logs()
	if !strings.Contains(logs, "/api/users/1") {
		t.Fatalf("access log not written; cannot check for leaks:\n%s", logs)
	}
	if strings.Contains(logs, "secret-token") {
		t.Errorf("a token reached the logs:\n%s", logs)
	}
}

func TestUpstreamFailuresAnswerJSON(t *testing.T) {
	// a port nobody listens on
	closed := freePort(t)
	slow, hang := heldUpstream(t, "/")
	t.Cleanup(func() { close(hang) })
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service down http://127.0.0.1:%d {
			dial_timeout 1s
		}
		service slow %s {
			timeout 300ms
		}
	}`, closed, slow))

	start := time.Now()
	resp, body := in.get("/api/down/x")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("refused upstream: status %d: %s", resp.StatusCode, body)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("502 took %v, beyond the dial timeout", elapsed)
	}
	m := decodeJSON(t, body)
	if m["service"] != "down" || m["error"] == "" {
		t.Errorf("body %s", body)
	}
	if strings.Contains(string(body), fmt.Sprint(closed)) {
		t.Errorf("error body shows the upstream address: %s", body)
	}

	resp, body = in.get("/api/slow/x")
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("hanging upstream: status %d: %s", resp.StatusCode, body)
	}
	if m := decodeJSON(t, body); m["service"] != "slow" {
		t.Errorf("body %s", body)
	}
}

func TestMaxBodyAnswers413(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s
		max_body 1KiB
	}`, up.URL))
	resp, body := in.do("POST", "/api/users/x", bytes.NewReader(bigBody(4096)), nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	decodeJSON(t, body)
	resp, _ = in.do("POST", "/api/users/x", bytes.NewReader(bigBody(512)), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("small body: status %d", resp.StatusCode)
	}
}
