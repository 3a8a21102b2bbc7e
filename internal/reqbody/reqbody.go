// Package reqbody owns the client's request body on its way through the
// gateway: whether there is one, the max_body limit, whether it was read to
// its end or broke off, its replay for retries, and the one decision that
// follows from it: an HTTP/1 answer given while part of the body is still
// on the wire closes the connection. Everything else asks it.
package reqbody

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
)

// Has reports whether the client sends a request body: a Content-Length
// above 0, or a body of unknown length (chunked; an HTTP/2 or HTTP/3
// request whose stream stays open after its header). Servers may wrap an
// empty body, so r.Body is never compared with http.NoBody alone.
func Has(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// Body is the client's request body, wrapped by Wrap. Its methods are safe
// for concurrent use with Read (the transport reads it on its own
// goroutine).
type Body struct {
	rc    io.ReadCloser
	http1 bool                  // the request came over HTTP/1: its body's rest would desync the connection
	eof   atomic.Bool           // read to its end: nothing of it is left on the connection
	err   atomic.Pointer[error] // the first read error
}

// Wrap takes over r.Body when there is one, bounded by limit bytes (0: no
// limit; reading past it fails with an *http.MaxBytesError, as with
// http.MaxBytesReader, which also has w's connection closed). It returns
// nil when r has no body.
func Wrap(w http.ResponseWriter, r *http.Request, limit int64) *Body {
	if !Has(r) {
		return nil
	}
	rc := r.Body
	if limit > 0 {
		rc = http.MaxBytesReader(w, rc, limit)
	}
	b := &Body{rc: rc, http1: r.ProtoMajor == 1}
	r.Body = b
	return b
}

// Read implements io.Reader, noting the end and the first failure.
func (b *Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.eof.Store(true)
	case err != nil:
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// Close implements io.Closer.
func (b *Body) Close() error { return b.rc.Close() }

// BrokeOff returns the read error when the client's body broke off (short
// of its Content-Length, bad chunking): the client's fault. A body over the
// limit is not broken off (see TooLarge). Nil-safe.
func (b *Body) BrokeOff() error {
	if b == nil {
		return nil
	}
	p := b.err.Load()
	if p == nil || errors.As(*p, new(*http.MaxBytesError)) {
		return nil
	}
	return *p
}

// CloseIfUnread makes the answer to r, whose header h is about to go out,
// close the connection when part of an HTTP/1 request body is still on the
// wire: only the connection's end keeps it from being read as the next
// request. net/http would see to that itself, but it looks at the request's
// Body field, which Caddy replaces with its own wrapper; once the body was
// closed early (by Go's transport after a failed or early-answered upstream
// write, by the max_body limit) it finds the body "already consumed" and
// keeps the connection, and a request hidden in the body's remainder would
// run as a request of its own (with the service's token). A body never
// wrapped (answered before the exchange began) is unread.
func CloseIfUnread(r *http.Request, h http.Header) {
	if b, ok := r.Body.(*Body); ok {
		b.CloseIfUnread(h)
		return
	}
	if r.ProtoMajor == 1 && Has(r) {
		h.Set("Connection", "close")
	}
}

// CloseIfUnread is the package's CloseIfUnread for a wrapped body. Nil-safe:
// without a body there is nothing left on the wire.
func (b *Body) CloseIfUnread(h http.Header) {
	if b != nil && b.http1 && !b.eof.Load() { // HTTP/2 and 3 frame each body: nothing to desync
		h.Set("Connection", "close")
	}
}

// Replay buffers r's body, when it is at most max bytes, so that the
// request can be sent again: it returns the bytes (nil without a body) and
// true, and r.Body reads them once. A larger or unknown-length body over max
// is put back as it was (what was read ahead first) and false returned: the
// request is streamed once, not retried. An error means the client's body
// could not be read (cut short, too slow, too large): no upstream should
// see a part of it.
func Replay(r *http.Request, max int64) ([]byte, bool, error) {
	if !Has(r) {
		return nil, true, nil
	}
	if r.ContentLength > max {
		return nil, false, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading the request body: %w", err)
	}
	if int64(len(buf)) > max {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil, false, nil
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(buf))
	return buf, true, nil
}
