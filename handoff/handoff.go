// Package handoff is a Caddy listener wrapper that makes config reloads
// lose no requests on plain HTTP/1.1 connections.
//
// A Caddy reload starts the new config's servers on their own sockets
// (SO_REUSEPORT) and then shuts the old servers down. Three things lose
// requests at that instant, with stock Caddy as with any handler:
//
//   - Closing the old listening socket resets the connections still queued
//     in its accept backlog: the kernel spreads new connections over all
//     the sockets bound to the port while they are open.
//   - net/http's Shutdown closes every idle keep-alive connection. A client
//     whose next request is already on the wire gets a reset.
//   - A connection goroutine that finishes an answer, or reads a request,
//     once Shutdown began closes the connection without running the next
//     handler, although its last answer may have promised to keep the
//     connection open.
//
// The wrapper addresses all three. Each address gets one socket of its own
// for as long as any config listens there; on Linux its SO_REUSEPORT group
// steers every new connection to it (steeredSocket), and the socket each
// later config binds is emptied into it and stops listening in the same
// instant, so no socket with a backlog is closed during a reload. A group
// accept loop gives each connection to the newest config's server. Each
// connection follows the HTTP/1.1 framing of what its server reads and
// writes (framer); when an old server closes one between requests, or with
// requests read that net/http dropped unanswered, the socket goes to the
// newest server with those requests' bytes replayed first, and that server
// reads them as if the connection were new. Nothing changes while no
// reload is running.
package handoff

import (
	"errors"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Wrapper{})
}

// Wrapper is the caddy.listeners.gateway_handoff module. It holds no
// configuration: listeners on the same address find each other through a
// usage pool that outlives any one config.
type Wrapper struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Wrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.gateway_handoff",
		New: func() caddy.Module { return new(Wrapper) },
	}
}

// Provision keeps the config's logger.
func (w *Wrapper) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	return nil
}

// UnmarshalCaddyfile accepts the bare wrapper name:
//
//	listener_wrappers {
//		gateway_handoff
//		tls
//	}
func (w *Wrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // wrapper name
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("gateway_handoff takes no arguments")
	}
	return nil
}

// groups holds one group per listening address, shared by the listeners
// of every config that listens there. It is a usage pool: a group lives
// exactly as long as some config listens on its address.
var groups = caddy.NewUsagePool()

// WrapListener wraps a TCP listener as Caddy makes it. Anything else — a
// listener that already terminates TLS (the wrapper was placed after
// `tls`), one wrapped by another listener wrapper first, a unix socket, or
// a listener wrapped here already — is returned as it is.
func (w *Wrapper) WrapListener(ln net.Listener) net.Listener {
	if _, ok := ln.(*listener); ok {
		return ln
	}
	tcp, inherited := tcpListener(ln, 4)
	if tcp == nil {
		if w.logger != nil {
			w.logger.Debug("not a TCP listener: reloads are not handed off",
				zap.String("address", ln.Addr().String()))
		}
		return ln
	}
	key := ln.Addr().Network() + "/" + ln.Addr().String()
	var (
		g      *group
		loaded bool
		l      = &listener{addr: ln.Addr(), key: key, conns: make(chan net.Conn), done: make(chan struct{})}
	)
	for {
		val, found, _ := groups.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newGroup(ln, tcp, inherited, w.logger), nil
		})
		g, loaded = val.(*group), found
		l.group = g
		if g.add(l) {
			break
		}
		// the group's socket closed just now (the last config using it
		// stopped) and is on its way out of the pool: try again
		_, _ = groups.Delete(key)
		runtime.Gosched()
	}
	queued := g.takeQueued()
	switch {
	case loaded && inherited:
		// another handle on the one inherited socket, which keeps
		// listening: nothing to empty
		_ = ln.Close()
	case loaded:
		// an older config's socket serves this address: empty this one
		// into the group (the older server takes what it held) and close it
		// before its backlog can grow
		queued = append(queued, drain(tcp)...)
		_ = ln.Close()
	}
	if len(queued) > 0 {
		go func() {
			for _, c := range queued {
				g.give(c, nil, nil)
			}
		}()
	}
	return l
}

