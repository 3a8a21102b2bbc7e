package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// The exchange itself: a client that stalls its request body, and what the
// retrying writer and the cache pass through (1xx answers, trailers).

// rawExchange sends raw bytes on a new connection and reads one answer,
// failing the test (instead of hanging it) when none comes within d.
func (in *instance) rawExchange(t *testing.T, d time.Duration, raw string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(d)) // a stuck gateway fails the test
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is stalled: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp, body
}

// A client that announces a body and stops sending it: the exchange ends
// with the service's timeout (408, the client's fault: not an upstream
// error), its admission slot is released at once, and
// an upstream that is merely slow still gets 504. Streamed (POST) and
// buffered-for-retry (PUT with retries) bodies alike.
func TestStalledRequestBodyEndsWithTimeout(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/ignore"):
			// answers at once without waiting for the body (with
			// Connection: close, net/http does not read the rest first)
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "early")
		case strings.HasPrefix(r.URL.Path, "/slow"):
			_, _ = io.ReadAll(r.Body)
			<-r.Context().Done() // the behaviour under test: an upstream slower than the timeout
		default:
			b, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "read %d", len(b))
		}
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service stream %s {
			timeout 1s
			max_conns 1
		}
		service buffered %s {
			timeout 1s
			max_conns 1
			retries 2
		}
	}`, up.URL, up.URL))

	stalled := func(method, path string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123456789"
	}
	whole := func(method, path string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789"
	}
	tests := []struct {
		name, service, raw string
		wantStatus         int
		wantBody           string
		wantKind           string // the caddy_gateway_errors_total kind counted, if any
	}{
		{"streamed body stalls", "stream", stalled("POST", "/api/stream/read"), http.StatusRequestTimeout, "request body timeout", "bad_request"},
		{"buffered body stalls", "buffered", stalled("PUT", "/api/buffered/read"), http.StatusRequestTimeout, "request body timeout", "bad_request"},
		{"upstream answers before the stalled body", "stream", stalled("POST", "/api/stream/ignore"), http.StatusOK, "early", ""},
		{"whole body, slow upstream", "stream", whole("POST", "/api/stream/slow"), http.StatusGatewayTimeout, "upstream timeout", "timeout"},
		{"whole body, slow upstream, buffered", "buffered", whole("PUT", "/api/buffered/slow"), http.StatusGatewayTimeout, "upstream timeout", "timeout"},
	}
	errorsOf := func(service string) map[string]float64 {
		m, out := scrape(t, in), map[string]float64{}
		for _, kind := range []string{"bad_request", "timeout", "upstream"} {
			out[kind] = m[fmt.Sprintf(`caddy_gateway_errors_total{kind=%q,service=%q}`, kind, service)]
		}
		return out
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := errorsOf(tc.service)
			resp, body := in.rawExchange(t, 15*time.Second, tc.raw)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantBody) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if tc.wantStatus != http.StatusOK {
				if e := decodeJSON(t, body); e["service"] != tc.service || e["status"] != float64(tc.wantStatus) {
					t.Errorf("error body %v", e)
				}
			}
			if tc.wantKind != "" { // recorded once the answer is written
				testutil.Eventually(t, tc.wantKind+" error counted", func() bool {
					return errorsOf(tc.service)[tc.wantKind] > before[tc.wantKind]
				})
			}
			for kind, n := range errorsOf(tc.service) {
				want := 0.0
				if kind == tc.wantKind {
					want = 1
				}
				if d := n - before[kind]; d != want {
					t.Errorf("%s errors counted: %v, want %v", kind, d, want)
				}
			}
			// the slot is free again: with max_conns 1, a normal request is admitted
			waitPoolsIdle(t, in, tc.service)
			resp, body = in.do(http.MethodPost, "/api/"+tc.service+"/read", strings.NewReader("abc"), nil)
			if resp.StatusCode != http.StatusOK || string(body) != "read 3" {
				t.Fatalf("next request: %d %q", resp.StatusCode, body)
			}
		})
	}

	noPanic(t, in)
}

// A stalled body with nothing else going on: the breaker of the target
// stays closed (the client is at fault, not the upstream).
func TestStalledRequestBodyIsNoBreakerFailure(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "read %d", len(b))
	})
	addr := strings.TrimPrefix(up.URL, "http://")
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service s %s {
			timeout 500ms
			breaker 1 1h
		}
	}`, up.URL))
	resp, body := in.rawExchange(t, 15*time.Second,
		"POST /api/s/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123456789")
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("stalled body: %d %q, want 408", resp.StatusCode, body)
	}
	if ts := targetState(t, in, "s", addr); ts.Breaker != "closed" {
		t.Errorf("breaker %q after a client's stalled body, want closed", ts.Breaker)
	}
	if resp, body := in.do(http.MethodPost, "/api/s/x", strings.NewReader("abc"), nil); resp.StatusCode != http.StatusOK {
		t.Errorf("next request: %d %q", resp.StatusCode, body)
	}
	waitPoolsIdle(t, in, "s")
	noPanic(t, in)
}

