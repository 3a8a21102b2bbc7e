package reqbody

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyMain(m) }

func TestHas(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    *http.Request
		want bool
	}{
		{"no body", httptest.NewRequest("GET", "/", nil), false},
		{"empty wrapped body", func() *http.Request {
			r := httptest.NewRequest("POST", "/", nil)
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader("")), 0
			return r
		}(), false},
		{"sized", httptest.NewRequest("POST", "/", strings.NewReader("abc")), true},
		{"unknown length", func() *http.Request {
			r := httptest.NewRequest("POST", "/", strings.NewReader("abc"))
			r.ContentLength = -1
			return r
		}(), true},
	} {
		if got := Has(tt.r); got != tt.want {
			t.Errorf("%s: Has = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// An HTTP/1 answer closes the connection exactly while part of the body is
// still unread; HTTP/2 never needs to.
func TestCloseIfUnread(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader("abc"))
	h := http.Header{}
	CloseIfUnread(r, h)
	if h.Get("Connection") != "close" {
		t.Fatal("a body never wrapped is unread: the answer must close")
	}
	b := Wrap(httptest.NewRecorder(), r, 0)
	h = http.Header{}
	CloseIfUnread(r, h)
	if h.Get("Connection") != "close" {
		t.Fatal("a wrapped body not read yet: the answer must close")
	}
	if _, err := io.ReadAll(r.Body); err != nil {
		t.Fatal(err)
	}
	h = http.Header{}
	CloseIfUnread(r, h)
	b.CloseIfUnread(h)
	if h.Get("Connection") != "" {
		t.Fatal("a body read to its end leaves the connection open")
	}
	r2 := httptest.NewRequest("POST", "/", strings.NewReader("abc"))
	r2.ProtoMajor = 2
	Wrap(httptest.NewRecorder(), r2, 0)
	h = http.Header{}
	CloseIfUnread(r2, h)
	if h.Get("Connection") != "" {
		t.Fatal("HTTP/2 frames its bodies: nothing to close")
	}
	var nilBody *Body
	nilBody.CloseIfUnread(h) // no body, no panic
}

func TestLimitAndBrokenOff(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader("0123456789"))
	b := Wrap(httptest.NewRecorder(), r, 4)
	_, err := io.ReadAll(r.Body)
	if !errors.As(err, new(*http.MaxBytesError)) || b.BrokeOff() != nil {
		t.Fatalf("over the limit: %v, broke off %v", err, b.BrokeOff())
	}
	r = httptest.NewRequest("POST", "/", nil)
	r.Body, r.ContentLength = io.NopCloser(iotest.ErrReader(io.ErrUnexpectedEOF)), 10
	b = Wrap(httptest.NewRecorder(), r, 0)
	_, _ = io.ReadAll(r.Body)
	if !errors.Is(b.BrokeOff(), io.ErrUnexpectedEOF) {
		t.Fatalf("broke off: %v", b.BrokeOff())
	}
	if Wrap(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), 4) != nil {
		t.Fatal("no body, no Body")
	}
}

func TestReplay(t *testing.T) {
	r := httptest.NewRequest("PUT", "/", strings.NewReader("small"))
	buf, ok, err := Replay(r, 8)
	if err != nil || !ok || string(buf) != "small" {
		t.Fatalf("small body: %q %v %v", buf, ok, err)
	}
	if rest, _ := io.ReadAll(r.Body); string(rest) != "small" {
		t.Fatalf("the body reads %q after Replay", rest)
	}
	r = httptest.NewRequest("PUT", "/", strings.NewReader("a larger body"))
	r.ContentLength = -1 // unknown: read ahead, then put back
	if _, ok, err := Replay(r, 4); ok || err != nil {
		t.Fatalf("large body: %v %v", ok, err)
	}
	if rest, _ := io.ReadAll(r.Body); string(rest) != "a larger body" {
		t.Fatalf("the body reads %q after a refused Replay", rest)
	}
	if _, ok, err := Replay(httptest.NewRequest("GET", "/", nil), 4); !ok || err != nil {
		t.Fatalf("no body: %v %v", ok, err)
	}
}
