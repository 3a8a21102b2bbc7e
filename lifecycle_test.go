package gateway

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// Nothing the gateway starts (health checkers, memory monitor, cache and
// its refresh workers) survives a stop, and a reload under load loses no
// request.
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

		// load while reloading: unchanged config (cache kept) then changed config
		// A request is retried (up to 3 times) on a connection-level error
		// only — no response at all — as Go's transport does on its own for
		// reused connections: Caddy's listener hand-over between configs can
		// drop a connection accepted at the instant of the swap, with stock
		// reverse_proxy just the same (measured: ~1 per reload in-process,
		// more under -race). What the gateway answers must never be a failure.
		var badStatus, lost, dropped, done atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := in.client.Get(in.url("/api/users/load"))
					for try := 0; err != nil && try < 3; try++ {
						dropped.Add(1)
						resp, err = in.client.Get(in.url("/api/users/load"))
					}
					switch {
					case err != nil:
						lost.Add(1)
						t.Logf("request lost 4 times: %v", err)
					case resp.StatusCode != 200:
						badStatus.Add(1)
						b, _ := io.ReadAll(resp.Body)
						t.Logf("failed request: %d %s", resp.StatusCode, b)
					}
					if resp != nil {
						resp.Body.Close()
					}
					done.Add(1)
				}
			}()
		}
		for i := range 20 {
			in.load(block(i % 2))
			// let traffic flow through each new config before the next reload
			for n := done.Load() + 10; done.Load() < n; {
				runtime.Gosched()
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("%d requests over 20 reloads, %d connection drops retried", done.Load(), dropped.Load())
		if badStatus.Load() != 0 || lost.Load() != 0 {
			t.Errorf("%d requests answered with an error status, %d lost, of %d", badStatus.Load(), lost.Load(), done.Load())
		}
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
