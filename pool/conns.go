package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// ConnStats is a snapshot of a [ConnCounter] for the admin /gateway/pools
// route.
type ConnStats struct {
	// Open is the number of connections dialled and not yet closed.
	Open int64 `json:"open"`
	// Active is the number of open connections serving a request: the
	// requests in flight through the counter (Begin to End), at most Open.
	Active int64 `json:"active"`
	// Idle is Open - Active.
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
// Active is counted per request, not per connection: Begin and End bracket
// each upstream exchange, and Active is the exchanges in flight, capped at
// Open. An HTTP/1 exchange holds one connection from its request to the end
// of its answer, so for HTTP/1 the two are the same number; HTTP/2 exchanges
// share connections, so there Active can count a busy connection more than
// once (never more than Open). Two atomic additions per request cost far less
// than tracing each request's connection (an httptrace.ClientTrace, which
// Caddy's reverse proxy then composes with its own by reflection: ~0.6 µs and
// 4 allocations a request).
//
// The zero value is ready to use. A ConnCounter is safe for concurrent use.
type ConnCounter struct {
	open       atomic.Int64
	inFlight   atomic.Int64
	dialed     atomic.Uint64
	dialErrors atomic.Uint64
}

// countedConn is a net.Conn whose Close is counted once.
type countedConn struct {
	net.Conn
	c      *ConnCounter
	closed atomic.Bool
}

// Close closes the connection and, the first time only, updates the count.
func (cc *countedConn) Close() error {
	if !cc.closed.Swap(true) {
		cc.c.open.Add(-1)
	}
	return cc.Conn.Close()
}

// NetConn returns the wrapped connection, like tls.Conn.NetConn does.
func (cc *countedConn) NetConn() net.Conn { return cc.Conn }

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

// Begin counts an upstream exchange as in flight; End must follow once the
// exchange is over (its answer read or abandoned, retries included).
func (c *ConnCounter) Begin() { c.inFlight.Add(1) }

// End ends what Begin started.
func (c *ConnCounter) End() { c.inFlight.Add(-1) }

// Stats returns the current counts. Open and the exchanges in flight are
// read separately, so while they change Active and Idle may be momentarily
// off by one; neither is ever negative.
func (c *ConnCounter) Stats() ConnStats {
	open := max(c.open.Load(), 0)
	active := min(max(c.inFlight.Load(), 0), open)
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
			c.Begin()
			defer c.End()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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
