package handoff

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// fixture is a connection accepted by an old listener, a newer listener on
// the same address, and the client end.
type fixture struct {
	c         *conn
	newer     *listener
	client    net.Conn
	panicking bool // what the connection goroutine's own Close reports
	fromServe bool // whether the Close being made is that goroutine's
	notClosed bool // Shutdown began but has not closed the listener yet
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	f := &fixture{client: client}
	g := &group{changed: make(chan struct{}), serveClosing: func() (bool, bool) { return f.fromServe, f.panicking && f.fromServe }}
	old := &listener{group: g, conns: make(chan net.Conn, 1), done: make(chan struct{})}
	f.newer = &listener{group: g, conns: make(chan net.Conn, 1), done: make(chan struct{})}
	f.newer.serving.Store(true)
	g.listeners = []*listener{old, f.newer}
	f.c = &conn{Conn: server, listener: old}
	return f
}

// send makes the server read what the client sends.
func (f *fixture) send(t *testing.T, s string) {
	t.Helper()
	go f.client.Write([]byte(s))
	buf := make([]byte, len(s))
	for got := 0; got < len(s); {
		n, err := f.c.Read(buf[got:])
		if err != nil {
			t.Fatalf("read %d of %d bytes: %v", got, len(s), err)
		}
		got += n
	}
}

// answer makes the server write s.
func (f *fixture) answer(s string) {
	go func() {
		buf := make([]byte, len(s))
		for got := 0; got < len(s); {
			n, err := f.client.Read(buf[got:])
			if err != nil {
				return
			}
			got += n
		}
	}()
	f.c.Write([]byte(s))
}

// pendingRead starts a server Read (net/http waiting for the next request)
// and returns once it waits.
func (f *fixture) pendingRead(t *testing.T) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := f.c.Read(make([]byte, 4096))
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ; {
		f.c.mu.Lock()
		reading := f.c.reading
		f.c.mu.Unlock()
		if reading > 0 {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatal("the Read never started")
		}
		time.Sleep(time.Millisecond)
	}
}

// shutdownCloses plays net/http's Shutdown closing the connection, then
// the connection's own goroutine closing it once its Read ended, and
// reports whether it was handed over (and with what).
func (f *fixture) shutdownCloses(t *testing.T, read <-chan error) (handed bool, replay string) {
	t.Helper()
	if !f.notClosed {
		close(f.c.listener.done)
	}
	f.c.Close() // Shutdown's
	if read != nil {
		if err := <-read; !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) && err != nil {
			t.Logf("pending read ended with %v", err)
		}
	}
	f.fromServe = true
	f.c.Close() // the connection goroutine's own
	select {
	case got := <-f.newer.conns:
		return true, string(got.(*conn).replay)
	default:
		return false, ""
	}
}

