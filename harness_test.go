package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// The integration tests run a real Caddy in this process, loaded from a
// Caddyfile through the real adapter, like `caddy run` does. Caddy holds one
// running config per process, so these tests do not run in parallel.

var caddyMu sync.Mutex

// instance is a running Caddy config under test.
type instance struct {
	t         testing.TB
	port      int    // the gateway site's port
	admin     int    // the admin endpoint's port
	adminOpts string // the admin option's block, if any
	logPath   string // debug-level log of everything Caddy logged
	client    *http.Client
}

// portsHanded are the ports freePort gave out in this test run.
var portsHanded sync.Map

// freePort finds a port that is free right now on every interface. It picks
// below Linux's ephemeral range (32768–60999), never twice in a run: the
// kernel gives ephemeral ports to whatever binds port 0 — another package's
// tests running beside these included — so a port taken from that range and
// released could be someone else's by the time Caddy binds it.
func freePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if _, taken := portsHanded.LoadOrStore(port, true); taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("no free port found below the ephemeral range")
	return 0
}

// adaptCaddyfile runs the Caddyfile adapter as `caddy adapt` does.
func adaptCaddyfile(t testing.TB, body string) ([]byte, error) {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	return cfg, err
}

// startCaddy loads a Caddyfile whose site block is the gateway directive
// given; global options set the admin port and a debug log to a file. The
// returned instance is stopped when the test ends.
func startCaddy(t testing.TB, gatewayBlock string) *instance {
	t.Helper()
	return startCaddyAdmin(t, "", gatewayBlock)
}

// startCaddyAdmin is startCaddy with a block for the admin global option
// (its subdirectives, such as origins); %[1]d in it is the admin port.
func startCaddyAdmin(t testing.TB, adminOpts, gatewayBlock string) *instance {
	t.Helper()
	in := &instance{t: t, port: freePort(t), admin: freePort(t), logPath: filepath.Join(t.TempDir(), "caddy.log")}
	if adminOpts != "" {
		in.adminOpts = " {\n" + fmt.Sprintf(adminOpts, in.admin) + "\n\t}"
	}
	caddyMu.Lock()
	in.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	t.Cleanup(in.stop)
	in.load(gatewayBlock)
	return in
}

// load (re)loads the config with a new gateway block, keeping ports.
func (in *instance) load(gatewayBlock string) {
	in.t.Helper()
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d%s
	log {
		output file %s
		format json
		level DEBUG
	}
	servers {
		log_credentials
	}
	grace_period 5s
}
http://127.0.0.1:%d {
	log {
		output file %s
		format json
	}
	%s
}
`, in.admin, in.adminOpts, in.logPath, in.port, in.logPath, gatewayBlock)
	cfg, err := adaptCaddyfile(in.t, cf)
	if err != nil {
		in.t.Fatalf("adapting Caddyfile: %v\n%s", err, cf)
	}
	if err := caddy.Load(cfg, true); err != nil {
		in.t.Fatalf("loading config: %v", err)
	}
}

func (in *instance) stop() {
	in.client.CloseIdleConnections()
	if err := caddy.Stop(); err != nil {
		in.t.Errorf("stopping caddy: %v", err)
	}
	caddyMu.Unlock()
}

// url is the gateway site's URL for path.
func (in *instance) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", in.port, path)
}

// do sends a request to the gateway and returns the answer with its body read.
func (in *instance) do(method, path string, body io.Reader, header http.Header) (*http.Response, []byte) {
	in.t.Helper()
	req, err := http.NewRequest(method, in.url(path), body)
	if err != nil {
		in.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := in.client.Do(req)
	if err != nil {
		in.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		in.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

// get is do for a GET without body.
func (in *instance) get(path string, header ...string) (*http.Response, []byte) {
	in.t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	return in.do(http.MethodGet, path, nil, h)
}

// adminDo calls the admin API.
func (in *instance) adminDo(method, path string) (*http.Response, []byte) {
	in.t.Helper()
	req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", in.admin, path), nil)
	resp, err := in.client.Do(req)
	if err != nil {
		in.t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// logs returns everything Caddy logged so far.
func (in *instance) logs() string {
	b, _ := os.ReadFile(in.logPath)
	return string(b)
}

// decodeJSON decodes body into a map, failing the test on bad JSON.
func decodeJSON(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("not JSON: %v: %q", err, body)
	}
	return m
}

// echo is an upstream that answers with what it received.
type echoed struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	RawPath string      `json:"raw_path"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	BodyLen int         `json:"body_len"`
	BodySum string      `json:"body_sum"`
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	e := echoed{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery, Host: r.Host,
		Header: r.Header, BodyLen: len(b), BodySum: fmt.Sprintf("%x", sha256.Sum256(b))}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(e)
}

func decodeEcho(t testing.TB, body []byte) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("upstream echo is not JSON: %v: %q", err, body)
	}
	return e
}

func mustContain(t testing.TB, haystack, needle string) {
	t.Helper()
	if !strings.Contains(haystack, needle) {
		t.Errorf("want %q in %q", needle, haystack)
	}
}

// bigBody is n deterministic bytes.
func bigBody(n int) []byte {
	return bytes.Repeat([]byte("0123456789abcdef"), n/16)
}

// reloadUnderLoad loads site(0) and site(1) in turn, 20 times, while 4
// clients call send again and again, and returns how many calls were made.
// Between reloads it lets at least 10 calls through the config just loaded.
func reloadUnderLoad(in *instance, site func(int) string, send func()) int64 {
	var done atomic.Int64
	stop := testutil.Repeat(4, func() bool {
		send()
		done.Add(1)
		return true
	})
	for i := range 20 {
		in.load(site(i % 2))
		for n := done.Load() + 10; done.Load() < n; {
			runtime.Gosched()
		}
	}
	stop()
	return done.Load()
}

// heldUpstream is an upstream that holds each request whose path starts with hold until release is
// closed (or the request ends), then echoes it.
func heldUpstream(t *testing.T, hold string) (url string, release chan struct{}) {
	release = make(chan struct{})
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, hold) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		echoHandler(w, r)
	})
	return up.URL, release
}

// getAsync sends a GET for path in the background; the channel gets its status (-1: no answer).
func (in *instance) getAsync(path string) <-chan int {
	status := make(chan int, 1)
	go func() {
		resp, err := in.client.Get(in.url(path))
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	return status
}

// answered reports whether a request got a 200 answer, and reports the
// failure otherwise; it reads and closes the body.
func answered(t testing.TB, resp *http.Response, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("request lost: %v", err)
		return false
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("request failed: %d %s", resp.StatusCode, b)
		return false
	}
	return true
}

// upgradeToEcho answers 101 Switching Protocols (to protocol "echo") and
// then echoes what the client sends until it goes: an upstream for
// upgraded (WebSocket-style) connections.
func upgradeToEcho(w http.ResponseWriter) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", "echo")
	w.WriteHeader(http.StatusSwitchingProtocols)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = brw.Flush()
	_, _ = io.Copy(conn, brw)
}
