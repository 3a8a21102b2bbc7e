package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testredis"
	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// get sends a GET with the Host a load balancer in front of both instances
// would pass on: cache keys include the host.
func (p *process) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", p.base+path, nil)
	req.Host = "api.example.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Two Caddy processes share one real Redis: the second instance's first GET
// is a hit, a purge on one clears both, and killing Redis under load fails
// no request.
func TestTwoInstancesShareARedisTier(t *testing.T) {
	rs := testredis.Start(t)
	var upstreamCalls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		w.Header().Set("Cache-Control", "public, max-age=300")
		echoHandler(w, r)
	})
	block := fmt.Sprintf(`gateway /api/* {
		service users %s
		cache {
			redis %s {
				key_prefix gwtest
				timeout 50ms
			}
		}
	}`, up.URL, rs.URL())
	a, b := runCaddy(t, "", block), runCaddy(t, "", block)

	resp, _ := a.get(t, "/api/users/shared")
	mustContain(t, resp.Header.Get("Cache-Status"), "stored")
	// writes to Redis are asynchronous: wait until instance a reports it
	testutil.Eventually(t, "entry written to redis", func() bool {
		resp, err := http.Get(a.admin + "/gateway/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `"writes":1`)
	})
	before := upstreamCalls.Load()
	resp, _ = b.get(t, "/api/users/shared")
	if !strings.Contains(resp.Header.Get("Cache-Status"), "hit") || upstreamCalls.Load() != before {
		t.Fatalf("second instance: Cache-Status %q, %d upstream calls: want a Redis hit", resp.Header.Get("Cache-Status"), upstreamCalls.Load()-before)
	}

	// purge on a clears b's local tier and Redis
	req, _ := http.NewRequest("DELETE", a.admin+"/gateway/cache?service=users", nil)
	pr, err := http.DefaultClient.Do(req)
	if err != nil || pr.StatusCode != 200 {
		t.Fatalf("purge: %v %v", err, pr)
	}
	pr.Body.Close()
	testutil.Eventually(t, "purge reaches instance b", func() bool {
		resp, _ := b.get(t, "/api/users/shared")
		return !strings.Contains(resp.Header.Get("Cache-Status"), "hit")
	})

	// Redis killed and restarted under load: no failed request
	ld := startLoad(t, []*process{a, b, a, b}, func(i, n int) string { return fmt.Sprintf("/api/users/load/%d/%d", i, n%50) })
	ld.progress(100)
	rs.Kill()
	ld.progress(200)
	rs.Restart()
	testutil.Eventually(t, "redis tier back up on both", func() bool {
		for _, p := range []*process{a, b} {
			resp, err := http.Get(p.admin + "/gateway/health")
			if err != nil {
				return false
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), `"up":true`) {
				return false
			}
		}
		return true
	})
	ld.progress(100)
	if done, failed := ld.stop(); failed != 0 {
		t.Errorf("%d of %d requests failed while Redis was killed and restarted", failed, done)
	}
}

// load is GET traffic from a few goroutines until stop.
type load struct {
	t            *testing.T
	done, failed atomic.Int64
	quit         chan struct{}
	wg           sync.WaitGroup
	// check, when set, says whether a 200 answer is right; a wrong one counts as failed.
	check func(*http.Response) bool
}

// startLoad sends GETs to the processes (one goroutine each), the n-th of goroutine i for path(i, n).
func startLoad(t *testing.T, procs []*process, path func(i, n int) string, check ...func(*http.Response) bool) *load {
	l := &load{t: t, quit: make(chan struct{})}
	if len(check) > 0 {
		l.check = check[0]
	}
	for i, p := range procs {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.quit:
					return
				default:
				}
				resp, err := http.Get(p.base + path(i, n))
				if err != nil || resp.StatusCode != 200 || (l.check != nil && !l.check(resp)) {
					l.failed.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
				l.done.Add(1)
			}
		})
	}
	return l
}

// progress waits until k more requests are done.
func (l *load) progress(k int64) {
	n := l.done.Load() + k
	testutil.Eventually(l.t, "load progressing", func() bool { return l.done.Load() >= n })
}

// stop ends the load and returns how many requests were done and failed.
func (l *load) stop() (done, failed int64) {
	close(l.quit)
	l.wg.Wait()
	return l.done.Load(), l.failed.Load()
}
