package handoff

import (
	"bytes"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// conn is one accepted connection. Once its config's listener has closed
// (the server is shutting down for a reload), a connection that sits
// between two HTTP/1 requests is not closed but handed to the newest
// config's server, together with any bytes of the next request that had
// already arrived.
//
// "Between two requests" is read from how net/http drives a connection:
// after it has written an answer in full it sets a read deadline (for the
// idle wait, or when it cancels its background read) before it reads the
// next request. A connection is armed by a read-deadline change made when
// nothing was read since the last write, and disarmed by any read or write.
// A connection that is mid-request, mid-answer, hijacked (WebSocket) or
// speaking HTTP/2 is never armed when it closes, and closes as before.
//
// The old server gives a connection up in one of three ways, all handled:
//
//   - its goroutine is about to read the next request: the read is refused
//     (a timeout), the goroutine closes the connection, and the close hands
//     it over;
//   - Shutdown closes it while its goroutine waits in Read: the close only
//     marks it released and ends the wait with a timeout (bytes that arrive
//     then are kept, not given to the old server), and the goroutine's own
//     close hands it over;
//   - its goroutine closes it after an answer written before the shutdown
//     began: the close hands it over.
type conn struct {
	net.Conn
	listener *listener

	mu       sync.Mutex
	replay   []byte // bytes read before the hand-over, served first
	kept     []byte // bytes of the next request the old server was denied or holds
	consumed int    // bytes the server read since it last wrote
	reading  int    // Reads in progress
	armed    bool   // between two requests: see the type's doc
	released bool   // the old server was made to let go: hand over on Close
	gone     bool   // handed over or closed: this value is done
	h2       bool   // HTTP/2 prior knowledge: never handed over
	started  bool   // the first bytes were seen
}

// errReleased is what the old server's Read sees when the connection is
// taken from it; a timeout makes net/http end the connection quietly.
var errReleased = os.ErrDeadlineExceeded

// aLongTimeAgo is a deadline in the past: it ends a pending Read at once.
var aLongTimeAgo = time.Unix(1, 0)

// handOverable reports whether the connection sits between two requests
// while its server shuts down and a newer server can take it. Callers
// hold mu.
func (c *conn) handOverable() bool {
	return c.armed && c.consumed == 0 && !c.h2 && c.listener.isClosing() && c.listener.group.hasSuccessor(c.listener)
}

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
		c.armed = false
		c.mu.Unlock()
		return n, nil
	case c.handOverable():
		// the old server would read the next request only to drop it
		c.released = true
		c.mu.Unlock()
		return 0, errReleased
	}
	c.reading++
	c.mu.Unlock()

	n, err := c.Conn.Read(p)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading--
	if n > 0 {
		if !c.started {
			c.started = true
			c.h2 = bytes.HasPrefix(p[:n], []byte("PRI * HTTP/2"))
		}
		if c.released || c.handOverable() {
			// the next request, arrived as the old server let go (or as
			// its shutdown began): keep it for the next server
			c.released = true
			c.kept = append(c.kept, p[:n]...)
			return 0, errReleased
		}
		if len(p) == 1 && c.consumed == 0 && len(c.kept) == 0 {
			// net/http's background read, pending until an answer is
			// flushed, caught the first byte of the next request: the old
			// server holds it, so a hand-over replays it. The connection
			// is between two requests unless the server writes again.
			c.kept = append(c.kept, p[0])
			c.armed = true
			return n, err
		}
		c.consumed += len(c.kept) + n
		c.kept = nil
		c.armed = false
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.wrote(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel's sendfile path for file responses.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.wrote(); err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

func (c *conn) wrote() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return net.ErrClosed
	}
	// a byte kept from a background read belongs to a request the server
	// goes on with (pipelining): it counts as consumed
	c.consumed = len(c.kept)
	c.kept = nil
	c.armed = false
	return nil
}

// CloseWrite lets net/http half-close after an answer it cut short.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.deadlineChanged()
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.deadlineChanged()
	return c.Conn.SetDeadline(t)
}

func (c *conn) deadlineChanged() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consumed == 0 {
		c.armed = true
	}
}

func (c *conn) Close() error {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return nil
	}
	if !c.released && c.handOverable() {
		c.released = true
	}
	if c.released && c.reading > 0 {
		// Shutdown closes it while its goroutine waits in Read: end the
		// wait; that goroutine's own Close hands it over
		c.mu.Unlock()
		return c.Conn.SetReadDeadline(aLongTimeAgo)
	}
	c.gone = true
	handOver := c.released && c.consumed == 0
	kept := c.kept
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
