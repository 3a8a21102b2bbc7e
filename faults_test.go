package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// Faults: what the gateway does when an upstream (or the client) misbehaves.
// After each, /gateway/pools shows nothing stuck.

// poolState is one service's entry of /gateway/pools.
type poolState struct {
	Admission struct {
		InFlight int64 `json:"in_flight"`
		Queued   int64 `json:"queued"`
	} `json:"admission"`
	Connections struct {
		Active int64 `json:"active"`
	} `json:"connections"`
}

func (in *instance) poolOf(t testing.TB, service string) poolState {
	t.Helper()
	_, body := in.adminDo("GET", "/gateway/pools")
	var p struct {
		Gateways map[string]struct {
			Services map[string]poolState `json:"services"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("/gateway/pools: %v: %s", err, body)
	}
	s, ok := p.Gateways["gateway"].Services[service]
	if !ok {
		t.Fatalf("/gateway/pools has no service %q: %s", service, body)
	}
	return s
}

// waitPoolsIdle polls until nothing is in flight or queued for the
// services, and their in-flight gauge is 0, or fails after a deadline.
func waitPoolsIdle(t *testing.T, in *instance, services ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var busy []string
		m := scrape(t, in)
		for _, s := range services {
			p := in.poolOf(t, s)
			if p.Admission.InFlight != 0 || p.Admission.Queued != 0 || p.Connections.Active != 0 {
				busy = append(busy, fmt.Sprintf("%s: %+v", s, p))
			}
			if g := m[fmt.Sprintf(`caddy_gateway_inflight{service=%q}`, s)]; g != 0 {
				busy = append(busy, fmt.Sprintf("%s: caddy_gateway_inflight %v", s, g))
			}
		}
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("still busy after the fault: %v", busy)
			return
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func noPanic(t *testing.T, in *instance) {
	t.Helper()
	if logs := in.logs(); strings.Contains(strings.ToLower(logs), "panic") {
		t.Errorf("panic in the logs:\n%s", tail(logs, 4000))
	}
}

// getWithin sends a GET that must be answered within d: a stuck gateway
// fails the test instead of hanging it.
func (in *instance) getWithin(t *testing.T, d time.Duration, path string) (*http.Response, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.url(path), nil)
	resp, err := in.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// An upstream that dies in the middle of a cacheable answer: the client
// sees a cut (error or short body), nothing partial is stored, and the next
// request for the same URL is fetched again, whole, at once.
func TestFaultUpstreamClosesMidResponse(t *testing.T) {
	full := strings.Repeat("0123456789", 100) // 1000 bytes
	var mu sync.Mutex
	hits := map[string]int{}
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		n := hits[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		chunked := strings.HasPrefix(r.URL.Path, "/chunked")
		if !chunked {
			w.Header().Set("Content-Length", fmt.Sprint(len(full)))
		}
		if n > 1 {
			_, _ = io.WriteString(w, full)
			return
		}
		_, _ = io.WriteString(w, full[:100])
		w.(http.Flusher).Flush()
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_ = buf.Flush()
		_ = conn.Close()
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service flaky %s {
			timeout 5s
		}
		cache
	}`, up.URL))

	for _, path := range []string{"/api/flaky/length", "/api/flaky/chunked"} {
		t.Run(path, func(t *testing.T) {
			resp, body, err := in.getWithin(t, 10*time.Second, path)
			if err == nil && resp.StatusCode == 200 && len(body) == len(full) {
				t.Fatalf("a cut answer reached the client whole")
			}
			if resp != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 && err == nil {
				t.Errorf("the cut was not signalled to the client: status %d, %d bytes, no error", resp.StatusCode, len(body))
			}
			// the next request: fetched again (nothing partial stored), not stuck
			resp, body, err = in.getWithin(t, 5*time.Second, path)
			if err != nil {
				t.Fatalf("second GET after a cut answer: %v (a stuck cache flight?)", err)
			}
			if resp.StatusCode != 200 || string(body) != full {
				t.Fatalf("second GET: status %d, %d bytes (Cache-Status %q)", resp.StatusCode, len(body), resp.Header.Get("Cache-Status"))
			}
			if cs := resp.Header.Get("Cache-Status"); strings.Contains(cs, "hit") {
				t.Errorf("second GET served from cache: %q", cs)
			}
			mu.Lock()
			n := hits[strings.TrimPrefix(path, "/api/flaky")]
			mu.Unlock()
			if n != 2 {
				t.Errorf("upstream hit %d times, want 2", n)
			}
			// and now it is cached, whole
			resp, body, err = in.getWithin(t, 5*time.Second, path)
			if err != nil || resp.StatusCode != 200 || string(body) != full {
				t.Fatalf("third GET: %v, %d bytes", err, len(body))
			}
		})
	}
	waitPoolsIdle(t, in, "flaky")
	noPanic(t, in)
}

