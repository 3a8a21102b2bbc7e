package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/reqbody"
)

// errExchangeEnded is what reading the client's body returns once the
// exchange is over. It deliberately wraps no context error: Caddy's reverse
// proxy answers 499 on its own for anything that is context.Canceled.
var errExchangeEnded = errors.New("request body read after the upstream exchange ended")

// bodyGuard bounds the wait for the client's request body by the exchange:
// without it, a client announcing a body and then sending nothing holds the
// request (and its admission slot) forever. Cancelling the exchange's
// context is not enough, because Go's transport, on cancellation, waits for
// its write goroutine, which sits in Read on the client's body; and closing
// an HTTP/1 server body blocks on the same Read. What does unblock it is a
// read deadline on the client's connection, set through
// http.ResponseController when the exchange ends while a Read is waiting.
//
// The deadline is never set on a body read to its end: the server then reads
// the connection in the background, and a deadline firing there would cancel
// the client's request context (a 504 turned into a 499). Hence no deadline
// up front either, only when the exchange ends with the body unfinished.
type bodyGuard struct {
	body   io.ReadCloser
	client context.Context // the client's request context
	ctx    context.Context // the exchange's (with the service timeout)
	rc     *http.ResponseController
	stop   func() bool // unregisters expire

	mu      sync.Mutex
	idle    sync.Cond // on mu: a Read of the client's body returned
	inRead  bool      // a Read of the client's body is in progress
	done    bool      // a Read returned io.EOF or an error: nothing more to wait for
	ended   bool      // the exchange is over: no more reads
	stalled bool      // it timed out while waiting for the client's body
}

type bodyGuardKey struct{}

// guardBody wraps r.Body (when there is one) so that reading it ends with
// ctx, the exchange's context. The guard is also stored in the returned
// context, where the transport finds it to tell a client's stalled body
// from an upstream failure. finish must be called when the exchange ends.
func guardBody(ctx context.Context, w http.ResponseWriter, r *http.Request) (context.Context, *bodyGuard) {
	if !reqbody.Has(r) {
		return ctx, nil
	}
	g := &bodyGuard{body: r.Body, client: r.Context(), ctx: ctx, rc: http.NewResponseController(w)}
	g.idle.L = &g.mu
	g.stop = context.AfterFunc(ctx, g.expire)
	return context.WithValue(ctx, bodyGuardKey{}, g), g
}

// guardFrom returns the body guard of the exchange ctx belongs to, if any.
func guardFrom(ctx context.Context) *bodyGuard {
	g, _ := ctx.Value(bodyGuardKey{}).(*bodyGuard)
	return g
}

// Read implements io.Reader.
func (g *bodyGuard) Read(p []byte) (int, error) {
	g.mu.Lock()
	if g.ended {
		g.mu.Unlock()
		return 0, errExchangeEnded
	}
	g.inRead = true
	g.mu.Unlock()
	n, err := g.body.Read(p)
	g.mu.Lock()
	g.inRead = false
	g.done = g.done || err != nil
	g.idle.Broadcast()
	g.mu.Unlock()
	return n, err
}

// Close implements io.Closer. The server closes the client's body itself
// when the handler returns; this only passes Caddy's and the transport's
// closes through, as an unwrapped body would.
func (g *bodyGuard) Close() error { return g.body.Close() }

// expire runs when the exchange's context is done while the exchange is
// still running: a Read waiting on the client's body is then cut short.
func (g *bodyGuard) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ended = true
	if !g.inRead {
		return // the time ran out elsewhere (dial, upstream): not the client's doing
	}
	if g.client.Err() == nil && errors.Is(context.Cause(g.ctx), context.DeadlineExceeded) {
		g.stalled = true
	}
	g.interrupt(time.Now())
}

// interrupt makes the Read in progress fail at deadline; it reports whether
// it could (the Read then returns by the deadline). Called with mu held.
func (g *bodyGuard) interrupt(deadline time.Time) bool {
	if err := g.rc.SetReadDeadline(deadline); err != nil {
		// A writer without read deadlines (none of Caddy's servers, but a
		// wrapper may hide them): closing the body unblocks an HTTP/2 or
		// HTTP/3 read; an HTTP/1 Close would wait for the Read, hence go.
		go func() { _ = g.body.Close() }()
		return false
	}
	return true
}

// finish ends the guard when the exchange returns. A body not read to its
// end (the upstream answered without all of it, or the exchange failed
// first) is abandoned: Go's transport may still be in a Read of it, which is
// cut short now and waited for, so that nothing reads the client's body once
// the handler returns — Caddy then reads the byte count of the body for its
// access log (a data race otherwise), and the server the connection. Nobody
// needs the rest: an HTTP/1 answer given while the body was unfinished closes
// the connection (the gateway's exchange writer adds Connection: close:
// the rest could otherwise be read as the next request), and an HTTP/2 or
// HTTP/3 stream ends by itself.
func (g *bodyGuard) finish() {
	if g == nil {
		return
	}
	g.stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ended = true
	if g.done {
		return
	}
	if g.interrupt(time.Now()) {
		for g.inRead {
			g.idle.Wait()
		}
	}
}

// stalledBody reports whether the exchange timed out while waiting for the
// client's request body: the client's fault (408), not the upstream's.
func (g *bodyGuard) stalledBody() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stalled
}
