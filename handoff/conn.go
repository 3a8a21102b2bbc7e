package handoff

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"
)

// conn is one accepted connection. When the server it belongs to shuts
// down for a reload and closes it between requests, it is handed to the
// newest config's server instead, with the bytes of any request the old
// server read but will never answer.
//
// Where requests and answers begin and end is not guessed: the conn
// follows the HTTP/1.1 framing of both directions (framer). A connection
// is handed over only when every request the old server took in full has
// had its whole answer, that answer kept the connection open, and the bytes
// read since are all kept. Requests read without an answer begun (one, or
// more when pipelined) go along only when net/http itself drops them: once
// Shutdown began, a connection goroutine returns after an answer, or after
// reading a request, without running the next handler. That goroutine's
// own Close, not panicking, with nothing written since the last answer, is
// the proof (serveClosing).
//
// Shutdown closes an idle connection while its goroutine waits in Read, so
// a hand-over may take two steps:
//
//  1. That Close marks the connection released and ends the pending Read
//     with a timeout; bytes the Read brings are kept, not given to the old
//     server.
//  2. The goroutine then returns and closes the connection itself; that
//     Close hands the socket over.
//
// TLS, HTTP/2, upgraded or hijacked connections, an answer that said
// "Connection: close" (or, to HTTP/1.0, did not say "keep-alive") or ran
// until the connection closed, and anything the strict framer gives up on
// close as before.
type conn struct {
	net.Conn
	listener *listener

	mu      sync.Mutex
	in, out framer // the requests the server reads, the answers it writes
	read    int64  // bytes the server has read
	heads   int    // request heads the server has read
	final   int    // final answers the server has written in full
	headReq []head // per request without a final answer: its head

	// Where requests end, to keep the bytes of those without an answer:
	ends   []int64 // read offsets where complete, unanswered requests end
	early  int     // answers complete before their request's end was read
	need   int64   // read offset where the oldest unanswered request starts
	keep   []byte  // bytes read from keepAt on: from need, or the last keepWindow of them
	keepAt int64

	wrote  bool   // the server wrote since its last final answer
	never  bool   // the connection ends with its current exchange
	replay []byte // bytes read before the hand-over, served first
	kept   []byte // bytes of the next request kept from the old server

	reading  int  // Reads in progress
	released bool // step 1 happened, or the old server may still take a request
	gone     bool // handed over or closed: this value is done
	waiting  bool // no request head read yet: registered with its listener
}

// keepWindow bounds the bytes kept per connection: a request without an
// answer is replayed only while all of it fits.
const keepWindow = 16 << 10

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
		c.took(p[:n])
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
		if c.released {
			// the next request, arriving as the old server lets go: keep it
			// for the next server
			c.kept = append(c.kept, p[:n]...)
			return 0, errReleased
		}
		c.took(p[:n])
	}
	return n, err
}

// took follows the bytes the server read. Callers hold mu.
func (c *conn) took(b []byte) {
	at := c.read
	c.read += int64(len(b))
	if c.never {
		return
	}
	c.keepBytes(b)
	for len(b) > 0 && !c.never {
		n, ev := c.in.step(b)
		b, at = b[n:], at+int64(n)
		switch ev {
		case evHead:
			// (a request saying "Connection: close" is answered so, and
			// that answer ends hand-overs)
			h, ok := parseRequestHead(c.in.buf)
			if !ok || len(c.headReq) == 16 {
				c.never = true
				break
			}
			c.heads++
			c.headReq = append(c.headReq, h)
			if c.waiting {
				c.waiting = false
				c.listener.forget(c) // net/http counts it as active from now on
			}
			if c.in.body(h.chunked, max(h.length, 0)) {
				c.requestEnded(at)
			}
		case evEnd:
			c.requestEnded(at)
		}
	}
	if c.in.phase == phaseFailed {
		c.never = true
	}
	if c.never && c.waiting {
		// not HTTP/1 the framer follows (TLS, PROXY protocol, a head it
		// refuses): its exchanges are none of the wrapper's business, and a
		// shutdown must not release it mid-exchange
		c.waiting = false
		c.listener.forget(c)
	}
}

func (c *conn) requestEnded(at int64) {
	if c.early > 0 {
		c.early--
		c.cut(at)
		return
	}
	c.ends = append(c.ends, at)
}

// answerEnded counts a final answer written in full; more says whether
// the server wrote on past it.
func (c *conn) answerEnded(more bool) {
	c.final++
	c.wrote = more
	if len(c.ends) == 0 {
		c.early++ // answered before the request's body was read
		return
	}
	c.cut(c.ends[0])
	c.ends = c.ends[:copy(c.ends, c.ends[1:])]
}

// cut drops the kept bytes before read offset at, where an answered
// request ends: what follows is the oldest request without an answer.
func (c *conn) cut(at int64) {
	c.need = at
	if skip := min(at-c.keepAt, int64(len(c.keep))); skip > 0 {
		c.keep = append(c.keep[:0], c.keep[skip:]...)
		c.keepAt += skip
	}
}

