package handoff

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// fixture is a connection accepted by an old listener, a newer listener on
// the same address, and the client end.
type fixture struct {
	c      *conn
	newer  *listener
	client net.Conn
	idle   bool // what closedAsIdle answers: the Close comes from Shutdown for an idle connection
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	f := &fixture{client: client, idle: true}
	g := &group{changed: make(chan struct{}), closedAsIdle: func() bool { return f.idle }}
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
	if n, _ := f.c.Read(buf); n != len(s) {
		t.Fatalf("read %d of %d bytes", n, len(s))
	}
}

// answer makes the server write s.
func (f *fixture) answer(s string) {
	go func() { buf := make([]byte, 256); f.client.Read(buf) }()
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
	close(f.c.listener.done)
	f.c.Close() // Shutdown's
	if read != nil {
		if err := <-read; !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) && err != nil {
			t.Logf("pending read ended with %v", err)
		}
		f.c.Close() // the connection goroutine's own
	}
	select {
	case got := <-f.newer.conns:
		return true, string(got.(*conn).replay)
	default:
		return false, ""
	}
}

func TestConnHandsOverOnlyAnIdleConnectionClosedByShutdown(t *testing.T) {
	const req, resp = "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		name    string
		setup   func(*testing.T, *fixture)
		waiting bool // net/http waits in Read when Shutdown closes
		handed  bool
	}{
		{"idle after an answer", func(t *testing.T, f *fixture) { f.send(t, req); f.answer(resp) }, true, true},
		{"fresh connection", func(*testing.T, *fixture) {}, true, true},
		{"request read, not answered", func(t *testing.T, f *fixture) { f.send(t, req) }, true, false},
		{"only an interim answer", func(t *testing.T, f *fixture) { f.send(t, req); f.answer("HTTP/1.1 100 Continue\r\n\r\n") }, true, false},
		{"not closed by Shutdown as idle", func(t *testing.T, f *fixture) { f.send(t, req); f.answer(resp); f.idle = false }, true, false},
		{"no Read waiting (pipelined request buffered)", func(t *testing.T, f *fixture) { f.send(t, req); f.answer(resp) }, false, false},
		{"TLS", func(t *testing.T, f *fixture) { f.send(t, "\x16\x03\x01\x00"); f.answer("\x16\x03\x03") }, true, false},
		{"HTTP/2, preface in pieces", func(t *testing.T, f *fixture) {
			f.send(t, "PRI * HT")
			f.send(t, "TP/2.0\r\n\r\nSM\r\n\r\n")
			f.answer("x")
		}, true, false},
		{"POST is not HTTP/2", func(t *testing.T, f *fixture) { f.send(t, "P"); f.send(t, "OST / HTTP/1.1\r\n\r\n"); f.answer(resp) }, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.setup(t, f)
			var read <-chan error
			if tc.waiting {
				read = f.pendingRead(t)
			}
			handed, replay := f.shutdownCloses(t, read)
			if handed != tc.handed {
				t.Fatalf("handed over: %v, want %v", handed, tc.handed)
			}
			if handed && replay != "" {
				t.Fatalf("replays %q, nothing was sent", replay)
			}
		})
	}
}

// A connection handed over and still waiting for its first request when
// the next reload comes is handed over again (net/http would count it as
// new and neither close it nor answer it); with no newer config, it closes.
func TestConnWaitingForItsFirstRequestMovesOnAtTheNextReload(t *testing.T) {
	f := newFixture(t)
	server := f.c.Conn
	g := f.newer.group
	newest := &listener{group: g, conns: make(chan net.Conn, 1), done: make(chan struct{})}
	newest.serving.Store(true)
	g.listeners = append(g.listeners, newest)

	handed := &conn{Conn: server, listener: f.newer, handed: true}
	if !f.newer.wait(handed) {
		t.Fatal("not registered")
	}
	f.c = handed
	read := f.pendingRead(t)
	f.newer.Close() // releases it: its pending Read ends
	<-read
	handed.Close()
	select {
	case <-newest.conns:
	default:
		t.Fatal("not handed to the newest listener")
	}
}
