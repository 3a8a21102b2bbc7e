package cache

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/caddy-gateway/internal/testredis"
	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// newClusterCache builds a cache whose Redis tier is the cluster c.
func newClusterCache(t *testing.T, c *testredis.Cluster) *Cache {
	t.Helper()
	seeds := c.URLs()[:2] // the others are discovered
	return newTestCache(t, nil, Options{Redis: &RedisOptions{Cluster: seeds, KeyPrefix: "t",
		Timeout: 200 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond}})
}

// doService is do for the given service.
func doService(t *testing.T, c *Cache, service string, fetch Fetch, method, target string, hdr ...string) Result {
	t.Helper()
	r, _ := http.NewRequest(method, "http://example.com"+target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	res, _ := c.Serve(&benchWriter{h: http.Header{}}, r, &Route{Service: service, Fetch: fetch})
	return res
}

// TestRedisClusterSharesAndPurges: on a real 3-master Redis Cluster, two instances share entries of
// services whose keys live on different masters, and purges by path, by tag and of everything,
// and unsafe-method invalidations, reach Redis on every master and the other instance.
func TestRedisClusterSharesAndPurges(t *testing.T) {
	cl := testredis.StartCluster(t, 3, 0)
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		if strings.Contains(r.URL.Path, "/tagged") {
			w.Header().Set("Surrogate-Key", "hot")
		}
		_, _ = w.Write([]byte(r.URL.Path))
	})
	a, b := newClusterCache(t, cl), newClusterCache(t, cl)
	if s := a.Stats().Redis; s == nil || !s.Up || s.Topology != TopologyCluster {
		t.Fatalf("tier: %+v", s)
	}
	testutil.Eventually(t, "the cluster's 3 masters, up, in the stats", func() bool {
		up := 0
		for _, n := range a.Stats().Redis.Nodes {
			if n.Role == "master" && n.Up {
				up++
			}
		}
		return up == 3
	})
	services := []string{"users", "orders", "products", "billing", "search", "auth"}
	paths := []string{"/x", "/x/y", "/tagged", "/z"}
	for _, svc := range services {
		for _, p := range paths {
			if res := doService(t, a, svc, o.fetch(), "GET", p); res != ResultMiss {
				t.Fatalf("a %s %s: %v", svc, p, res)
			}
		}
	}
	waitWrites(t, a, int64(len(services)*len(paths)))

	// the services' keys spread over the masters
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{cl.Nodes[0].Addr()}})
	defer rc.Close()
	ctx := context.Background()
	var mu sync.Mutex // ForEachMaster calls its function concurrently
	masters := map[string]bool{}
	_ = rc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		if n, _ := m.DBSize(ctx).Result(); n > 0 {
			mu.Lock()
			masters[m.Options().Addr] = true
			mu.Unlock()
		}
		return nil
	})
	if len(masters) < 2 {
		t.Fatalf("the keys of %d services sit on %d master(s)", len(services), len(masters))
	}

	for _, svc := range services { // b gets every entry from the cluster
		for _, p := range paths {
			if res := doService(t, b, svc, o.fetch(), "GET", p); res != ResultHit {
				t.Fatalf("b %s %s: %v", svc, p, res)
			}
		}
	}
	cached := func(c *Cache, svc, p string) bool {
		return doService(t, c, svc, o.fetch(), "GET", p, "Cache-Control", "only-if-cached") == ResultHit
	}
	received := func(n int64) {
		testutil.Eventually(t, "b to receive the purge", func() bool { return b.Stats().Redis.Received >= n })
	}

	if n := a.Purge("users", "/x"); n != 2 {
		t.Fatalf("purge /x of users: %d, want 2", n)
	}
	received(1)
	if cached(b, "users", "/x") || cached(b, "users", "/x/y") || !cached(b, "users", "/z") {
		t.Fatal("path purge on the cluster: wrong entries on b")
	}
	if n := a.PurgeTags("", []string{"hot"}); n != len(services) {
		t.Fatalf("tag purge across services: %d, want %d", n, len(services))
	}
	received(2)
	for _, svc := range services {
		if cached(b, svc, "/tagged") {
			t.Fatalf("b still has %s /tagged", svc)
		}
	}
	if res := doService(t, b, "orders", o.fetch(), "POST", "/z"); res != ResultBypass {
		t.Fatalf("POST: %v", res)
	}
	testutil.Eventually(t, "a to receive the invalidation", func() bool { return a.Stats().Redis.Received >= 1 })
	if cached(a, "orders", "/z") {
		t.Fatal("the invalidation on b did not reach a")
	}
	a.Purge("", "")
	received(3)
	var left atomic.Int64
	_ = rc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, _ := m.Keys(ctx, "t:{*}:e:*").Result()
		left.Add(int64(len(keys)))
		return nil
	})
	if n := left.Load(); n != 0 {
		t.Fatalf("%d entries left in the cluster after purging everything", n)
	}
	if cached(b, "products", "/z") {
		t.Fatal("b kept an entry after purge-all")
	}
}

