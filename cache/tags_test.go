package cache

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseTagsBounds(t *testing.T) {
	long := strings.Repeat("x", MaxTagLen+1)
	var many []string
	for i := range MaxTagsPerAnswer + 10 {
		many = append(many, fmt.Sprintf("t%d", i))
	}
	tests := []struct {
		name string
		h    http.Header
		want []string
	}{
		{"none", http.Header{}, nil},
		{"surrogate-key spaces", http.Header{"Surrogate-Key": {"user-42  product-7\tall"}}, []string{"user-42", "product-7", "all"}},
		{"cache-tag commas", http.Header{"Cache-Tag": {"a,b, c", "d"}}, []string{"a", "b", "c", "d"}},
		{"both, duplicates once", http.Header{"Surrogate-Key": {"a b"}, "Cache-Tag": {"b,c"}}, []string{"a", "b", "c"}},
		{"too long and control characters skipped", http.Header{"Surrogate-Key": {long + " ok bad\x01tag"}}, []string{"ok"}},
		{"at most MaxTagsPerAnswer", http.Header{"Surrogate-Key": {strings.Join(many, " ")}}, many[:MaxTagsPerAnswer]},
	}
	for _, tt := range tests {
		got := parseTags(tt.h, DefaultTagHeaders)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := parseTags(http.Header{"X-Tags": {"a b"}, "Surrogate-Key": {"c"}}, []string{"X-Tags"}); fmt.Sprint(got) != "[a b]" {
		t.Errorf("configured fields: %q", got)
	}
}

// PurgeTags removes every variant and credential of every tagged URL, nothing else, and only in the
// named service when one is given.
func TestPurgeTagsRemovesExactlyTheTagged(t *testing.T) {
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		if strings.HasPrefix(r.URL.Path, "/users/42") {
			w.Header().Set("Surrogate-Key", "user-42 users")
		} else {
			w.Header().Set("Cache-Tag", "others")
		}
		_, _ = w.Write([]byte(r.URL.Path))
	})
	c := newTestCache(t, nil, Options{})
	fetch := o.fetch()
	urls := []string{"/users/42", "/users/42/orders", "/users/7"}
	for _, u := range urls {
		for _, lang := range []string{"en", "fr"} {
			if _, res, err := do(t, c, fetch, "GET", u, "Accept-Language", lang); err != nil || res != ResultMiss {
				t.Fatalf("%s %s: %v %v", u, lang, res, err)
			}
		}
	}
	if n := c.PurgeTags("other-service", []string{"user-42"}); n != 0 {
		t.Fatalf("a purge in another service removed %d", n)
	}
	if n := c.PurgeTags("", nil); n != 0 {
		t.Fatalf("a purge of no tag removed %d", n)
	}
	if n := c.PurgeTags("svc", []string{"user-42", "nobody"}); n != 4 {
		t.Fatalf("removed %d, want 4 (2 URLs × 2 variants)", n)
	}
	for _, u := range urls {
		for _, lang := range []string{"en", "fr"} {
			_, res, _ := do(t, c, fetch, "GET", u, "Accept-Language", lang, "Cache-Control", "only-if-cached")
			if hit, want := res == ResultHit, u == "/users/7"; hit != want {
				t.Errorf("%s %s: hit %v, want %v", u, lang, hit, want)
			}
		}
	}
	if n := c.PurgeTags("", []string{"user-42"}); n != 0 {
		t.Fatalf("a second purge removed %d", n)
	}
}

// Evicted, expired, replaced and path-purged entries leave their tags: the index never grows past
// what is stored, and a tag purge never reaches an entry stored since under the same key.
func TestTagIndexFollowsTheStore(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Surrogate-Key", "k-"+strings.TrimPrefix(r.URL.Path, "/")+" "+r.URL.Query().Get("tag"))
		_, _ = w.Write([]byte(strings.Repeat("b", 2000)))
	})
	c := newTestCache(t, clk, Options{MaxSize: 64 << 10, MaxItemSize: 16 << 10})
	fetch := o.fetch()
	for i := range 200 { // ~2.5 KB each: far more than 64 KiB, evictions happen
		do(t, c, fetch, "GET", fmt.Sprintf("/e%d?tag=all", i))
	}
	tagged := func(tag string) int {
		c.local.idx.mu.Lock()
		defer c.local.idx.mu.Unlock()
		return len(c.local.idx.tags[tag])
	}
	if n, stored := tagged("all"), c.local.idx.len(); n != stored || stored == 0 || stored >= 200 {
		t.Fatalf("tag index holds %d entries, the store %d (of 200 offered)", n, stored)
	}
	c.Purge("svc", "")
	if n := tagged("all"); n != 0 {
		t.Fatalf("after a purge of the service the tag index still holds %d entries", n)
	}
	// a replaced entry leaves its old tags
	do(t, c, fetch, "GET", "/r?tag=old")
	clk.Advance(2 * time.Minute)
	do(t, c, fetch, "GET", "/r?tag=old", "Cache-Control", "no-cache") // refetched: replaces the entry
	if n := tagged("old"); n != 1 {
		t.Fatalf("after a replacement the tag holds %d entries, want 1", n)
	}
}

// TestPurgeTagOfTenThousand tags 10,000 entries (each its own tag, one of 100 group tags, and one
// tag all share), purges one group's tag, then the shared one; it logs the time each took and what
// the index costs per entry.
func TestPurgeTagOfTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 10,000 entries")
	}
	c := newTestCache(t, nil, Options{MaxSize: 256 << 20})
	for i := range 10000 {
		e := &Entry{Service: "svc", URL: fmt.Sprintf("/item/%d", i), Status: 200,
			Header:      http.Header{"Cache-Control": {"max-age=600"}, "Surrogate-Key": {fmt.Sprintf("item-%d group-%d all", i, i%100)}},
			Body:        []byte("x"),
			RequestTime: c.now(), ResponseTime: c.now()}
		e.Key = "GET example.com svc " + e.URL
		e.BaseLen = len(e.Key)
		e.prepare(&c.opts)
		if c.store(e) != storeAdmitted {
			t.Fatalf("entry %d refused", i)
		}
	}
	start := time.Now()
	n := c.PurgeTags("", []string{"group-7"})
	took := time.Since(start)
	if n != 100 {
		t.Fatalf("purged %d, want 100", n)
	}
	start = time.Now()
	n = c.PurgeTags("", []string{"all"})
	tookAll := time.Since(start)
	if n != 9900 {
		t.Fatalf("purged %d, want 9,900", n)
	}
	t.Logf("purge of one tag on 100 of 10,000 tagged entries: %v; of the tag on the other 9,900: %v; index cost %d bytes per entry (3 tags)",
		took, tookAll, 3*tagCost+len("item-1234")+len("group-12")+len("all"))
}
