package cache

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// memFetch is an in-process upstream (no network) for the memory and speed tests.
func memFetch(size int) Fetch {
	body := make([]byte, size)
	return func(w http.ResponseWriter, r *http.Request, _ http.ResponseWriter) error {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(body)
		return nil
	}
}

// TestMemoryBounded fills ten times MaxSize and checks the live heap stays within MaxSize plus a small
// fixed overhead (the explained-miss ring, the pools).
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 80 MiB")
	}
	const maxSize = 8 << 20
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	c, err := New(Options{MaxSize: maxSize, MaxItemSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fetch := memFetch(8 << 10)
	w := &benchWriter{h: make(http.Header)}
	for i := range 10 * maxSize / (8 << 10) {
		r := httptest.NewRequest("GET", "/item/"+strconv.Itoa(i), nil)
		clear(w.h)
		if _, err := c.Serve(w, r, &Route{Service: "svc", Fetch: fetch}); err != nil {
			t.Fatal(err)
		}
	}
	after := heap()
	s := c.Stats()
	grown := int64(after) - int64(before)
	t.Logf("heap grew %d KiB for %d entries, cost %d KiB (max %d KiB), evictions %d, rejected %d",
		grown>>10, s.Entries, s.Bytes>>10, maxSize>>10, s.Evictions, s.Rejected)
	if s.Bytes > maxSize {
		t.Fatalf("cost %d above MaxSize", s.Bytes)
	}
	if limit := int64(maxSize + maxSize/8 + 2<<20); grown > limit {
		t.Fatalf("heap grew %d bytes, limit %d", grown, limit)
	}
	runtime.KeepAlive(c)
}

// TestSmallMaxSize: a cache smaller than the default max_item_size (1 MiB) needs no max_item_size
// of its own: answers up to its size are stored; a larger max_item_size given is still an error.
func TestSmallMaxSize(t *testing.T) {
	c := newTestCache(t, nil, Options{MaxSize: 64 << 10})
	if c.opts.MaxItemSize != 64<<10 {
		t.Fatalf("max_item_size %d, want max_size", c.opts.MaxItemSize)
	}
	if _, err := New(Options{MaxSize: 64 << 10, MaxItemSize: 1 << 20}); err == nil {
		t.Fatal("max_item_size above max_size accepted")
	}
}

// BenchmarkFullCacheGC is a forced garbage collection with 130,000 stored ~1 KiB answers (~250 MiB),
// reported per entry (ns/entry): what a full cache adds to each GC cycle's marking. It was ~310 ns
// with ristretto and a pointer-rich index, ~100 ns now (the store's slots and marking the blocks).
func BenchmarkFullCacheGC(b *testing.B) {
	const n = 130000
	c, err := New(Options{MaxSize: 512 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	runtime.GC()
	start := time.Now()
	runtime.GC()
	empty := time.Since(start)
	for i := range n {
		if c.store(blockEntry(i)) != storeAdmitted {
			b.Fatal("refused")
		}
	}
	runtime.GC()
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
	}
	b.StopTimer()
	perGC := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perGC-empty)/n, "ns/entry")
	runtime.KeepAlive(c)
}

// benchWriter is a reusable ResponseWriter, so the hit benchmark measures the cache, not a recorder.
type benchWriter struct {
	h      http.Header
	status int
	n      int
}

func (b *benchWriter) Header() http.Header         { return b.h }
func (b *benchWriter) WriteHeader(s int)           { b.status = s }
func (b *benchWriter) Write(p []byte) (int, error) { b.n += len(p); return len(p), nil }

// hitAllocBudget is the allocation budget of a cache hit: one for the Age/Cache-Status value slice,
// one for the Cache-Status string (the body is written from the stored slice, header values are
// shared with the entry). Age values of 100 s and more cost one more (strconv).
const hitAllocBudget = 2

func primedHit(tb testing.TB) (*Cache, *http.Request, *benchWriter, Fetch) {
	c := newTestCache(tb, nil, Options{})
	fetch := memFetch(2048)
	r := httptest.NewRequest("GET", "/users/42?fields=name", nil)
	r.Header.Set("Accept", "application/json")
	w := &benchWriter{h: make(http.Header)}
	if res, err := c.Serve(w, r, &Route{Service: "users", Fetch: fetch}); err != nil || res != ResultMiss {
		tb.Fatalf("prime: %v %v", res, err)
	}
	return c, r, w, fetch
}

// TestHitAllocs asserts the hit path stays within hitAllocBudget allocations.
func TestHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	c, r, w, fetch := primedHit(t)
	rt := &Route{Service: "users", Fetch: fetch} // built once, as Provision does
	allocs := testing.AllocsPerRun(200, func() {
		clear(w.h)
		if res, _ := c.Serve(w, r, rt); res != ResultHit {
			t.Fatalf("not a hit: %v", res)
		}
	})
	if allocs > hitAllocBudget {
		t.Fatalf("%.1f allocations per hit, budget %d", allocs, hitAllocBudget)
	}
}

func BenchmarkServeHit(b *testing.B) {
	c, r, w, fetch := primedHit(b)
	rt := &Route{Service: "users", Fetch: fetch}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if res, _ := c.Serve(w, r, rt); res != ResultHit {
			b.Fatalf("not a hit: %v", res)
		}
	}
}

func BenchmarkServeHitParallel(b *testing.B) {
	c, _, _, fetch := primedHit(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "/users/42?fields=name", nil)
		w := &benchWriter{h: make(http.Header)}
		rt := &Route{Service: "users", Fetch: fetch}
		for pb.Next() {
			clear(w.h)
			_, _ = c.Serve(w, r, rt)
		}
	})
}

func BenchmarkKey(b *testing.B) {
	for _, tc := range []struct {
		name string
		vary []string
		h    http.Header
	}{
		{"base", nil, nil},
		{"vary", []string{"Accept", "X-Tenant"}, http.Header{"Accept": {"application/json"}, "X-Tenant": {"acme"}}},
		{"vary-accept-language", []string{"Accept-Language"}, http.Header{"Accept-Language": {"en-GB, fr;q=0.5"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = appendBaseKey(buf[:0], "API.example.com", "users", "/users/42", "fields=name")
				if tc.vary != nil {
					buf = appendVariantKey(buf, tc.vary, tc.h)
				}
			}
		})
	}
}