// keepBytes appends what the server read to keep; past twice keepWindow,
// only the last keepWindow bytes stay. keep always ends at c.read.
func (c *conn) keepBytes(b []byte) {
	c.keep = append(c.keep, b...)
	if len(c.keep) > 2*keepWindow {
		over := len(c.keep) - keepWindow
		c.keep = append(c.keep[:0:0], c.keep[over:]...)
		c.keepAt += int64(over)
	}
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.writing(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	c.sent(p[:n], err)
	return n, err
}

// ReadFrom keeps the kernel's sendfile path for file answers, which
// net/http uses only for a body of known length.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.writing(); err != nil {
		return 0, err
	}
	var n int64
	var err error
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(c.Conn, r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out.phase == phaseBody && n <= c.out.remain {
		c.out.remain -= n
		if c.out.remain == 0 {
			c.out.phase = phaseHead
			c.answerEnded(false)
		}
	} else if n > 0 && c.out.phase != phaseUntilClose {
		c.never = true
	}
	if err != nil {
		c.never = true
	}
	return n, err
}

// writing notes that the server sends (part of) an answer, or refuses
// when the connection is no longer the old server's.
func (c *conn) writing() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wrote = true
	if c.gone || c.released {
		return net.ErrClosed
	}
	return nil
}

// sent follows the bytes the server wrote.
func (c *conn) sent(b []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.never = true
	}
	for len(b) > 0 && !c.never {
		n, ev := c.out.step(b)
		b = b[n:]
		switch ev {
		case evHead:
			h, ok := parseAnswerHead(c.out.buf)
			switch {
			case !ok || h.status == 101 || h.close:
				c.never = true
				return
			case h.status < 200: // an interim answer: the request goes on
				c.out.buf = c.out.buf[:0]
				continue
			case len(c.headReq) == 0:
				c.never = true // an answer to no request
				return
			}
			req := c.headReq[0]
			c.headReq = c.headReq[:copy(c.headReq, c.headReq[1:])]
			if req.http10 != h.http10 || req.http10 && !h.keepAlive {
				c.never = true // HTTP/1.0 without keep-alive, or a mix-up
				return
			}
			if req.isHEAD || h.status == 204 || h.status == 304 {
				h.chunked, h.length = false, 0
			}
			if c.out.body(h.chunked, h.length) {
				c.answerEnded(len(b) > 0)
			}
		case evEnd:
			c.answerEnded(len(b) > 0)
		}
	}
	if c.out.phase == phaseFailed || c.out.phase == phaseUntilClose {
		c.never = true
	}
}

// CloseWrite lets net/http half-close after an answer it cut short.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetDeadline is not used by net/http while it serves a connection, only
// when a handler hijacks it: such a connection is never handed over.
func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.never = true
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// verdict is what a Close may do with the connection.
type verdict uint8

const (
	closeIt       verdict = iota
	handOver              // between requests: hand over once no Read is pending
	handIfDropped         // one request read, no answer begun: hand over if net/http drops it
)

// verdict decides from the framing whether the connection can go to the
// newest server. Callers hold mu.
func (c *conn) verdict() verdict {
	if c.never || c.in.phase == phaseFailed || !c.out.between() || c.early > 0 ||
		c.need < c.keepAt || c.wrote || !c.replaced() {
		return closeIt
	}
	if c.heads == c.final {
		return handOver
	}
	return handIfDropped
}

// replaced reports whether a newer server can take the connection: its
// own is shutting down with another to take over, or a newer config
// already listens (Shutdown marks itself begun before it closes the
// listener, and in between a connection goroutine already acts on it).
func (c *conn) replaced() bool {
	l := c.listener
	return l.group.hasNewer(l) || l.isClosing() && l.group.hasSuccessor(l)
}

func (c *conn) Close() error {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return nil
	}
	v := c.verdict()
	if v == handIfDropped {
		serve, panicking := c.listener.group.serveClosing()
		switch {
		case panicking:
			v = closeIt // the handler ran, and died
		case serve && c.reading == 0:
			v = handOver // the goroutine returns without running the handler
		case serve:
			v = closeIt // someone still reads: no one would close it later
		default:
			// Shutdown (or anyone else) closes it while the goroutine may
			// still be about to run the handler: wait for its own Close
			// (the deadline is set before anyone can hand the socket on)
			defer c.mu.Unlock()
			c.released = true
			if c.reading > 0 {
				return c.Conn.SetReadDeadline(aLongTimeAgo)
			}
			return nil
		}
	}
	if v == handOver && c.reading > 0 {
		// step 1: Shutdown closes this idle connection while its goroutine
		// waits for the next request
		defer c.mu.Unlock()
		c.released = true
		return c.Conn.SetReadDeadline(aLongTimeAgo)
	}
	c.gone = true
	var unread []byte
	if v == handOver {
		unread = append(c.keep[c.need-c.keepAt:], c.kept...)
	}
	if c.waiting {
		c.waiting = false
		defer c.listener.forget(c)
	}
	c.mu.Unlock()

	if v != handOver {
		return c.Conn.Close()
	}
	if err := c.Conn.SetDeadline(time.Time{}); err != nil {
		return c.Conn.Close()
	}
	c.listener.group.give(c.Conn, unread, c.listener)
	return nil
}

// releaseIfWaiting does step 1 for a connection whose first request head
// has not been read in full when its server shuts down: net/http counts it
// as new, not idle, and would neither close it (for 5 s) nor answer a
// request read from then on. What it read of a request goes along.
func (c *conn) releaseIfWaiting() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone || c.released || c.heads != 0 || c.never {
		return
	}
	c.released = true
	if c.reading > 0 {
		_ = c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

// serveClosing reports whether Close is called by a connection's own
// net/http goroutine as it ends (serve), and whether that is because its
// handler panicked.
func serveClosing() (serve, panicking bool) {
	var pcs [24]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			panicking = true
		case f.Function == "net/http.(*conn).serve":
			return true, panicking
		}
		if !more {
			return false, panicking
		}
	}
}