// Answers that are not HTTP, or whose head is broken or oversized, or whose
// status is no HTTP status or an unasked-for protocol switch: 502 JSON naming
// the service, never its address — with the cache on and off, since both
// write the status through different writers (a status below 100 made
// net/http's WriteHeader panic in either).
func TestFaultUpstreamGarbageOrOversizedHeaders(t *testing.T) {
	cases := []struct{ name, resp string }{
		{"not-http", "SSH-2.0-OpenSSH_9.6\r\n\r\n"},
		{"bad-header-line", "HTTP/1.1 200 OK\r\nthis is not a header line\r\n\r\n"},
		{"bad-status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"},
		{"bad-content-length", "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"},
		{"two-content-lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"bad-transfer-encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked, zz\r\n\r\n"},
		{"empty", ""},
		{"head-cut", "HTTP/1.1 200 OK\r\nContent-Type: text/pl"},
		{"oversized-head", "HTTP/1.1 200 OK\r\nX-Huge: " + strings.Repeat("h", 11<<20) + "\r\n\r\n"},
		// above the 1 MiB default of the service's transport (Go's own is 10 MB)
		{"head-2MiB", "HTTP/1.1 200 OK\r\nX-Huge: " + strings.Repeat("h", 2<<20) + "\r\nContent-Length: 0\r\n\r\n"},
		{"binary", "\x00\x01\x02\x03\xff\xfe\r\n\r\n"},
		{"status-600", "HTTP/1.1 600 Library Error\r\nContent-Length: 0\r\n\r\n"},
		{"status-999", "HTTP/1.1 999 Nope\r\nContent-Length: 2\r\n\r\nno"},
		{"status-099", "HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nno"},
		{"status-000", "HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n"},
		{"status-001-cacheable", "HTTP/1.1 001 X\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nno"},
		// the client's GET asked for no upgrade: the proxy made this an empty 200
		{"switch-101-unrequested", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
	}
	addrs := map[string]string{}
	upstreams := map[string]string{}
	var names []string
	for _, c := range cases {
		u := garbageUpstream(t, c.resp)
		upstreams[c.name] = u
		addrs[c.name] = strings.TrimPrefix(u, "http://")
		names = append(names, c.name)
	}
	for _, cache := range []string{"", "cache"} {
		t.Run("cache="+fmt.Sprint(cache != ""), func(t *testing.T) {
			var block strings.Builder
			block.WriteString("gateway /api/* {\n")
			for _, c := range cases {
				fmt.Fprintf(&block, "\t\tservice %s %s {\n\t\t\ttimeout 5s\n\t\t}\n", c.name, upstreams[c.name])
			}
			fmt.Fprintf(&block, "\t\t%s\n\t}", cache)
			in := startCaddy(t, block.String())
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					resp, body, err := in.getWithin(t, 10*time.Second, "/api/"+c.name+"/x")
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != http.StatusBadGateway {
						t.Fatalf("status %d, want 502: %.300s", resp.StatusCode, body)
					}
					if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
						t.Errorf("Content-Type %q", ct)
					}
					if m := decodeJSON(t, body); m["service"] != c.name || m["status"] != float64(502) {
						t.Errorf("body %s", body)
					}
					if strings.Contains(string(body), addrs[c.name]) || strings.Contains(string(body), "127.0.0.1") {
						t.Errorf("error body shows the upstream address: %s", body)
					}
				})
			}
			waitPoolsIdle(t, in, names...)
			noPanic(t, in)
		})
	}
}