// An upstream's 103 Early Hints reaches the client with its headers, but
// they do not stay in the final answer (a 200, or the 502 after the retries
// ran out), and do not pile up over attempts — as with stock reverse_proxy.
func TestEarlyHintsStayInterimThroughRetries(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		testutil.EarlyHints(w)
		if strings.HasPrefix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, "final")
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service hints %s {
			retries 2
			retry_backoff 1ms 2ms
		}
	}`, up.URL))

	for _, tc := range []struct {
		path       string
		wantStatus int
	}{
		{"/api/hints/ok", http.StatusOK},
		{"/api/hints/fail", http.StatusBadGateway},
	} {
		t.Run(tc.path, func(t *testing.T) {
			var mu sync.Mutex
			var hints []textproto.MIMEHeader
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				if code == http.StatusEarlyHints {
					hints = append(hints, h)
				}
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, in.url(tc.path), nil)
			resp, err := in.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			_, _ = io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			for _, k := range []string{"X-Hint-Secret", "Link"} {
				if v := resp.Header.Values(k); len(v) != 0 {
					t.Errorf("final %d carries the 103's %s: %q", resp.StatusCode, k, v)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(hints) == 0 {
				t.Fatal("no 103 reached the client")
			}
			for i, h := range hints {
				if v := h.Values("Link"); len(v) != 1 {
					t.Errorf("103 #%d: Link %q, want exactly the upstream's one", i, v)
				}
			}
		})
	}
	noPanic(t, in)
}

// The fields of an upstream 103 go out with the 103 only, not with
// the final answer, neither on the miss nor on the later hit.
func TestEarlyHintsStayInterimThroughTheCache(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		testutil.EarlyHints(w)
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "final")
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service a %s
		cache
	}`, up.URL))
	for _, want := range []string{"fwd=miss", "; hit"} {
		var hints []textproto.MIMEHeader
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, h)
				return nil
			},
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", in.url("/api/a/page"), nil)
		resp, err := in.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !strings.Contains(resp.Header.Get("Cache-Status"), want) {
			t.Fatalf("Cache-Status %q, want %q", resp.Header.Get("Cache-Status"), want)
		}
		if resp.Header.Get("Link") != "" || resp.Header.Get("X-Hint-Secret") != "" {
			t.Fatalf("%s: 103 fields in the final answer: %v", want, resp.Header)
		}
		if want == "fwd=miss" && (len(hints) != 1 || hints[0].Get("X-Hint-Secret") != "from-103") {
			t.Fatalf("103 not passed on: %v", hints)
		}
	}
}

// Trailers the upstream sends after a chunked body reach the client through
// a retrying service as through a plain one.
func TestUpstreamTrailersReachTheClient(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T")
		_, _ = io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-T", "tv")
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service plain %s
		service retrying %s {
			retries 2
		}
	}`, up.URL, up.URL))
	for _, s := range []string{"plain", "retrying"} {
		t.Run(s, func(t *testing.T) {
			resp, body := in.get("/api/" + s + "/t")
			if resp.StatusCode != http.StatusOK || string(body) != "body" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if got := resp.Trailer.Get("X-T"); got != "tv" {
				t.Errorf("trailer X-T = %q, want tv (trailers %v)", got, resp.Trailer)
			}
		})
	}
	noPanic(t, in)
}
