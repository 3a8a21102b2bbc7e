package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// Nothing the gateway starts (health checkers, memory monitor, cache and
// its refresh workers) survives a stop, and 20 reloads under load lose no
// request: not even a POST on a keep-alive connection, which no client
// retries (package handoff).
func TestStopAndReloadLeaveNothingBehind(t *testing.T) {
	before := goleak.IgnoreCurrent()
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		echoHandler(w, r)
	})
	block := func(retries int) string {
		return fmt.Sprintf(`gateway /api/* {
			service users %s {
				health /health 50ms
				retries %d
				max_conns 8
				max_pending 100
			}
			cache {
				stale_while_revalidate 1s
			}
			memory_interval 10ms
		}`, up.URL, retries)
	}

	func() {
		in := startCaddy(t, block(0))
		defer in.stop()
		resp, _ := in.get("/api/users/warm")
		if resp.Header.Get("Cache-Status") == "" {
			t.Fatalf("cache not in the path")
		}

		// load while reloading: unchanged config (cache kept) then changed
		// config. The clients POST on keep-alive connections, which no
		// client retries once the request went out: every request must be
		// answered.
		var failed atomic.Int64
		done := reloadUnderLoad(in, block, func() {
			resp, err := in.client.Post(in.url("/api/users/load"), "text/plain", strings.NewReader("hello"))
			if !answered(t, resp, err) {
				failed.Add(1)
			}
		})
		t.Logf("%d keep-alive POSTs over 20 reloads, %d failed", done, failed.Load())
		in.client.CloseIdleConnections()
	}()
	up.Close()
	// startCaddy's cleanup would stop again: make it a no-op
	caddyMu.Lock()
	goleak.VerifyNone(t, append(caddyProcessGoroutines, before)...)
}

// caddyProcessGoroutines are Caddy's own process-wide goroutines, which
// outlive a config by design: the admin server (it survives caddy.Stop in
// a process that keeps running), the storage lock refresher, and the log
// file roller.
var caddyProcessGoroutines = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.replaceLocalAdminServer.func2"),
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	goleak.IgnoreAnyFunction("github.com/DeRuina/timberjack.(*Logger).millRun"),
}
