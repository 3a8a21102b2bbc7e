package cache

import (
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveRanges is an upstream that honours Range itself (http.ServeContent).
func serveRanges(body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
	}
}

// TestRangeFromCache stores a complete 200 and checks how Range requests are answered from it.
func TestRangeFromCache(t *testing.T) {
	clk := newClock()
	lm := clk.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	o := newOrigin(t, clk, serveRanges("0123456789A", "Cache-Control", "max-age=60", "Etag", `"v1"`, "Last-Modified", lm, "A", "1"))
	c := newTestCache(t, clk, Options{})
	if w, _, _ := do(t, c, o.fetch(), "GET", "/r"); w.Code != 200 {
		t.Fatalf("store: %d", w.Code)
	}
	tests := []struct {
		name         string
		hdr          []string
		wantCode     int
		wantBody     string
		wantRange    string
		wantUpstream bool
	}{
		{"first bytes", []string{"Range", "bytes=0-1"}, 206, "01", "bytes 0-1/11", false},
		{"open end", []string{"Range", "bytes=1-"}, 206, "123456789A", "bytes 1-10/11", false},
		{"suffix", []string{"Range", "bytes=-1"}, 206, "A", "bytes 10-10/11", false},
		{"suffix longer than body", []string{"Range", "bytes=-50"}, 206, "0123456789A", "bytes 0-10/11", false},
		{"last past the end", []string{"Range", "bytes=9-99"}, 206, "9A", "bytes 9-10/11", false},
		{"unit case", []string{"Range", "Bytes=2-3"}, 206, "23", "bytes 2-3/11", false},
		{"past the end", []string{"Range", "bytes=11-"}, 416, "", "bytes */11", false},
		{"zero suffix", []string{"Range", "bytes=-0"}, 416, "", "bytes */11", false},
		{"invalid: ignored", []string{"Range", "bytes=5-2"}, 200, "0123456789A", "", false},
		{"other unit: ignored", []string{"Range", "items=0-1"}, 200, "0123456789A", "", false},
		{"overlapping ranges: whole", []string{"Range", "bytes=0-4,3-5"}, 200, "0123456789A", "", false},
		{"too many ranges: whole", []string{"Range", "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9,10-10,11-11,12-12,13-13,14-14,15-15,16-16"}, 200, "0123456789A", "", false},
		{"one satisfiable of two", []string{"Range", "bytes=50-60, 1-2"}, 206, "12", "bytes 1-2/11", false},
		{"none satisfiable", []string{"Range", "bytes=50-60,70-"}, 416, "", "bytes */11", false},
		{"If-Range strong etag", []string{"Range", "bytes=0-1", "If-Range", `"v1"`}, 206, "01", "bytes 0-1/11", false},
		{"If-Range other etag", []string{"Range", "bytes=0-1", "If-Range", `"v0"`}, 200, "0123456789A", "", false},
		{"If-Range weak etag", []string{"Range", "bytes=0-1", "If-Range", `W/"v1"`}, 200, "0123456789A", "", false},
		{"If-Range date", []string{"Range", "bytes=0-1", "If-Range", lm}, 206, "01", "bytes 0-1/11", false},
		{"If-Range other date", []string{"Range", "bytes=0-1", "If-Range", clk.Now().UTC().Format(http.TimeFormat)}, 200, "0123456789A", "", false},
		{"If-None-Match first", []string{"Range", "bytes=0-1", "If-None-Match", `"v1"`}, 304, "", "", false},
		{"no-cache goes upstream", []string{"Range", "bytes=0-1", "Cache-Control", "no-cache"}, 206, "01", "bytes 0-1/11", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := o.calls.Load()
			w, _, err := do(t, c, o.fetch(), "GET", "/r", tt.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.wantCode || w.Header().Get("Content-Range") != tt.wantRange {
				t.Fatalf("got %d %q, want %d %q", w.Code, w.Header().Get("Content-Range"), tt.wantCode, tt.wantRange)
			}
			if tt.wantCode != 416 && w.Body.String() != tt.wantBody {
				t.Fatalf("body %q, want %q", w.Body.String(), tt.wantBody)
			}
			if tt.wantCode == 416 && !strings.Contains(w.Body.String(), `"status":416`) {
				t.Fatalf("416 body %q is not the JSON error", w.Body.String())
			}
			if tt.wantCode == 206 && w.Header().Get("Content-Length") != "2" && len(tt.wantBody) == 2 {
				t.Fatalf("Content-Length %q", w.Header().Get("Content-Length"))
			}
			if tt.wantCode == 206 && !tt.wantUpstream && w.Header().Get("A") != "1" {
				t.Fatalf("stored field A missing: %v", w.Header())
			}
			if went := o.calls.Load() != before; went != tt.wantUpstream {
				t.Fatalf("went upstream: %v, want %v", went, tt.wantUpstream)
			}
		})
	}
	// A Range miss is forwarded untouched and its 206 is not stored.
	if w, res, _ := do(t, c, o.fetch(), "GET", "/other", "Range", "bytes=0-1"); w.Code != 206 || res != ResultBypass {
		t.Fatalf("range miss: %d %v", w.Code, res)
	}
	if w, _, _ := do(t, c, o.fetch(), "GET", "/other"); !strings.Contains(w.Header().Get("Cache-Status"), "fwd=miss") {
		t.Fatalf("the 206 was stored: %q", w.Header().Get("Cache-Status"))
	}
	// HEAD with Range is forwarded as it is.
	if _, res, _ := do(t, c, o.fetch(), "HEAD", "/r", "Range", "bytes=0-1"); res != ResultBypass {
		t.Fatalf("HEAD range: %v", res)
	}
}

