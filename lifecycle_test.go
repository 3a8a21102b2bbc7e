package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
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
		// answered. Only a dial that failed (the request never left) is
		// tried again; the kernel can refuse a connection in the
		// microseconds a new config's socket takes to stop listening.
		var badStatus, lost, dialFailed, done atomic.Int64
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
					post := func() (*http.Response, error) {
						return in.client.Post(in.url("/api/users/load"), "text/plain", strings.NewReader("hello"))
					}
					resp, err := post()
					for try := 0; isDialError(err) && try < 3; try++ {
						dialFailed.Add(1)
						resp, err = post()
					}
					switch {
					case err != nil:
						lost.Add(1)
						t.Logf("request lost: %v", err)
					case resp.StatusCode != 200:
						badStatus.Add(1)
						b, _ := io.ReadAll(resp.Body)
						t.Logf("failed request: %d %s", resp.StatusCode, b)
					}
					if resp != nil {
						io.Copy(io.Discard, resp.Body)
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
		t.Logf("%d requests over 20 reloads, %d dials refused and tried again", done.Load(), dialFailed.Load())
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

// isDialError reports whether err is a failure to connect: the request
// was never sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
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
