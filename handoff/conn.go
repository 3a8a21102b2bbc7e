package handoff

import (
	"bytes"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

// conn is one accepted connection. When the server it belongs to shuts
// down for a reload and closes it as idle, it is handed to the newest
// config's server instead of being closed, together with any bytes of the
// next request that arrive meanwhile.
//
// "Idle" is net/http's own verdict, not a guess: only the Close that
// Server.Shutdown makes for a connection in StateIdle — its last answer
// complete and reusable, its goroutine blocked reading the next request
// with nothing buffered — leads to a hand-over. That Close arrives while
// the connection's goroutine waits in Read, so it happens in two steps:
//
//  1. Shutdown's Close marks the connection released and ends the pending
//     Read with a timeout; bytes it brings are kept, not given to the old
//     server.
//  2. The connection's goroutine then returns and closes it itself; that
//     Close hands the socket and the kept bytes over.
//
// A connection mid-request or mid-answer, one whose answer said
// "Connection: close", a pipelining one (its next request is already
// buffered, so it never waits in Read), a hijacked one (WebSocket), TLS and
// HTTP/2 are never in that state or are excluded, and close as before.
type conn struct {
	net.Conn
	listener *listener

	mu       sync.Mutex
	replay   []byte // bytes read before the hand-over, served first
	kept     []byte // bytes of the next request kept from the old server
	consumed int    // bytes the server read since its last answer went out
	reading  int    // Reads in progress
	released bool   // step 1 happened: hand over on Close
	gone     bool   // handed over or closed: this value is done
	foreign  bool   // TLS or HTTP/2: never handed over
	handed   bool   // handed over, its first request not begun yet
	seen     int    // bytes seen so far, up to len(http2Preface)
	prefix   [len(http2Preface)]byte
}

// http2Preface starts every HTTP/2 connection without TLS.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// errReleased is what the old server's Read sees when the connection is
// taken from it; a timeout makes net/http end the connection quietly.
var errReleased = os.ErrDeadlineExceeded

// aLongTimeAgo is a deadline in the past: it ends a pending Read at once.
var aLongTimeAgo = time.Unix(1, 0)

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	switch {
	case c.gone:
		c.mu.Unlock()
		return 0, net.ErrClosed
	case c.released:
		c.mu.Unlock()
		return 0, errReleased
	case len(c.replay) > 0:
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		c.consumed += n
		c.mu.Unlock()
		return n, nil
	}
	c.reading++
	c.mu.Unlock()

	n, err := c.Conn.Read(p)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading--
	if n > 0 {
		c.sniff(p[:n])
		if c.released {
			// the next request, arriving as the old server lets go: keep it
			// for the next server
			c.kept = append(c.kept, p[:n]...)
			return 0, errReleased
		}
		if c.consumed == 0 && c.handed {
			c.handed = false
			c.listener.forget(c) // its first request on the new server began
		}
		c.consumed += n
	}
	return n, err
}

// sniff marks a connection that speaks TLS or HTTP/2 from its first bytes,
// which may come in pieces. Callers hold mu.
func (c *conn) sniff(b []byte) {
	if c.seen >= len(c.prefix) {
		return
	}
	if c.seen == 0 && b[0] == 0x16 { // a TLS handshake record
		c.foreign, c.seen = true, len(c.prefix)
		return
	}
	c.seen += copy(c.prefix[c.seen:], b)
	// what matches the HTTP/2 preface so far counts as HTTP/2 ("P" may
	// still become POST, PUT or PATCH)
	c.foreign = strings.HasPrefix(http2Preface, string(c.prefix[:c.seen]))
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.wrote(p); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel's sendfile path for file responses.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.wrote(nil); err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// wrote notes that the server sent (part of) an answer. An interim 1xx
// answer ("HTTP/1.1 100 Continue", 103) ends nothing: the request goes on.
func (c *conn) wrote(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return net.ErrClosed
	}
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 1")) {
		c.consumed = 0
	}
	return nil
}

// CloseWrite lets net/http half-close after an answer it cut short.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *conn) Close() error {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return nil
	}
	if !c.released && c.reading > 0 && c.consumed == 0 && !c.foreign &&
		c.listener.isClosing() && c.listener.group.hasSuccessor(c.listener) && c.listener.group.closedAsIdle() {
		// step 1: Shutdown closes this idle connection while its goroutine
		// waits for the next request
		c.released = true
		c.mu.Unlock()
		return c.Conn.SetReadDeadline(aLongTimeAgo)
	}
	if c.released && c.reading > 0 {
		c.mu.Unlock()
		return nil // step 2 comes from the reading goroutine
	}
	c.gone = true
	handOver := c.released && c.consumed == 0
	kept := c.kept
	if c.handed {
		c.handed = false
		defer c.listener.forget(c)
	}
	c.mu.Unlock()

	if !handOver {
		return c.Conn.Close()
	}
	if err := c.Conn.SetDeadline(time.Time{}); err != nil {
		return c.Conn.Close()
	}
	c.listener.group.give(c.Conn, kept, c.listener)
	return nil
}

// releaseIfWaiting does step 1 for a connection handed over to this
// listener's server that is still waiting for its first request there when
// that server shuts down in turn: net/http counts it as new, not idle, and
// would neither close it (for 5 s) nor answer a request read from then on.
func (c *conn) releaseIfWaiting() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone || c.released || c.consumed != 0 || len(c.replay) != 0 {
		return
	}
	c.released = true
	if c.reading > 0 {
		_ = c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

// closedAsIdle reports whether Close was called by net/http's Shutdown for
// a connection in StateIdle.
func closedAsIdle() bool {
	var pcs [8]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, "net/http.(*Server).closeIdleConns") {
			return true
		}
		if !more {
			return false
		}
	}
}