// tcpListener finds the *net.TCPListener inside ln, and whether Caddy
// inherited that socket (`bind fd/N`, socket activation) rather than made
// it. Caddy wraps the sockets it makes in a struct of its own that embeds
// net.Listener and keeps the listener's key ("tcp/:443", "fd/3"); the
// search follows only such structs (package caddy), never another
// wrapper — crypto/tls's listener embeds one too, and a connection taken
// from under TLS would lose it.
func tcpListener(ln net.Listener, depth int) (tcp *net.TCPListener, inherited bool) {
	for ; ln != nil && depth > 0; depth-- {
		if tcp, ok := ln.(*net.TCPListener); ok {
			return tcp, inherited
		}
		v := reflect.ValueOf(ln)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct || v.Type().PkgPath() != caddyPackage {
			return nil, false
		}
		if key := v.FieldByName("lnKey"); key.IsValid() && key.Kind() == reflect.String &&
			strings.HasPrefix(key.String(), "fd") {
			inherited = true
		}
		f := v.FieldByName("Listener")
		if !f.IsValid() || !f.CanInterface() {
			return nil, false
		}
		inner, ok := f.Interface().(net.Listener)
		if !ok {
			return nil, false
		}
		ln = inner
	}
	return nil, false
}

// caddyPackage is the package of the structs Caddy wraps its sockets in.
var caddyPackage = reflect.TypeOf(caddy.Context{}).PkgPath()

// group is the socket of one address and every config's listener on it,
// oldest first. Its accept loop runs until the last listener closes.
type group struct {
	socket net.Listener // the group's own (steeredSocket), or the first config's
	logger *zap.Logger
	queued []net.Conn // what the first config's socket held when it was replaced

	mu        sync.Mutex
	listeners []*listener
	closed    bool          // the socket is closed; the group takes no listener
	changed   chan struct{} // closed and replaced when a listener starts or stops serving

	serveClosing func() (serve, panicking bool) // where a connection's Close comes from
}

func newGroup(ln net.Listener, tcp *net.TCPListener, inherited bool, logger *zap.Logger) *group {
	g := &group{socket: ln, logger: logger, changed: make(chan struct{}), serveClosing: serveClosing}
	if inherited {
		// an inherited socket is not this process's to replace: it
		// serves the group as it is
	} else if own, queued, err := steeredSocket(tcp); err == nil {
		g.socket, g.queued = own, queued
		_ = ln.Close() // emptied, no longer listening
	} else if logger != nil {
		logger.Debug("new connections are not steered to one socket: a reload may reset one",
			zap.String("address", ln.Addr().String()), zap.Error(err))
	}
	go g.acceptLoop()
	return g
}

// takeQueued returns, once, the connections the first config's socket
// held when the group replaced it.
func (g *group) takeQueued() []net.Conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.queued
	g.queued = nil
	return q
}

// add appends l, or reports false if the group has already closed.
func (g *group) add(l *listener) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.listeners = append(g.listeners, l)
	return true
}

// notify wakes the gives waiting for a listener to serve. Callers hold mu.
func (g *group) notify() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// serving records that l's server has started accepting.
func (g *group) serving(l *listener) {
	if l.serving.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !l.serving.Swap(true) {
		g.notify()
	}
}

// hasSuccessor reports whether a listener newer than or beside l can take
// over its connections.
func (g *group) hasSuccessor(l *listener) bool {
	to, wait := g.newest(l)
	return to != nil || wait != nil
}

// hasNewer reports whether a config newer than l's listens here: l's
// server is being replaced, even if its Shutdown has not closed l yet.
func (g *group) hasNewer(l *listener) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.listeners) - 1; i >= 0 && g.listeners[i] != l; i-- {
		if !g.listeners[i].isClosing() {
			return true
		}
	}
	return false
}

