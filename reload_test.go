package gateway

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-gateway/caddy-gateway/handoff"
)

// A keep-alive connection that is idle when Caddy reloads is handed to
// the new config's server (package handoff) instead of being closed: the
// client's next request on it — whether sent after the reload or while
// the old server shuts down — is answered, by the new config, and the
// connection stays open. Stock Caddy closes it, so a client that sends at
// that instant gets a reset; this test fails without the hand-over.
func TestReloadHandsIdleKeepAliveConnectionsToTheNewConfig(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	site := func(config string) string {
		return fmt.Sprintf(`header X-Config %s
		gateway /api/* {
			service users %s
		}`, config, up.URL)
	}
	in := startCaddy(t, site("one"))

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	exchange := func(method, body string) *http.Response {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := fmt.Sprintf("%s /api/users/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s", method, len(body), body)
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatalf("writing the request: %v", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("the connection was lost: %v", err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("reading the body: %v", err)
		}
		resp.Body.Close()
		return resp
	}

	if resp := exchange("GET", ""); resp.Header.Get("X-Config") != "one" || resp.Close {
		t.Fatalf("before the reload: config %q, close %v", resp.Header.Get("X-Config"), resp.Close)
	}
	for i, config := range []string{"two", "three", "four"} {
		in.load(site(config))
		// a POST is never retried by clients: it must be answered on this
		// very connection, by the config now running
		resp := exchange("POST", "after reload")
		if got := resp.Header.Get("X-Config"); resp.StatusCode != 200 || got != config || resp.Close {
			t.Fatalf("reload %d: status %d from config %q (want %q), Connection: close %v",
				i+1, resp.StatusCode, got, config, resp.Close)
		}
	}
}

// A new connection is never refused across reloads, not even one made
// while the old config stops: the address keeps one socket of its own,
// which gets every new connection, and each config's fresh socket is
// emptied into it and stops listening in the same instant. Clients open a
// new connection per POST while 20 reloads run; none may fail.
func TestReloadKeepsAcceptingNewConnections(t *testing.T) {
	if !handoff.SteeringSupported() {
		t.Skip("this kernel does not take SO_ATTACH_REUSEPORT_CBPF: a new connection can be reset in the instant a socket stops listening")
	}
	up := upstreamServer(t, echoHandler)
	site := func(retries int) string {
		return fmt.Sprintf(`gateway /api/* {
			service users %s {
				retries %d
			}
		}`, up.URL, retries)
	}
	in := startCaddy(t, site(0))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	var failed atomic.Int64
	done := reloadUnderLoad(in, site, func() {
		resp, err := client.Post(in.url("/api/users/x"), "text/plain", strings.NewReader("hello"))
		if !answered(t, resp, err) {
			failed.Add(1)
		}
	})
	t.Logf("%d new connections over 20 reloads, %d failed", done, failed.Load())
}

// An upgraded (WebSocket-style) connection ends at a reload, as with stock
// Caddy (the old config's proxy closes it): it is not left open on a new
// server that would read its frames as requests, nor kept half-alive.
func TestReloadNeverHandsOverAnUpgradedConnection(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		upgradeToEcho(w)
	})
	site := func(n int) string {
		return fmt.Sprintf(`gateway /api/* {
			service users %s {
				retries %d
			}
		}`, up.URL, n)
	}
	in := startCaddy(t, site(0))
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /api/users/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	echo := func(msg string) (string, error) {
		if _, err := io.WriteString(conn, msg); err != nil {
			return "", err
		}
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(br, buf)
		return string(buf), err
	}
	if got, err := echo("ping"); got != "ping" {
		t.Fatalf("echo before reload: %q %v", got, err)
	}

	in.load(site(1))
	// the old config's proxy closes its upgraded connections at cleanup; a
	// hand-over would instead leave this one open, answering frames with
	// HTTP errors or nothing
	var got string
	for err == nil {
		got, err = echo("GET / HTTP/1.1\r\n\r\n")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || strings.HasPrefix(got, "HTTP/1.1 4") {
		t.Fatalf("the upgraded connection outlived the reload: %q %v", got, err)
	}
}

// The cache outlives a reload that leaves it and its services unchanged
// (other settings may change), and starts empty when its config changes.
func TestReloadKeepsTheCacheUnlessItsConfigChanges(t *testing.T) {
	var calls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		echoHandler(w, r)
	})
	site := func(retries int, maxSize string) string {
		return fmt.Sprintf(`gateway /api/* {
			service users %s {
				retries %d
			}
			cache {
				max_size %s
			}
		}`, up.URL, retries, maxSize)
	}
	in := startCaddy(t, site(0, "8MiB"))
	status := func() string {
		t.Helper()
		resp, _ := in.get("/api/users/item")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("Cache-Status")
	}
	if cs := status(); !strings.Contains(cs, "fwd=miss") {
		t.Fatalf("first request: %q", cs)
	}
	for i, step := range []struct {
		retries int
		maxSize string
		hit     bool
	}{
		{1, "8MiB", true},   // a service setting changed: cache kept
		{0, "8MiB", true},   // and back
		{0, "16MiB", false}, // the cache's own config changed: a new, empty cache
		{1, "16MiB", true},
	} {
		in.load(site(step.retries, step.maxSize))
		before := calls.Load()
		cs := status()
		if hit := strings.HasPrefix(cs, "caddy-gateway; hit"); hit != step.hit {
			t.Fatalf("reload %d (retries %d, max_size %s): Cache-Status %q, want hit=%v",
				i+1, step.retries, step.maxSize, cs, step.hit)
		}
		if went := calls.Load() > before; went == step.hit {
			t.Fatalf("reload %d: upstream called %v with Cache-Status %q", i+1, went, cs)
		}
	}
}

// An HTTPS gateway site keeps its TLS across reloads: the hand-over
// wrapper never takes connections from under Caddy's TLS listener, so
// handlers see r.TLS and the upstream gets X-Forwarded-Proto: https.
func TestHTTPSGatewayKeepsTLSAcrossReloads(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		io.WriteString(w, "ok")
	})
	in := &instance{t: t, port: freePort(t), admin: freePort(t)}
	caddyMu.Lock()
	in.client = &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
	t.Cleanup(in.stop)
	storage := t.TempDir()
	load := func(retries int) {
		t.Helper()
		cfg, err := adaptCaddyfile(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	skip_install_trust
	storage file_system %s
	auto_https disable_redirects
	grace_period 5s
}
https://127.0.0.1:%d {
	tls internal
	header X-Scheme {scheme}
	gateway /api/* {
		service users %s {
			retries %d
		}
	}
}`, in.admin, storage, in.port, up.URL, retries))
		if err != nil {
			t.Fatal(err)
		}
		if err := caddy.Load(cfg, true); err != nil {
			t.Fatalf("loading config: %v", err)
		}
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/api/users/x", in.port)
	get := func() (*http.Response, error) {
		resp, err := in.client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	load(0)
	// the internal CA issues the certificate in the background
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		if resp, err = get(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 6 {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if resp.TLS == nil || resp.Header.Get("X-Scheme") != "https" || resp.Header.Get("X-Seen-Proto") != "https" {
			t.Fatalf("step %d: TLS %v, {scheme} %q, upstream saw X-Forwarded-Proto %q", i,
				resp.TLS != nil, resp.Header.Get("X-Scheme"), resp.Header.Get("X-Seen-Proto"))
		}
		load(i%2 + 1)
		resp, err = get()
	}
}
