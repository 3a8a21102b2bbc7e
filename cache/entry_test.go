package cache

import (
	"bytes"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleEntry() *Entry {
	e := &Entry{
		Key: "Gkey", BaseLen: 2, Service: "users", URL: "/u/1?x=2", Status: 200,
		Header:       http.Header{"Cache-Control": {"max-age=60"}, "Etag": {`"a"`}, "X-Multi": {"1", "2"}},
		Body:         []byte("hello"),
		RequestTime:  time.Unix(100, 5),
		ResponseTime: time.Unix(101, 7),
		InitialAge:   3 * time.Second,
		Vary:         []string{"Accept"},
	}
	e.prepare(&Options{})
	return e
}

// TestEntryRoundTrip: MarshalBinary / UnmarshalBinary keep every stored field and re-derive the rest.
func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []*Entry{sampleEntry(), {Key: "m", BaseLen: 1, Service: "s", URL: "/", Marker: true, Vary: []string{"A", "B"}, Header: http.Header{}}} {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var d Entry
		if err := d.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if d.Key != e.Key || d.BaseLen != e.BaseLen || d.Service != e.Service || d.URL != e.URL || d.Marker != e.Marker ||
			d.Status != e.Status || !reflect.DeepEqual(d.Header, e.Header) || !bytes.Equal(d.Body, e.Body) ||
			!d.RequestTime.Equal(e.RequestTime) || !d.ResponseTime.Equal(e.ResponseTime) || d.InitialAge != e.InitialAge ||
			!reflect.DeepEqual(d.Vary, e.Vary) || d.lifetime != e.lifetime || d.etag != e.etag {
			t.Fatalf("round trip:\n got %#v\nwant %#v", d, *e)
		}
	}
}

// TestEntryCorrupt: foreign, truncated or damaged values are errors wrapping ErrCorruptEntry.
func TestEntryCorrupt(t *testing.T) {
	good, _ := sampleEntry().MarshalBinary()
	cases := map[string][]byte{
		"empty":        nil,
		"version":      append([]byte{99}, good[1:]...),
		"json":         []byte(`{"status":200}`),
		"trailing":     append(append([]byte(nil), good...), 0),
		"huge count":   {entryFormatVersion, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad status":   bytes.Replace(good, []byte{0xc8, 0x01}, []byte{0x05}, 1),
		"string chars": []byte(strings.Repeat("\x01", 40)),
	}
	for i := range len(good) {
		cases["truncated "+string(rune('a'+i%26))+string(rune('0'+i/26))] = good[:i]
	}
	for name, b := range cases {
		var e Entry
		if err := e.UnmarshalBinary(b); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// FuzzUnmarshalEntry: any input decodes to an error or to an entry that re-encodes identically.
func FuzzUnmarshalEntry(f *testing.F) {
	good, _ := sampleEntry().MarshalBinary()
	f.Add(good)
	f.Add([]byte{entryFormatVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Entry
		if err := e.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("error not wrapping ErrCorruptEntry: %v", err)
			}
			return
		}
		again, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var e2 Entry
		if err := e2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if !reflect.DeepEqual(e.Header, e2.Header) || !bytes.Equal(e.Body, e2.Body) || e.Key != e2.Key {
			t.Fatalf("not stable")
		}
	})
}

// TestCacheControlParse covers the parser's edge cases (RFC 9111 §5.2 and the cache-tests suite).
func TestCacheControlParse(t *testing.T) {
	tests := []struct {
		in          []string
		maxAge      int64
		invalid     bool
		noCache     bool
		maxStaleAny bool
	}{
		{[]string{"max-age=60"}, 60, false, false, false},
		{[]string{"MAX-AGE=60"}, 60, false, false, false},
		{[]string{`max-age="60"`}, 60, false, false, false},
		{[]string{"max-age=003600"}, 3600, false, false, false},
		{[]string{"max-age=1800, max-age=1"}, 1800, false, false, false},
		{[]string{"max-age=1", "max-age=1800"}, 1, false, false, false},
		{[]string{`extension="max-age=3600", max-age=1`}, 1, false, false, false},
		{[]string{`max-age=1, extension="max-age=3600"`}, 1, false, false, false},
		{[]string{"max-age =3600"}, -1, true, false, false},
		{[]string{"max-age= 3600"}, -1, true, false, false},
		{[]string{"max-age='3600'"}, -1, true, false, false},
		{[]string{"max-age=3600.5"}, -1, true, false, false},
		{[]string{"max-age=a3600"}, -1, true, false, false},
		{[]string{"max-age=99999999999999999999"}, maxDeltaSeconds, false, false, false},
		{[]string{"no-cache, max-stale"}, -1, false, true, true},
		{[]string{`no-cache="Set-Cookie"`}, -1, false, true, false},
		{[]string{",,  ,"}, -1, false, false, false},
	}
	for _, tt := range tests {
		d := parseCacheControl(tt.in)
		if d.MaxAge != tt.maxAge || d.InvalidMaxAge != tt.invalid || d.NoCache != tt.noCache || d.MaxStaleAny != tt.maxStaleAny {
			t.Errorf("%q: %+v", tt.in, d)
		}
	}
}

// FuzzCacheControl: the parser never panics, and numeric results stay in range.
func FuzzCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60, public", `a="b\"c", s-maxage=1`, "max-stale", "=,=\"", "stale-if-error=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := parseCacheControl([]string{s})
		for _, v := range []int64{d.MaxAge, d.SMaxAge, d.MaxStale, d.MinFresh, d.StaleWhileRevalidate, d.StaleIfError} {
			if v < -1 || v > maxDeltaSeconds {
				t.Fatalf("%q: value %d out of range", s, v)
			}
		}
	})
}

// FuzzKey: different (host, service, path, query) tuples never share a key, case-insensitively for
// the host only, and variant keys of different header values differ.
func FuzzKey(f *testing.F) {
	f.Add("example.com", "users", "/a", "x=1", "example.com", "users", "/a", "x=2", "en", "fr")
	f.Add("h", "s\x00", "/", "", "h", "s", "\x00/", "", "", " ")
	f.Fuzz(func(t *testing.T, h1, s1, p1, q1, h2, s2, p2, q2, v1, v2 string) {
		k1 := string(appendBaseKey(nil, h1, s1, p1, q1))
		k2 := string(appendBaseKey(nil, h2, s2, p2, q2))
		p1q, p2q := p1, p2
		if q1 != "" {
			p1q += "?" + q1
		}
		if q2 != "" {
			p2q += "?" + q2
		}
		same := lowerASCII(h1) == lowerASCII(h2) && s1 == s2 && p1q == p2q
		if (k1 == k2) != same {
			t.Fatalf("keys equal=%v, inputs equal=%v", k1 == k2, same)
		}
		names := []string{"X-A", "X-B"}
		va := string(appendVariantKey([]byte(k1), names, http.Header{"X-A": {v1}}))
		vb := string(appendVariantKey([]byte(k1), names, http.Header{"X-A": {v2}}))
		norm := func(v string) string { return string(appendNormalized(nil, "X-A", []string{v})) }
		if (va == vb) != (norm(v1) == norm(v2)) {
			t.Fatalf("variant keys equal=%v for %q %q", va == vb, v1, v2)
		}
	})
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