// An upstream that sends its headers, then nothing: the client has the
// headers, then the answer is cut at the service timeout; the upstream's
// request is cancelled and the slot released.
func TestFaultUpstreamHangsAfterHeaders(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "1000")
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(30 * time.Second): // the behaviour under test: a hung upstream
		}
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service hung %s {
			timeout 300ms
			max_conns 1
		}
	}`, up.URL))
	start := time.Now()
	resp, err := in.client.Get(in.url("/api/hung/x"))
	if err != nil {
		t.Fatalf("no headers: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err == nil || len(body) >= 1000 {
		t.Errorf("the hung answer was not cut: %d bytes, err %v", len(body), err)
	}
	if string(body) != "partial" {
		t.Errorf("client got %q before the cut", body)
	}
	if elapsed > 5*time.Second {
		t.Errorf("cut after %v; timeout is 300ms", elapsed)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was never cancelled")
	}
	waitPoolsIdle(t, in, "hung")
	// the single slot is free again: a new request is admitted (not 503)
	resp2, body2, err := in.getWithin(t, 10*time.Second, "/api/hung/y")
	if resp2 != nil && resp2.StatusCode == http.StatusServiceUnavailable {
		t.Errorf("slot not released: 503 %s", body2)
	}
	_ = err // cut again, as expected
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the second upstream request was never cancelled")
	}
	waitPoolsIdle(t, in, "hung")
	noPanic(t, in)
}

// A refused connection is a 502 at once, with retries too: no wait for the
// dial timeout.
func TestFaultRefusedConnectionIsFast502(t *testing.T) {
	refused := freePort(t)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service down http://127.0.0.1:%d
		service downretry http://127.0.0.1:%d {
			retries 2
			retry_backoff 10ms 50ms
		}
	}`, refused, refused))
	for _, svc := range []string{"down", "downretry"} {
		for _, method := range []string{"GET", "POST"} {
			start := time.Now()
			resp, body := in.do(method, "/api/"+svc+"/x", strings.NewReader("body"), nil)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%s %s: 502 took %v (default dial_timeout is 5s; a refusal is immediate)", method, svc, d)
			}
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("%s %s: status %d: %s", method, svc, resp.StatusCode, body)
			}
			if m := decodeJSON(t, body); m["service"] != svc {
				t.Errorf("body %s", body)
			}
			if strings.Contains(string(body), fmt.Sprint(refused)) {
				t.Errorf("error body shows the upstream address: %s", body)
			}
		}
	}
	waitPoolsIdle(t, in, "down", "downretry")
	noPanic(t, in)
}

// A host name that does not resolve (.invalid never does, RFC 6761) is a 502.
func TestFaultUnresolvableHostIs502(t *testing.T) {
	in := startCaddy(t, `gateway /api/* {
		service ghost http://nonexistent.invalid:80 {
			dial_timeout 3s
			timeout 10s
		}
	}`)
	resp, body, err := in.getWithin(t, 20*time.Second, "/api/ghost/x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", resp.StatusCode, body)
	}
	if m := decodeJSON(t, body); m["service"] != "ghost" {
		t.Errorf("body %s", body)
	}
	if strings.Contains(string(body), "nonexistent") {
		t.Errorf("error body shows the upstream host: %s", body)
	}
	waitPoolsIdle(t, in, "ghost")
	noPanic(t, in)
}

