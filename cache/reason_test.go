package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReasons drives answers that cannot be stored, and requests the cache cannot answer, through a
// real upstream, and checks the counted reason, the Cache-Status detail and the remembered decision.
func TestReasons(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/private":
			w.Header().Set("Cache-Control", "private, max-age=60")
		case "/cookie":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Set-Cookie", "a=b")
		case "/nofresh":
		case "/nostore":
			w.Header().Set("Cache-Control", "no-store")
		case "/vary":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Vary", "*")
		case "/big":
			w.Header().Set("Cache-Control", "max-age=60")
			_, _ = w.Write(make([]byte, 2048))
			return
		case "/bigstream": // no Content-Length: found too large while streaming
			w.Header().Set("Cache-Control", "max-age=60")
			for range 3 {
				_, _ = w.Write(make([]byte, 512))
				w.(http.Flusher).Flush()
			}
			return
		default:
			w.Header().Set("Cache-Control", "max-age=60")
		}
		_, _ = w.Write([]byte("x"))
	})
	c := newTestCache(t, clk, Options{MaxItemSize: 1024})
	tests := []struct {
		path   string
		hdr    []string
		reason string
		detail bool // the reason is the Cache-Status detail
	}{
		{"/private", nil, "private", true},
		{"/private", nil, "hit-for-miss", false},
		{"/cookie", nil, "set-cookie", true},
		{"/nofresh", nil, "no-freshness", true},
		{"/nostore", nil, "no-store", true},
		{"/vary", nil, "vary-star", true},
		{"/big", nil, "too-large", true},
		{"/big", nil, "hit-for-miss", false},
		{"/bigstream", nil, "too-large", false},
		{"/bigstream", nil, "hit-for-miss", false}, // found too large while streaming: remembered too
		{"/auth", []string{"Authorization", "Bearer x"}, "authorization", true},
		{"/ok", []string{"Cache-Control", "no-store"}, "request-no-store", true},
		{"/ok", []string{"If-Match", `"x"`}, "precondition", true},
		{"/ok", []string{"Range", "bytes=0-0"}, "range", true},
	}
	for _, tt := range tests {
		before := c.Stats().Reasons["svc"][tt.reason]
		w, _, err := do(t, c, o.fetch(), "GET", tt.path, tt.hdr...)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Stats().Reasons["svc"][tt.reason]; got != before+1 {
			t.Fatalf("%s %v: %s counted %d → %d; all %v", tt.path, tt.hdr, tt.reason, before, got, c.Stats().Reasons)
		}
		if cs := w.Header().Get("Cache-Status"); tt.detail && !strings.Contains(cs, "detail="+tt.reason) {
			t.Fatalf("%s: Cache-Status %q lacks detail=%s", tt.path, cs, tt.reason)
		}
	}
	// A fresh entry that the request sends upstream anyway.
	do(t, c, o.fetch(), "GET", "/ok")
	do(t, c, o.fetch(), "GET", "/ok", "Cache-Control", "no-cache")
	if n := c.Stats().Reasons["svc"]["request-no-cache"]; n != 1 {
		t.Fatalf("request-no-cache %d", n)
	}

	// Inspect: nothing stored for /private, its last decision is remembered.
	in := c.Inspect("svc", "/private")
	if len(in.Variants) != 0 || in.LastDecision == nil || in.LastDecision.Reason != "private" || in.LastDecision.Stored || in.LastDecision.Status != 200 {
		t.Fatalf("inspect /private: %+v %+v", in, in.LastDecision)
	}
	// /ok is stored: one variant, 60 s of freshness, age following the clock.
	clk.Advance(10 * time.Second)
	in = c.Inspect("svc", "/ok")
	if len(in.Variants) != 1 || in.Variants[0].AgeSeconds != 10 || in.Variants[0].FreshSeconds != 50 || in.Variants[0].BodySize != 1 || in.Variants[0].Size <= 1 {
		t.Fatalf("inspect /ok: %+v", in)
	}
	if in.LastDecision == nil || !in.LastDecision.Stored {
		t.Fatalf("inspect /ok decision: %+v", in.LastDecision)
	}
	// Another service, and an unknown URL: nothing, no decision.
	if in := c.Inspect("other", "/ok"); len(in.Variants) != 0 || in.LastDecision != nil {
		t.Fatalf("other service: %+v", in)
	}
	if in := c.Inspect("svc", "/never"); len(in.Variants) != 0 || in.LastDecision != nil {
		t.Fatalf("unknown URL: %+v", in)
	}
}

// TestReasonPurgedDuringFetch: an answer whose fetch began before a purge of its URL is not stored,
// counted as "purged", and remembered so.
func TestReasonPurgedDuringFetch(t *testing.T) {
	c := newTestCache(t, nil, Options{})
	release := make(chan struct{})
	arrived := make(chan struct{})
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("x"))
	})
	done := make(chan string)
	go func() {
		w, _, _ := do(t, c, o.fetch(), "GET", "/p")
		done <- w.Header().Get("Cache-Status")
	}()
	<-arrived
	c.Purge("svc", "/p")
	close(release)
	if cs := <-done; !strings.Contains(cs, "detail=purged") {
		t.Fatalf("Cache-Status %q", cs)
	}
	if n := c.Stats().Reasons["svc"]["purged"]; n != 1 {
		t.Fatalf("purged counted %d", n)
	}
	if d := c.Inspect("svc", "/p").LastDecision; d == nil || d.Reason != "purged" {
		t.Fatalf("decision %+v", d)
	}
}

// TestDecisionsBounded: the decision memory keeps at most decisionsCap URLs, the newest.
func TestDecisionsBounded(t *testing.T) {
	var d decisions
	for i := range decisionsCap + 10 {
		d.note("s", "/"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), Decision{Status: i})
	}
	if len(d.m) != decisionsCap {
		t.Fatalf("%d remembered", len(d.m))
	}
	if _, ok := d.last("s", "/"+"a"+time.Duration(0).String()); ok {
		t.Fatal("the oldest decision is still remembered")
	}
}

// TestReasonNames: every reason has a distinct, non-empty name.
func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		n := r.String()
		if n == "" || seen[n] || strings.HasPrefix(n, "reason(") {
			t.Fatalf("reason %d: name %q", r, n)
		}
		seen[n] = true
	}
}