func TestConnHandsOverOnlyBetweenRequests(t *testing.T) {
	const (
		get   = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		ok    = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		post  = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
		chunk = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
	)
	for _, tc := range []struct {
		name      string
		setup     func(*testing.T, *fixture)
		waiting   bool   // net/http waits in Read when Shutdown closes
		panicking bool   // the goroutine's Close comes as its handler panics
		stopping  bool   // no newer config: Caddy stops
		notClosed bool   // Shutdown began, the listener not closed yet
		replay    string // what the new server reads first, when handed over
		handed    bool
	}{
		{name: "idle after an answer", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok) }, waiting: true, handed: true},
		{name: "fresh connection", setup: func(*testing.T, *fixture) {}, waiting: true, handed: true},
		{name: "next request partly read", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok); f.send(t, "POST /a HT") },
			waiting: true, handed: true, replay: "POST /a HT"},
		{name: "request read, net/http drops it", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok); f.send(t, post) },
			handed: true, replay: post},
		{name: "request read, net/http drops it before its listener closes", setup: func(t *testing.T, f *fixture) { f.send(t, post) },
			notClosed: true, handed: true, replay: post},
		{name: "answered, connection closed before its listener", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok) },
			notClosed: true, handed: true},
		{name: "request read, its handler panicked", setup: func(t *testing.T, f *fixture) { f.send(t, post) }, panicking: true},
		{name: "request answered in part", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok[:20]) }},
		{name: "only an interim answer", setup: func(t *testing.T, f *fixture) { f.send(t, post); f.answer("HTTP/1.1 100 Continue\r\n\r\n") }},
		{name: "answer said Connection: close", setup: func(t *testing.T, f *fixture) {
			f.send(t, get)
			f.answer("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		}, waiting: true},
		{name: "request saying Connection: close, dropped", setup: func(t *testing.T, f *fixture) { f.send(t, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n") },
			handed: true, replay: "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"},
		{name: "answer ends with the connection", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer("HTTP/1.1 200 OK\r\n\r\nok") }, waiting: true},
		{name: "two requests read, one answered (pipelining)", setup: func(t *testing.T, f *fixture) { f.send(t, get+post); f.answer(ok) },
			handed: true, replay: post},
		{name: "three read, one answered, the second begun", setup: func(t *testing.T, f *fixture) {
			f.send(t, get+post+get)
			f.answer(ok)
			f.answer("HTTP/1.1 200 OK\r\n")
		}},
		{name: "answered before its body was read", setup: func(t *testing.T, f *fixture) { f.send(t, post[:len(post)-2]); f.answer(ok) }, waiting: true},
		{name: "answered, then its body read", setup: func(t *testing.T, f *fixture) { f.send(t, post[:len(post)-2]); f.answer(ok); f.send(t, "lo") },
			waiting: true, handed: true},
		{name: "chunked request with trailer, chunked answer", setup: func(t *testing.T, f *fixture) {
			f.send(t, chunk)
			f.answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		}, waiting: true, handed: true},
		{name: "HEAD answer with a Content-Length", setup: func(t *testing.T, f *fixture) {
			f.send(t, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
			f.answer("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
		}, waiting: true, handed: true},
		{name: "304 with a Content-Length", setup: func(t *testing.T, f *fixture) {
			f.send(t, get)
			f.answer("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")
		}, waiting: true, handed: true},
		{name: "103 then the answer", setup: func(t *testing.T, f *fixture) {
			f.send(t, get)
			f.answer("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok)
		}, waiting: true, handed: true},
		{name: "upgraded", setup: func(t *testing.T, f *fixture) {
			f.send(t, "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			f.answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
		}, waiting: true},
		{name: "hijacked", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok); f.c.SetDeadline(time.Time{}) }, waiting: true},
		{name: "TLS", setup: func(t *testing.T, f *fixture) { f.send(t, "\x16\x03\x01\x00") }, waiting: true},
		{name: "HTTP/2 preface", setup: func(t *testing.T, f *fixture) { f.send(t, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") }, waiting: true},
		{name: "HTTP/1.0", setup: func(t *testing.T, f *fixture) {
			f.send(t, "GET / HTTP/1.0\r\n\r\n")
			f.answer("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}, waiting: true},
		{name: "HTTP/1.0 keep-alive", setup: func(t *testing.T, f *fixture) {
			f.send(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			f.answer("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
		}, waiting: true, handed: true},
		{name: "HTTP/1.0 keep-alive refused", setup: func(t *testing.T, f *fixture) {
			f.send(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			f.answer("HTTP/1.0 200 OK\r\n\r\nok")
		}, waiting: true},
		{name: "HTTP/1.0 chunked (net/http ignores it)", setup: func(t *testing.T, f *fixture) {
			f.send(t, "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		}},
		{name: "bare LF", setup: func(t *testing.T, f *fixture) { f.send(t, "GET / HTTP/1.1\nHost: x\n\n"); f.answer(ok) }, waiting: true},
		{name: "Content-Length and Transfer-Encoding", setup: func(t *testing.T, f *fixture) {
			f.send(t, "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
			f.answer(ok)
		}, waiting: true},
		{name: "request too big to keep, dropped", setup: func(t *testing.T, f *fixture) {
			f.send(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n"+strings.Repeat("x", 40000))
		}},
		{name: "stopping, not reloading", setup: func(t *testing.T, f *fixture) { f.send(t, get); f.answer(ok) }, waiting: true, stopping: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.panicking, f.notClosed = tc.panicking, tc.notClosed
			if tc.stopping {
				close(f.newer.done)
			}
			tc.setup(t, f)
			var read <-chan error
			if tc.waiting {
				read = f.pendingRead(t)
			}
			handed, replay := f.shutdownCloses(t, read)
			if handed != tc.handed {
				t.Fatalf("handed over: %v, want %v", handed, tc.handed)
			}
			if replay != tc.replay {
				t.Fatalf("replays %q, want %q", replay, tc.replay)
			}
		})
	}
}

// A connection given to a server that has not read a whole request head
// when that server shuts down (a reload, or a stop) moves on at once —
// with what it read of the head — or closes: net/http counts it as new and
// would leave it alone for 5 s, then drop the request.
func TestConnWithoutARequestHeadMovesOnAtTheNextReload(t *testing.T) {
	for _, tc := range []struct {
		name, read string
		stays      bool // not HTTP/1 the framer follows: left to its server
	}{
		{"nothing read", "", false},
		{"part of a head read (slow client)", "GET /slow HT", false},
		{"TLS (its exchange may be in flight)", "\x16\x03\x01\x00\x05hello", true},
		{"PROXY protocol line", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			server := f.c.Conn
			g := f.newer.group
			newest := &listener{group: g, conns: make(chan net.Conn, 1), done: make(chan struct{})}
			newest.serving.Store(true)
			g.listeners = append(g.listeners, newest)

			given := &conn{Conn: server, listener: f.newer, waiting: true}
			if !f.newer.wait(given) {
				t.Fatal("not registered")
			}
			f.c = given
			if tc.read != "" {
				f.send(t, tc.read)
			}
			if tc.stays {
				f.newer.Close()
				// its server goes on with it: an answer still goes out
				f.answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				given.mu.Lock()
				released := given.released
				given.mu.Unlock()
				if released {
					t.Fatal("released mid-exchange")
				}
				return
			}
			read := f.pendingRead(t)
			f.newer.Close() // releases it: its pending Read ends
			<-read
			f.fromServe = true
			given.Close()
			select {
			case got := <-newest.conns:
				if replay := string(got.(*conn).replay); replay != tc.read {
					t.Fatalf("replays %q, want %q", replay, tc.read)
				}
			default:
				t.Fatal("not handed to the newest listener")
			}
		})
	}
}