// A client that goes away mid-request (waiting for the answer, or in the
// middle of sending its body): the upstream's request is cancelled and the
// pool slot released — with max_conns 1, the next request is admitted.
func TestFaultClientDisconnectCancelsUpstream(t *testing.T) {
	started := make(chan string, 4)
	cancelled := make(chan string, 4)
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		started <- r.URL.Path
		if r.Method == http.MethodPost {
			_, _ = io.ReadAll(r.Body) // fails when the client goes
		}
		select {
		case <-r.Context().Done():
			cancelled <- r.URL.Path
		case <-time.After(30 * time.Second): // the behaviour under test: a slow upstream
		}
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service slow %s {
			max_conns 1
		}
	}`, up.URL))

	for _, c := range []struct{ name, raw string }{
		{"waiting", "GET /api/slow/waiting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"sending", "POST /api/slow/sending HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n0123456789"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(conn, c.raw); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-started:
				if p != "/"+c.name {
					t.Fatalf("upstream started %s", p)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the request never reached the upstream")
			}
			conn.Close()
			select {
			case p := <-cancelled:
				if p != "/"+c.name {
					t.Fatalf("upstream cancelled %s", p)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request was not cancelled when the client went away")
			}
			waitPoolsIdle(t, in, "slow")
			resp, body, err := in.getWithin(t, 10*time.Second, "/api/slow/ok")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("next request: %v %v %s", err, resp, body)
			}
		})
	}
	noPanic(t, in)
}

// A slow client reading a large answer: the gateway streams it (memory
// does not grow with the answer, the cache stops recording past
// max_item_size) and nothing it started outlives the response.
func TestFaultSlowClientLargeResponse(t *testing.T) {
	const size = 32 << 20
	chunk := bytes.Repeat([]byte("z"), 64<<10)
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60") // storable but for its size
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service big %s
		cache {
			max_item_size 1MiB
		}
	}`, up.URL))
	in.get("/api/big/warmup") // first connections, pools and series exist before the baseline
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/big/file HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16<<10), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16<<10)
	var got, peak uint64
	for i := 0; ; i++ {
		n, err := resp.Body.Read(buf)
		got += uint64(n)
		if i%64 == 0 {
			time.Sleep(5 * time.Millisecond) // the behaviour under test: a client slower than the upstream
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		if err != nil {
			break
		}
	}
	if got != size {
		t.Fatalf("client read %d bytes, want %d", got, size)
	}
	if grown := int64(peak) - int64(before.HeapInuse); grown > 12<<20 {
		t.Errorf("heap grew by %d MiB while streaming a %d MiB answer", grown>>20, size>>20)
	}
	testutil.Eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= goroutines })
	waitPoolsIdle(t, in, "big")
	if resp, _ := in.get("/api/big/file"); strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Error("an answer over max_item_size was served from the cache")
	}
}

// An upstream switches protocols whether asked or not: a client that asked
// to upgrade gets its upgraded connection (the 101 and then both ways),
// with the cache on or off; one that did not ask gets a 502 JSON, not the
// empty 200 the proxy made of the unrequested 101.
func TestFaultSwitchingProtocolsOnlyWhenAsked(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		upgradeToEcho(w)
	})
	for _, cache := range []string{"", "cache"} {
		t.Run("cache="+fmt.Sprint(cache != ""), func(t *testing.T) {
			in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
				service ws %s
				%s
			}`, up.URL, cache))
			for _, c := range []struct {
				name    string
				upgrade string // request header lines
				status  int
			}{
				{"asked", "Connection: Upgrade\r\nUpgrade: echo\r\n", http.StatusSwitchingProtocols},
				{"not asked", "", http.StatusBadGateway},
			} {
				t.Run(c.name, func(t *testing.T) {
					conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
					if err != nil {
						t.Fatalf("dialing the gateway: %v", err)
					}
					defer conn.Close()
					_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
					br := bufio.NewReader(conn)
					fmt.Fprintf(conn, "GET /api/ws/x HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", c.upgrade)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("reading the answer: %v", err)
					}
					if resp.StatusCode != c.status {
						t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
					}
					if c.status != http.StatusSwitchingProtocols {
						body, _ := io.ReadAll(resp.Body)
						if m := decodeJSON(t, body); m["service"] != "ws" || m["status"] != float64(c.status) {
							t.Errorf("body %s", body)
						}
						return
					}
					if _, err := io.WriteString(conn, "ping"); err != nil {
						t.Fatalf("writing on the upgraded connection: %v", err)
					}
					buf := make([]byte, 4)
					if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
						t.Fatalf("echo on the upgraded connection: %q %v", buf, err)
					}
				})
			}
			noPanic(t, in)
		})
	}
}
