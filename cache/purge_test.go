package cache

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestInvalidation: a non-error answer to an unsafe method removes the URL's entries (all variants),
// and those of a relative Location / Content-Location; an error answer removes nothing.
func TestInvalidation(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		answer     http.HandlerFunc
		wantGone   []string
		wantStayed []string
	}{
		{"post 200", "POST", respond(200, "ok"), []string{"/a"}, []string{"/b", "/a?x=1"}},
		{"delete 204 with location", "DELETE", respond(204, "", "Location", "/b"), []string{"/a", "/b"}, []string{"/a?x=1"}},
		{"put content-location", "PUT", respond(201, "", "Content-Location", "/a?x=1"), []string{"/a", "/a?x=1"}, []string{"/b"}},
		{"patch 500 keeps", "PATCH", respond(500, "fail"), nil, []string{"/a", "/b"}},
		{"absolute location ignored", "POST", respond(303, "", "Location", "http://other/b"), []string{"/a"}, []string{"/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != "GET" {
					tt.answer(w, r)
					return
				}
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Vary", "Accept")
				_, _ = w.Write([]byte(r.URL.String()))
			})
			c := newTestCache(t, nil, Options{})
			for _, p := range []string{"/a", "/b", "/a?x=1"} {
				do(t, c, o.fetch(), "GET", p)
				do(t, c, o.fetch(), "GET", p, "Accept", "text/html") // a second variant
			}
			if _, res, _ := do(t, c, o.fetch(), tt.method, "/a"); res != ResultBypass {
				t.Fatalf("unsafe result %v", res)
			}
			for _, p := range tt.wantGone {
				if _, res, _ := do(t, c, o.fetch(), "GET", p, "Cache-Control", "only-if-cached"); res == ResultHit {
					t.Errorf("%s still cached", p)
				}
			}
			for _, p := range tt.wantStayed {
				if _, res, _ := do(t, c, o.fetch(), "GET", p, "Cache-Control", "only-if-cached"); res != ResultHit {
					t.Errorf("%s was invalidated", p)
				}
			}
		})
	}
}

// TestPurge: by service and prefix, counts, Stats.
func TestPurge(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "x", "Cache-Control", "max-age=60"))
	c := newTestCache(t, nil, Options{})
	fill := func() {
		for _, svc := range []string{"users", "orders"} {
			for _, p := range []string{"/v1/a", "/v1/b", "/v2/a"} {
				w := httptest.NewRecorder()
				if _, err := c.Serve(w, httptest.NewRequest("GET", p, nil), &Route{Service: svc, Fetch: o.fetch()}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	tests := []struct {
		service, prefix string
		want, left      int
	}{
		{"users", "/v1/", 2, 4},
		{"users", "", 3, 3},
		{"", "/v2", 2, 4},
		{"", "", 6, 0},
		{"nobody", "", 0, 6},
	}
	for _, tt := range tests {
		t.Run(tt.service+"|"+tt.prefix, func(t *testing.T) {
			c.Purge("", "")
			fill()
			if s := c.Stats(); s.Entries != 6 || s.Bytes <= 0 {
				t.Fatalf("stats before: %+v", s)
			}
			if got := c.Purge(tt.service, tt.prefix); got != tt.want {
				t.Fatalf("Purge = %d, want %d", got, tt.want)
			}
			if s := c.Stats(); s.Entries != tt.left {
				t.Fatalf("entries left %d, want %d", s.Entries, tt.left)
			}
		})
	}
	if s := c.Stats(); !strings.Contains(Result(ResultHit).String(), "hit") || s.Stores == 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestMaxItemSize: an answer larger than MaxItemSize reaches the client whole but is not stored, and
// the recorder never holds more than MaxItemSize (unknown length: chunked answer).
func TestMaxItemSize(t *testing.T) {
	big := strings.Repeat("z", 10_000)
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for i := 0; i < len(big); i += 1000 {
			_, _ = w.Write([]byte(big[i : i+1000]))
			w.(http.Flusher).Flush()
		}
	})
	c := newTestCache(t, nil, Options{MaxItemSize: 4096})
	var maxHeld int
	fetch := func(w http.ResponseWriter, r *http.Request, _ http.ResponseWriter) error {
		rec := w.(*recorder)
		err := o.fetch()(probeWriter{rec, &maxHeld}, r, nil)
		return err
	}
	for range 2 {
		w, res, err := do(t, c, fetch, "GET", "/big")
		if err != nil || res != ResultMiss || w.Body.String() != big {
			t.Fatalf("%v %v len %d", res, err, w.Body.Len())
		}
	}
	if maxHeld > 4096 || o.calls.Load() != 2 {
		t.Fatalf("held %d bytes, calls %d", maxHeld, o.calls.Load())
	}
}

// probeWriter records the largest buffer the recorder held during the exchange.
type probeWriter struct {
	*recorder
	max *int
}

func (p probeWriter) Write(b []byte) (int, error) {
	n, err := p.recorder.Write(b)
	*p.max = max(*p.max, cap(p.recorder.body))
	return n, err
}
