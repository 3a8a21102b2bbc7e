package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// ConnStats is a snapshot of a [ConnCounter] for the admin /gateway/pools
// route.
type ConnStats struct {
	// Open is the number of connections dialled and not yet closed.
	Open int64 `json:"open"`
	// Active is the number of open connections carrying at least one
	// request (traced with ConnCounter.Trace) right now.
	Active int64 `json:"active"`
	// Idle is Open - Active: open connections with no traced request.
	Idle int64 `json:"idle"`
	// Dialed counts connections opened since creation.
	Dialed uint64 `json:"dialed"`
	// DialErrors counts failed dials since creation.
	DialErrors uint64 `json:"dial_errors"`
}

// ConnCounter counts a transport's upstream connections from their real life
// cycle rather than from guesses: the dial function is wrapped so every
// connection is counted when it opens and, exactly once, when it closes
// (whoever closes it: the idle-pool reaper, CloseIdleConnections, a broken
// read, the server going away). That gives Open.
//
// Active and Idle need to know whether a connection is serving a request.
// http.Transport does not expose its pool, so each request carries an
// httptrace.ClientTrace (see Trace): GotConn takes a reference on the
// connection, and the reference is dropped when the connection goes back to
// the idle pool (PutIdleConn), when the request's context ends, or implicitly
// when the connection closes. A connection is active while it holds a
// reference; Idle is derived as Open - Active, so the two can never disagree
// with Open. References (not a busy flag) are needed because the transport
// may hand a connection to the next request before the previous request's
// PutIdleConn callback has run, and because an HTTP/2 connection carries many
// requests at once.
//
// The zero value is ready to use. A ConnCounter is safe for concurrent use.
type ConnCounter struct {
	open       atomic.Int64
	active     atomic.Int64
	dialed     atomic.Uint64
	dialErrors atomic.Uint64
}

// closedBit marks a countedConn as closed in its state word; the low bits
// hold the number of traced requests using it.
const closedBit = int64(1) << 62

// countedConn is a net.Conn whose Close is counted once.
type countedConn struct {
	net.Conn
	c     *ConnCounter
	state atomic.Int64 // closedBit | references
}

// Close closes the connection and, the first time only, updates the counts.
func (cc *countedConn) Close() error {
	old := cc.state.Or(closedBit)
	if old&closedBit == 0 {
		cc.c.open.Add(-1)
		if old > 0 {
			cc.c.active.Add(-1)
		}
	}
	return cc.Conn.Close()
}

// NetConn returns the wrapped connection, like tls.Conn.NetConn does.
func (cc *countedConn) NetConn() net.Conn { return cc.Conn }

func (cc *countedConn) ref() {
	if cc.state.Add(1) == 1 { // first reference on an open conn
		cc.c.active.Add(1)
	}
}

func (cc *countedConn) unref() {
	if cc.state.Add(-1) == 0 { // last reference on an open conn
		cc.c.active.Add(-1)
	}
}

// WrapDial returns a dial function that dials with dial and counts the
// connection: Dialed and Open on success, DialErrors on failure, and Open
// down again when the connection is closed. Assign it to
// http.Transport.DialContext before the transport's first request.
//
// Do not wrap a dial function that returns *tls.Conn (a DialTLSContext):
// http.Transport type-asserts *tls.Conn to negotiate HTTP/2 and read the TLS
// state, and the wrapper would hide it. Wrap the plain-TCP DialContext; the
// transport layers TLS on top of the counted connection.
func (c *ConnCounter) WrapDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			c.dialErrors.Add(1)
			return nil, err
		}
		c.dialed.Add(1)
		c.open.Add(1)
		return &countedConn{Conn: conn, c: c}, nil
	}
}