// TestRedisSentinelFailover: through a real Sentinel, two instances share entries; when the primary
// is killed, the tier follows the promoted replica by itself and sharing resumes, and no request
// fails meanwhile.
func TestRedisSentinelFailover(t *testing.T) {
	sn := testredis.StartSentinel(t)
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte(r.URL.Path))
	})
	tier := func() *Cache {
		c := newTestCache(t, nil, Options{Redis: &RedisOptions{SentinelMaster: sn.Master, Sentinels: []string{sn.URL()},
			KeyPrefix: "t", Timeout: 200 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}})
		if s := c.Stats().Redis; s == nil || !s.Up || s.Topology != TopologySentinel {
			t.Fatalf("tier: %+v", s)
		}
		return c
	}
	a, b := tier(), tier()
	shared := func(path string) bool {
		if _, res, err := do(t, a, o.fetch(), "GET", path); err != nil || (res != ResultMiss && res != ResultHit) {
			t.Fatalf("a %s: %v %v", path, res, err)
		}
		for range 100 { // the write is asynchronous; each try is a local miss on b until it lands
			_, res, err := do(t, b, o.fetch(), "GET", path, "Cache-Control", "only-if-cached")
			if err != nil {
				t.Fatalf("b %s: %v", path, err)
			}
			if res == ResultHit {
				return true
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
		return false
	}
	if !shared("/before") {
		t.Fatal("no sharing through the sentinel's primary")
	}
	testutil.Eventually(t, "the primary and its replica in the stats", func() bool { return len(a.Stats().Redis.Nodes) == 2 })
	sn.Primary.Kill()
	n := 0
	testutil.Eventually(t, "sharing through the promoted replica", func() bool {
		n++
		return shared(fmt.Sprintf("/after/%d", n))
	})
	rc := redis.NewClient(&redis.Options{Addr: sn.Replica.Addr()})
	defer rc.Close()
	if role, err := rc.Do(context.Background(), "ROLE").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
		t.Fatalf("the replica was not promoted: %v %v", role, err)
	}
	if keys, _ := rc.Keys(context.Background(), "t:{svc}:e:*").Result(); len(keys) == 0 {
		t.Fatal("nothing written to the promoted replica")
	}
	testutil.Eventually(t, "the failover in the stats", func() bool {
		s := a.Stats().Redis
		return !s.LastFailover.IsZero() && len(s.Nodes) > 0 && s.Nodes[0].Role == "master" && s.Nodes[0].Addr == sn.Replica.Addr()
	})
}