// TestRangeMultipart: several ranges get a multipart/byteranges 206 from the cache.
func TestRangeMultipart(t *testing.T) {
	o := newOrigin(t, nil, serveRanges("0123456789A", "Cache-Control", "max-age=60", "Content-Type", "text/plain"))
	c := newTestCache(t, nil, Options{})
	do(t, c, o.fetch(), "GET", "/m")
	w, res, _ := do(t, c, o.fetch(), "GET", "/m", "Range", "bytes=0-1, -2")
	if w.Code != 206 || res != ResultHit || o.calls.Load() != 1 {
		t.Fatalf("%d %v %d calls", w.Code, res, o.calls.Load())
	}
	mt, params, err := mime.ParseMediaType(w.Header().Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("Content-Type %q", w.Header().Get("Content-Type"))
	}
	if w.Header().Get("Content-Length") != strconv.Itoa(w.Body.Len()) {
		t.Fatalf("Content-Length %q for %d bytes", w.Header().Get("Content-Length"), w.Body.Len())
	}
	mr := multipart.NewReader(w.Body, params["boundary"])
	var got []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		got = append(got, p.Header.Get("Content-Range")+" "+p.Header.Get("Content-Type")+" "+string(b))
	}
	want := []string{"bytes 0-1/11 text/plain 01", "bytes 9-10/11 text/plain 9A"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("parts %q, want %q", got, want)
	}
}

// TestRangeStaleGoesUpstream: a stale entry does not answer a Range; the request is forwarded.
func TestRangeStaleGoesUpstream(t *testing.T) {
	clk := newClock()
	o := newOrigin(t, clk, serveRanges("0123456789", "Cache-Control", "max-age=10"))
	c := newTestCache(t, clk, Options{})
	do(t, c, o.fetch(), "GET", "/s")
	clk.Advance(time.Minute)
	w, res, _ := do(t, c, o.fetch(), "GET", "/s", "Range", "bytes=0-1")
	if o.calls.Load() != 2 || res != ResultBypass || w.Code != 206 || w.Body.String() != "01" {
		t.Fatalf("calls %d res %v code %d body %q", o.calls.Load(), res, w.Code, w.Body.String())
	}
}

// FuzzParseRange: any Range value yields a verdict within the body's bounds, never a panic.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=-5", "bytes=5-", "bytes=99999999999999999999-", "bytes= 1 - 2", "bytes=-", "bytes=1-0,2-3", "=", ""} {
		f.Add(s, int64(11))
	}
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size < 0 || size > 1<<40 {
			return
		}
		v, rs := parseRange(spec, size)
		if v == rangePartial && (len(rs) == 0 || len(rs) > maxRanges) {
			t.Fatalf("%q of %d: %d ranges", spec, size, len(rs))
		}
		for _, br := range rs {
			if br.start < 0 || br.end < br.start || br.end >= size {
				t.Fatalf("%q of %d: %+v", spec, size, rs)
			}
		}
	})
}