// counted finds the countedConn of this counter under conn, looking through
// wrappers such as *tls.Conn that expose NetConn.
func (c *ConnCounter) counted(conn net.Conn) *countedConn {
	for range 8 { // bounded: a wrapper returning itself must not hang us
		switch v := conn.(type) {
		case *countedConn:
			if v.c == c {
				return v
			}
			return nil
		case interface{ NetConn() net.Conn }:
			conn = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// reqTrace is the per-request state behind Trace: the connection the request
// currently holds a reference on.
type reqTrace struct {
	c     *ConnCounter
	ctx   context.Context
	conn  atomic.Pointer[countedConn]
	h2    atomic.Bool // context.AfterFunc registered (HTTP/2 only)
	trace httptrace.ClientTrace
}

// Trace returns ctx carrying an httptrace.ClientTrace that keeps Active and
// Idle right for requests made with it. Call it once per upstream request,
// on the context that request (and its retries) will use; the context must
// end when the exchange ends, which is true of an incoming request's
// context once the handler returns.
//
// Cost per request: four small allocations (the trace state, its two
// callbacks, the context value); HTTP/2 requests add a context.AfterFunc
// registration, since HTTP/2 never reports a stream's end through the trace.
func (c *ConnCounter) Trace(ctx context.Context) context.Context {
	rt := &reqTrace{c: c}
	rt.trace.GotConn = rt.gotConn
	rt.trace.PutIdleConn = rt.putIdleConn
	rt.ctx = httptrace.WithClientTrace(ctx, &rt.trace)
	return rt.ctx
}

func (rt *reqTrace) gotConn(info httptrace.GotConnInfo) {
	cc := rt.c.counted(info.Conn)
	if cc == nil {
		return // not dialled through WrapDial (or another counter's)
	}
	cc.ref()
	if old := rt.conn.Swap(cc); old != nil {
		old.unref() // a retry on the same context: the earlier attempt is over
	}
	// HTTP/1 connections report their return to the pool (PutIdleConn) or
	// close; HTTP/2 ones do neither per request, so release on context end.
	if tc, ok := info.Conn.(*tls.Conn); ok && !rt.h2.Load() &&
		tc.ConnectionState().NegotiatedProtocol == "h2" && rt.h2.CompareAndSwap(false, true) {
		context.AfterFunc(rt.ctx, rt.done)
	}
}

// putIdleConn runs when an HTTP/1 connection is returned to the idle pool
// (err == nil) or could not be (err != nil; the transport closes it).
func (rt *reqTrace) putIdleConn(error) {
	rt.done()
}

func (rt *reqTrace) done() {
	if cc := rt.conn.Swap(nil); cc != nil {
		cc.unref()
	}
}

// Stats returns the current counts. Open and Active are read separately, so
// while connections change state Idle may be momentarily off by one; it is
// never negative.
func (c *ConnCounter) Stats() ConnStats {
	open := max(c.open.Load(), 0)
	active := min(max(c.active.Load(), 0), open)
	return ConnStats{
		Open:       open,
		Active:     active,
		Idle:       open - active,
		Dialed:     c.dialed.Load(),
		DialErrors: c.dialErrors.Load(),
	}
}

// warmUpDrainLimit bounds how much of a warm-up response is read. A body
// left unread closes its connection instead of pooling it, so keep the
// warm-up URL cheap (a health path).
const warmUpDrainLimit = 1 << 20

// WarmUp opens up to n keep-alive connections to url ahead of traffic (the
// min_idle of a service), so the first requests after a (re)load skip the
// TCP and TLS handshakes. It sends n concurrent GET requests with client and
// holds every response until all n have arrived, which forces HTTP/1 onto n
// distinct connections, then drains and closes the bodies so the connections
// go to the idle pool.
//
// Best effort by nature: the transport keeps at most MaxIdleConnsPerHost idle
// connections per host (set it >= n), closes them after IdleConnTimeout, and
// an HTTP/2 upstream multiplexes everything on one connection. It returns the
// joined errors of the requests that failed; bound it with ctx.
func (c *ConnCounter) WarmUp(ctx context.Context, client *http.Client, url string, n int) error {
	if n <= 0 {
		return nil
	}
	if client == nil {
		client = http.DefaultClient
	}
	var (
		arrived sync.WaitGroup // every request has an answer (or failed)
		done    sync.WaitGroup
		errs    = make([]error, n)
	)
	arrived.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			req, err := http.NewRequestWithContext(c.Trace(ctx), http.MethodGet, url, nil)
			if err != nil {
				arrived.Done()
				errs[i] = err
				return
			}
			resp, err := client.Do(req)
			arrived.Done()
			if err != nil {
				errs[i] = err
				return
			}
			arrived.Wait()
			_, err = io.CopyN(io.Discard, resp.Body, warmUpDrainLimit)
			if errors.Is(err, io.EOF) {
				err = nil
			}
			resp.Body.Close()
			if err == nil && resp.StatusCode >= 500 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			errs[i] = err
		}()
	}
	done.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("warm up %s: %w", url, err)
	}
	return nil
}
