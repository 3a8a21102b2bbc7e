package cache

import (
	"bytes"
	"net/http"
	"reflect"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// The local tier's store holds byte blocks: a compile-time guard that its slots keep a []byte (a
// pointer-rich value type would not compile here), see TestBlocksAreNotScanned for the effect.
var _ []byte = storeSlot{}.b

// blockEntry is a typical stored API answer: ~1 KiB of JSON, ten header fields, one Vary variant;
// tags add tag fields.
func blockEntry(i int, tags ...string) *Entry {
	e := &Entry{
		Service: "svc",
		URL:     "/items/" + strconv.Itoa(i),
		Status:  200,
		Header: http.Header{
			"Cache-Control":  {"max-age=600, stale-if-error=30"},
			"Content-Type":   {"application/json"},
			"Content-Length": {"1024"},
			"Date":           {"Sun, 06 Dec 2026 10:00:00 GMT"},
			"Etag":           {`"v` + strconv.Itoa(i) + `"`},
			"Last-Modified":  {"Sun, 06 Dec 2026 09:00:00 GMT"},
			"Vary":           {"Accept"},
			"X-Request-Id":   {"abcdef-" + strconv.Itoa(i)},
			"Cache-Status":   {"upstream; hit"},
		},
		Body:         bytes.Repeat([]byte{'x'}, 1024),
		RequestTime:  time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC),
		ResponseTime: time.Date(2026, 12, 6, 10, 0, 1, 0, time.UTC),
		InitialAge:   time.Second,
	}
	for _, tag := range tags {
		e.Header.Add("Surrogate-Key", tag)
	}
	base := appendBaseKey(nil, "example.com", e.Service, e.URL, "")
	e.BaseLen = len(base)
	e.Key = string(appendVariantKey(base, []string{"Accept"}, http.Header{"Accept": {"application/json"}}))
	e.prepare(&Options{StaleWhileRevalidate: time.Minute})
	return e
}

// TestBlockView: a view of an entry's block reads back every field the policy uses.
func TestBlockView(t *testing.T) {
	e := blockEntry(7, "items", "item-7")
	b := encodeBlock(e, 42)
	var v Entry
	v.view(b)
	if v.Key != e.Key || v.BaseLen != e.BaseLen || v.Service != e.Service || v.URL != e.URL || v.Marker ||
		v.Status != 200 || !v.RequestTime.Equal(e.RequestTime) || !v.ResponseTime.Equal(e.ResponseTime) ||
		v.InitialAge != e.InitialAge || v.lifetime != 600*time.Second || v.swr != time.Minute ||
		v.sie != 30*time.Second || v.etag != `"v7"` || !v.lastModified.Equal(e.lastModified) ||
		v.noStale || v.noCache || !bytes.Equal(v.Body, e.Body) || blockSeq(b) != 42 {
		t.Fatalf("view differs:\n got %+v\nwant %+v", v, *e)
	}
	if !reflect.DeepEqual(v.header(), e.Header) {
		t.Fatalf("header %v, want %v", v.header(), e.Header)
	}
	if got := v.field("X-Request-Id"); got != "abcdef-7" {
		t.Fatalf("field: %q", got)
	}
	if got := v.field("Absent"); got != "" {
		t.Fatalf("absent field: %q", got)
	}
	if int64(cap(b)) < int64(len(b)) || blockCost(b, e.tags) != int64(cap(b))+entryOverhead+int64(len("items")+len("item-7")+2*tagCost) {
		t.Fatalf("cost %d for a block of %d/%d bytes", blockCost(b, e.tags), len(b), cap(b))
	}

	m := &Entry{Key: e.Key[:e.BaseLen], BaseLen: e.BaseLen, Service: "svc", URL: e.URL, Marker: true, Vary: []string{"Accept", "X-Tenant"}}
	m.prepare(&Options{})
	mb := encodeBlock(m, 43)
	var mv Entry
	mv.view(mb)
	if !mv.Marker || !blockIsMarker(mb) || !reflect.DeepEqual(mv.varyNames(), m.Vary) || mv.Key != m.Key {
		t.Fatalf("marker view %+v, vary %v", mv, mv.varyNames())
	}
}

// TestHitHeaderFromBlock: a hit on a view sends the stored fields, the upstream's Cache-Status
// followed by the cache's own, and Age, as a hit on a decoded entry does.
func TestHitHeaderFromBlock(t *testing.T) {
	c := newTestCache(t, nil, Options{})
	e := blockEntry(1)
	var v Entry
	v.view(encodeBlock(e, 1))
	r, _ := http.NewRequest("GET", "/items/1", nil)
	for _, src := range []*Entry{e, &v} {
		w := &benchWriter{h: make(http.Header)}
		c.writeEntry(w, r, &Route{Service: "svc"}, src, 5*time.Second, "hit")
		if got := w.h["Cache-Status"]; len(got) != 2 || got[0] != "upstream; hit" || got[1] != "caddy-gateway; hit; ttl=595" {
			t.Fatalf("block %v: Cache-Status %q", src.block != nil, got)
		}
		if w.h.Get("Age") != "5" || w.h.Get("X-Request-Id") != "abcdef-1" || w.h.Get("Etag") != `"v1"` {
			t.Fatalf("block %v: header %v", src.block != nil, w.h)
		}
	}
}

// TestBlocksAreNotScanned fills a cache with ~1 KiB answers and reads the runtime's own figures: the
// heap the garbage collector must scan grows by about a hundred bytes per entry (the store's slot;
// blocks and the index's records hold no pointers: 1,678 bytes before blocks, 258 with blocks but
// a pointer-rich index), and the live heap per entry stays within 1.2× what the entry is accounted
// for in max_size.
func TestBlocksAreNotScanned(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measures the heap; not under -short or -race")
	}
	const n = 20000
	c := newTestCache(t, nil, Options{MaxSize: 256 << 20})
	h0 := testutil.ReadHeap()
	for i := range n {
		if c.store(blockEntry(i)) != storeAdmitted {
			t.Fatal("refused")
		}
	}
	h1 := testutil.ReadHeap()
	s := c.Stats()
	if s.Entries != n {
		t.Fatalf("%d entries stored, want %d", s.Entries, n)
	}
	scanPer := (h1.Scan - h0.Scan) / n
	livePer := (h1.Live - h0.Live) / n
	accounted := float64(s.Bytes) / n
	t.Logf("per entry: scannable heap %.0f B, live heap %.0f B, accounted %.0f B (%.2f×)", scanPer, livePer, accounted, livePer/accounted)
	if scanPer > 160 {
		t.Errorf("the GC scans %.0f bytes per stored entry; blocks and index records must hold no pointers", scanPer)
	}
	if livePer > 1.2*accounted {
		t.Errorf("live heap %.0f B per entry, over 1.2× its accounted %.0f B", livePer, accounted)
	}
	runtime.KeepAlive(c)
}