// remove takes l out; when it was the last one the socket is closed.
func (g *group) remove(l *listener) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.listeners = slices.DeleteFunc(g.listeners, func(other *listener) bool { return other == l })
	g.notify()
	if len(g.listeners) == 0 && !g.closed {
		g.closed = true
		_ = g.socket.Close()
	}
}

// newest is the newest listener other than skip whose server accepts
// connections. With none, wait is closed when that may have changed, or nil
// when no listener is left that could (Caddy is stopping, not reloading).
func (g *group) newest(skip *listener) (to *listener, wait <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pending := false
	for i := len(g.listeners) - 1; i >= 0; i-- {
		other := g.listeners[i]
		if other == skip || other.isClosing() {
			continue
		}
		if other.serving.Load() {
			return other, nil
		}
		pending = true
	}
	if pending {
		return nil, g.changed
	}
	return nil, nil
}

// acceptLoop gives every connection the socket accepts to the newest
// config's server. Temporary errors back off as net/http's own loop does.
func (g *group) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := g.socket.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			if g.logger != nil {
				g.logger.Debug("accept", zap.Error(err), zap.Duration("retry_in", backoff))
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		g.give(c, nil, nil)
	}
}

// give hands a raw connection, and the bytes already read from it, to the
// newest serving listener other than from. While a newer config is still
// starting, its older one takes it; with none left it is closed.
func (g *group) give(c net.Conn, unread []byte, from *listener) {
	for {
		to, wait := g.newest(from)
		if to == nil {
			if wait == nil {
				_ = c.Close()
				return
			}
			<-wait
			continue
		}
		hc := &conn{Conn: c, listener: to, replay: unread, waiting: true}
		if !to.wait(hc) {
			continue // it closed meanwhile
		}
		select {
		case to.conns <- hc:
			return
		case <-to.done:
			// it closed meanwhile: try the next one
		}
	}
}

// Destruct is called when no config uses the address any more; the
// socket closed with the last listener.
func (*group) Destruct() error { return nil }

// listener is one config's listener on an address.
type listener struct {
	addr  net.Addr
	group *group
	key   string
	conns chan net.Conn // from the group, to this config's server
	done  chan struct{} // closed by Close

	serving atomic.Bool // its server called Accept

	closeOnce sync.Once

	mu      sync.Mutex
	waiting map[*conn]struct{} // given to its server, no request head read yet
}

// wait registers a connection until its first request head is read,
// or reports false if the listener is closing.
func (l *listener) wait(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosing() {
		return false
	}
	if l.waiting == nil {
		l.waiting = make(map[*conn]struct{})
	}
	l.waiting[c] = struct{}{}
	return true
}

func (l *listener) forget(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.waiting, c)
}

// Accept returns the next connection the group gives this listener.
func (l *listener) Accept() (net.Conn, error) {
	l.group.serving(l)
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops this config's server from accepting. The socket stays open
// while a newer config listens on it.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.done)
		waiting := make([]*conn, 0, len(l.waiting))
		for c := range l.waiting {
			waiting = append(waiting, c)
		}
		l.mu.Unlock()
		// connections given to this server whose first request head is not
		// read in full: net/http counts them as new, so its Shutdown would
		// leave them alone for 5 s, and drop a request read meanwhile
		for _, c := range waiting {
			c.releaseIfWaiting()
		}
		// out of the pool first, so that a config starting now makes a new
		// group rather than finding this one closed
		_, _ = groups.Delete(l.key)
		l.group.remove(l)
	})
	return nil
}

// Addr is the address of the socket.
func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) isClosing() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Wrapper)(nil)
	_ caddy.ListenerWrapper = (*Wrapper)(nil)
	_ caddyfile.Unmarshaler = (*Wrapper)(nil)
)
