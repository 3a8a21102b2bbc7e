package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testredis"
	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// Two Caddy processes share a real Redis Cluster of 3 masters with a
// replica each: the second instance's first GET is a cluster hit, a tag
// purge on one reaches the other, and killing a master under load fails no
// request while its replica is promoted; sharing then resumes.
func TestTwoInstancesShareARedisCluster(t *testing.T) {
	cl := testredis.StartCluster(t, 3, 1)
	var upstreamCalls atomic.Int64
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		w.Header().Set("Cache-Control", "public, max-age=300")
		if strings.Contains(r.URL.Path, "/short/") {
			w.Header().Set("Cache-Control", "public, max-age=1")
		}
		w.Header().Set("Surrogate-Key", "all")
		echoHandler(w, r)
	})
	urls := cl.URLs()
	block := fmt.Sprintf(`gateway /api/* {
		service users %s
		service orders %s
		service products %s
		cache {
			redis {
				cluster %s %s
				timeout 200ms
			}
		}
	}`, up.URL, up.URL, up.URL, urls[0], urls[1])
	a, b := runCaddy(t, "", block), runCaddy(t, "", block)
	adminGet := func(p *process, path string) string {
		resp, err := http.Get(p.admin + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if h := adminGet(a, "/gateway/health"); !strings.Contains(h, `"topology":"cluster"`) {
		t.Fatalf("/gateway/health does not show the cluster: %s", h)
	}
	testutil.Eventually(t, "the cluster's nodes in /gateway/health", func() bool {
		return strings.Count(adminGet(a, "/gateway/health"), `"role":"master"`) == 3
	})

	services := []string{"users", "orders", "products"}
	for _, svc := range services {
		resp, _ := a.get(t, "/api/"+svc+"/shared")
		mustContain(t, resp.Header.Get("Cache-Status"), "stored")
	}
	testutil.Eventually(t, "entries written to the cluster", func() bool {
		return strings.Contains(adminGet(a, "/gateway/stats"), `"writes":3`)
	})
	before := upstreamCalls.Load()
	for _, svc := range services {
		resp, _ := b.get(t, "/api/"+svc+"/shared")
		if !strings.Contains(resp.Header.Get("Cache-Status"), "detail=redis") || upstreamCalls.Load() != before {
			t.Fatalf("b %s: Cache-Status %q: want a hit from the cluster", svc, resp.Header.Get("Cache-Status"))
		}
	}
	req, _ := http.NewRequest("DELETE", a.admin+"/gateway/cache?tag=all", nil)
	pr, err := http.DefaultClient.Do(req)
	if err != nil || pr.StatusCode != 200 {
		t.Fatalf("tag purge: %v %v", err, pr)
	}
	pr.Body.Close()
	testutil.Eventually(t, "the tag purge reaches b", func() bool {
		resp, _ := b.get(t, "/api/users/shared")
		return !strings.Contains(resp.Header.Get("Cache-Status"), "hit")
	})

	// A master killed under load: no failed request, and no answer served from the cache past its
	// freshness (the short-lived entries outlive theirs during the failover).
	ld := startLoad(t, []*process{a, b, a, b}, func(i, n int) string {
		if n%4 == 0 {
			return fmt.Sprintf("/api/%s/short/%d", services[n%3], n%20)
		}
		return fmt.Sprintf("/api/%s/load/%d/%d", services[n%3], i, n%40)
	}, func(resp *http.Response) bool {
		age, _ := strconv.Atoi(resp.Header.Get("Age"))
		fresh := 300
		if strings.Contains(resp.Request.URL.Path, "/short/") {
			fresh = 1
		}
		cs := resp.Header.Get("Cache-Status")
		return !strings.Contains(cs, "; hit") || age <= fresh
	})
	ld.progress(100)
	cl.Nodes[0].Kill() // a master: its replica takes over after cluster-node-timeout (1 s)
	ld.progress(300)
	// sharing resumes: a new URL stored by a is a cluster hit on b
	// the tier may be skipped for its backoff (up to 10 s by default) after the failover's errors
	testutil.EventuallyWithin(t, 45*time.Second, "sharing to resume after the failover", func() bool {
		path := fmt.Sprintf("/api/users/after/%d", ld.done.Load())
		a.get(t, path)
		for range 20 { // the write is asynchronous
			resp, _ := b.get(t, path)
			if strings.Contains(resp.Header.Get("Cache-Status"), "detail=redis") {
				return true
			}
		}
		return false
	})
	// the watcher reads CLUSTER NODES once a second, each read bounded by the tier's timeout: on a
	// machine loaded by other test packages, reads can fail for a while (seen once in a full -race
	// run), so this waits as long as the resumption above may
	testutil.EventuallyWithin(t, 45*time.Second, "the failover in /gateway/health", func() bool {
		return strings.Contains(adminGet(a, "/gateway/health"), `"last_failover"`)
	})
	done, failed := ld.stop()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed while a master was killed", failed, done)
	}
	t.Logf("%d requests, none failed, across the failover", done)
}

// Two Caddy processes share a primary found through a real Sentinel: a
// primary killed under load fails no request, and the tier follows the
// promoted replica by itself.
func TestTwoInstancesFollowASentinelFailover(t *testing.T) {
	sn := testredis.StartSentinel(t)
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		echoHandler(w, r)
	})
	block := fmt.Sprintf(`gateway /api/* {
		service users %s
		cache {
			redis {
				sentinel %s %s
				timeout 200ms
			}
		}
	}`, up.URL, sn.Master, sn.URL())
	a, b := runCaddy(t, "", block), runCaddy(t, "", block)
	shared := func(path string) bool {
		writes := a.redisWrites(t)
		a.get(t, path)
		for deadline := time.Now().Add(2 * time.Second); a.redisWrites(t) == writes; {
			if time.Now().After(deadline) {
				return false // not written (the tier is down or the write was dropped): try another path
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
		resp, _ := b.get(t, path)
		return strings.Contains(resp.Header.Get("Cache-Status"), "detail=redis")
	}

	if !shared("/api/users/before") {
		t.Fatal("no sharing through the sentinel's primary")
	}
	ld := startLoad(t, []*process{a, b}, func(i, n int) string { return fmt.Sprintf("/api/users/load/%d/%d", i, n%40) })
	ld.progress(100)
	sn.Primary.Kill()
	ld.progress(200)
	n := 0
	// the tier may be skipped for its backoff (up to 10 s by default) after the failover's errors
	testutil.EventuallyWithin(t, 45*time.Second, "sharing through the promoted replica", func() bool {
		n++
		return shared(fmt.Sprintf("/api/users/after/%d", n))
	})
	if done, failed := ld.stop(); failed != 0 {
		t.Fatalf("%d of %d requests failed across the sentinel failover", failed, done)
	}
}

// redisWrites is the count of entries the process wrote to its Redis tier.
func (p *process) redisWrites(t *testing.T) int64 {
	t.Helper()
	resp, err := http.Get(p.admin + "/gateway/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		Gateways map[string]struct {
			Cache struct {
				Redis struct {
					Writes int64 `json:"writes"`
				} `json:"redis"`
			} `json:"cache"`
		} `json:"gateways"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatal(err)
	}
	return stats.Gateways["gateway"].Cache.Redis.Writes
}