// TestRedisClusterReshardAndDown: slots migrating under load (redis-cli --cluster reshard) fail no
// request and lose no entry that is still fresh (each is served from Redis or fetched again); the
// whole cluster going down is skipped within the timeout like a standalone Redis, and the tier comes
// back by itself when it returns.
func TestRedisClusterReshardAndDown(t *testing.T) {
	cl := testredis.StartCluster(t, 3, 0)
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte(r.URL.Path))
	})
	a, b := newClusterCache(t, cl), newClusterCache(t, cl)
	services := []string{"users", "orders", "products", "billing", "search", "auth"}
	for _, svc := range services {
		doService(t, a, svc, o.fetch(), "GET", "/item")
	}
	waitWrites(t, a, int64(len(services)))

	// load on b while slots move between masters
	var failed, done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			r, _ := http.NewRequest("GET", "http://example.com/item", nil)
			w := &benchWriter{h: http.Header{}}
			if _, err := b.Serve(w, r, &Route{Service: services[n%len(services)], Fetch: o.fetch()}); err != nil || w.status != 200 {
				failed.Add(1)
			}
			b.purgeLocal("", "") // every GET asks the cluster
			done.Add(1)
		}
	})
	cl.Reshard(t, 0, 1, 2000)
	cl.Reshard(t, 1, 2, 2000)
	n := done.Load() + 50
	testutil.Eventually(t, "load after the resharding", func() bool { return done.Load() >= n })
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed while slots moved", failed.Load(), done.Load())
	}
	calls := o.calls.Load()
	for _, svc := range services { // still in the cluster, wherever their slot went
		if res := doService(t, b, svc, o.fetch(), "GET", "/item"); res != ResultHit {
			t.Errorf("%s after the resharding: %v", svc, res)
		}
		b.purgeLocal("", "")
	}
	if o.calls.Load() != calls {
		t.Errorf("%d upstream calls for entries still fresh in the cluster", o.calls.Load()-calls)
	}

	// the whole cluster down: skipped within the timeout, then back by itself
	for _, n := range cl.Nodes {
		n.Kill()
	}
	skipped := a.Stats().Redis.Skipped
	for i := range 20 {
		if res := doService(t, a, "users", o.fetch(), "GET", fmt.Sprintf("/down/%d", i)); res != ResultMiss {
			t.Fatalf("with the cluster down: %v", res)
		}
	}
	if s := a.Stats().Redis; s.Up || s.Skipped-skipped < 15 {
		t.Fatalf("with the cluster down the tier is not skipped: %+v", s)
	}
	for _, n := range cl.Nodes {
		n.Restart()
	}
	testutil.Eventually(t, "the tier back up", func() bool { return a.Stats().Redis.Up })
}

// BenchmarkRedisClusterPurge100k stores 100,000 entries of 10 services on a real 3-master cluster
// and times a purge of one service (10,000 entries) and then of everything (90,000), reporting the
// scripts (round trips) each took. Run with: go test -run '^$' -bench RedisClusterPurge100k ./cache
func BenchmarkRedisClusterPurge100k(b *testing.B) {
	cl := testredis.StartCluster(b, 3, 0)
	c := newTestCache(b, nil, Options{Redis: &RedisOptions{Cluster: cl.URLs(), KeyPrefix: "t", Timeout: time.Second}})
	t := c.shared()
	for b.Loop() {
		for i := range 100000 {
			svc := fmt.Sprintf("svc%d", i%10)
			e := &Entry{Service: svc, URL: fmt.Sprintf("/item/%d", i), Status: 200,
				Header: http.Header{"Cache-Control": {"max-age=600"}}, Body: []byte("x"),
				RequestTime: c.now(), ResponseTime: c.now()}
			e.Key = "GET example.com " + svc + " " + e.URL
			e.BaseLen = len(e.Key)
			e.prepare(&c.opts)
			t.write(redisWrite{epoch: t.epoch.Load(), entry: e, ttl: time.Hour})
		}
		start := time.Now()
		n1 := t.purge("svc3", "")
		one := time.Since(start)
		start = time.Now()
		n2 := t.purge("", "")
		all := time.Since(start)
		if n1 != 10000 || n2 != 90000 {
			b.Fatalf("purged %d and %d, want 10,000 and 90,000", n1, n2)
		}
		// a service's purge runs one script per purgeBatch entries, plus one that finds none left
		b.Logf("one service of 10,000 entries: %v in %d scripts; the 9 others (90,000 entries): %v in %d scripts",
			one, 10000/purgeBatch+1, all, 9*(10000/purgeBatch+1)+1)
	}
}
