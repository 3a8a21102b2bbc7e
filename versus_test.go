package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkVersusStock compares the gateway with stock Caddy handlers in one process and one
// loop, so that a noisy machine slows both sides alike: each iteration sends one request of every
// scenario, in turn, through the whole Caddy server (caddyhttp.Server.ServeHTTP: request
// preparation, routes, handler; no socket, no hand-over wrapper), and times each. It reports each
// scenario's µs per request and the throughput ratios issue #15 sets goals for (stock time ÷
// gateway time):
//
//	hit/respond   a cache hit ÷ stock `respond` of the same body
//	nocache/proxy the gateway without a cache ÷ stock `reverse_proxy` (the gateway's idle pool)
//	pass/proxy    a first GET of a no-store answer ÷ stock `reverse_proxy`
//	fill/proxy    a first GET of a cacheable answer (fetch + store) ÷ stock `reverse_proxy`
//
// The gateway's cache is 256 MiB, filled past 90 % before the loop (~130,000 entries of ~1 KiB,
// as bench/run.sh's prefill), so every scenario runs at a full cache's steady state, garbage
// collection included. The upstream runs in this process too, and garbage collection is charged
// to whichever request it interrupts, so the ratios are nearer 1 than bench/run.sh's (which counts
// the server process alone); the differences in µs are the gateway's own cost. Logs go to the
// default logger at INFO, as `caddy run` does.
//
//	go test -run '^$' -bench VersusStock -benchtime 20000x .
func BenchmarkVersusStock(b *testing.B) {
	up := benchUpstream(b)
	f := startVersusFixture(b, up.URL)
	type scenario struct {
		name string
		path func(i int) string
		want string // Cache-Status must contain this ("" for stock)
		t    time.Duration
	}
	unique := func(prefix string) func(int) string {
		buf := []byte(prefix)
		return func(i int) string { return string(strconv.AppendInt(buf[:len(prefix)], int64(i), 10)) }
	}
	fixed := func(p string) func(int) string { return func(int) string { return p } }
	sc := []*scenario{
		{name: "respond", path: fixed("/respond")},
		{name: "hit", path: fixed("/api/bench/cacheable/item"), want: "; hit"},
		{name: "proxy", path: fixed("/stock/item")},
		{name: "nocache", path: fixed("/nocache/bench/item")},
		{name: "pass", path: unique("/api/bench/item/"), want: "fwd=miss"},
		{name: "fill", path: unique("/api/bench/cacheable/"), want: "fwd=miss; stored"},
	}
	w := &benchWriter{h: make(http.Header, 16)}
	send := func(s *scenario, i int) {
		w.reset()
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+s.path(i), nil)
		f.ServeHTTP(w, r)
		if w.status != http.StatusOK || w.n != len(benchBody) {
			b.Fatalf("%s: answer %d with %d bytes; want 200 with %d", s.name, w.status, w.n, len(benchBody))
		}
	}
	for i := range 200 { // warm connections, pools and lazily created series; prime the hit
		for _, s := range sc {
			send(s, -1-i)
		}
	}
	for _, s := range sc {
		send(s, -1000)
		if got := w.h.Get("Cache-Status"); !strings.Contains(got, s.want) {
			b.Fatalf("%s: Cache-Status %q, want %q", s.name, got, s.want)
		}
	}
	prefill := &scenario{name: "prefill", path: unique("/api/bench/cacheable/prefill-")}
	gw := cachingGateway(b)
	for i := 0; ; i++ {
		send(prefill, i)
		if i%4096 == 0 {
			if st := gw.cache.Stats(); st.Bytes >= st.MaxBytes*9/10 {
				break
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		for _, s := range sc {
			start := time.Now()
			send(s, i)
			s.t += time.Since(start)
		}
		n++
	}
	b.StopTimer()
	us := make(map[string]float64, len(sc))
	for _, s := range sc {
		us[s.name] = s.t.Seconds() * 1e6 / float64(n)
		b.ReportMetric(us[s.name], s.name+"-µs")
	}
	for _, r := range [][2]string{{"hit", "respond"}, {"nocache", "proxy"}, {"pass", "proxy"}, {"fill", "proxy"}} {
		b.ReportMetric(us[r[1]]/us[r[0]], r[0]+"/"+r[1])
	}
}

// cachingGateway returns the newest provisioned gateway with a cache.
func cachingGateway(tb testing.TB) *Gateway {
	var gw *Gateway
	handlers.Range(func(_, val any) bool {
		if g := val.(*Gateway); g.cache != nil && (gw == nil || g.seq > gw.seq) {
			gw = g
		}
		return true
	})
	if gw == nil {
		tb.Fatal("no provisioned gateway with a cache")
	}
	return gw
}

// startVersusFixture loads a Caddyfile with stock handlers and two gateways side by side on one
// site (see BenchmarkVersusStock) and returns its Caddy server, stopped when the benchmark ends.
func startVersusFixture(tb testing.TB, upstream string) *caddyhttp.Server {
	tb.Helper()
	cf := fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output discard
	}
}
http://127.0.0.1:%[1]d {
	handle /respond {
		header Content-Type application/json
		respond `+"`%[2]s`"+` 200
	}
	handle_path /stock/* {
		reverse_proxy %[3]s {
			transport http {
				keepalive_idle_conns_per_host 128
			}
		}
	}
	gateway /api/* {
		service bench %[4]s
		cache {
			max_size 256MiB
		}
	}
	gateway /nocache/* {
		service bench %[4]s
	}
}
`, freePort(tb), benchBody, strings.TrimPrefix(upstream, "http://"), upstream)
	cfg, err := adaptCaddyfile(tb, cf)
	if err != nil {
		tb.Fatalf("adapting Caddyfile: %v\n%s", err, cf)
	}
	caddyMu.Lock()
	if err := caddy.Load(cfg, true); err != nil {
		caddyMu.Unlock()
		tb.Fatalf("loading config: %v", err)
	}
	tb.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			tb.Errorf("stopping caddy: %v", err)
		}
		caddyMu.Unlock()
	})
	app, err := caddy.ActiveContext().App("http")
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range app.(*caddyhttp.App).Servers {
		return s
	}
	tb.Fatal("no caddy http server")
	return nil
}
