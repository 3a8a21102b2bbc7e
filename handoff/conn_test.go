package handoff

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// newPair returns a connection accepted by an old listener that is closing
// while a newer one serves, and the client end of it.
func newPair(t *testing.T) (old *conn, newer *listener, client net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	g := &group{changed: make(chan struct{})}
	oldL := &listener{group: g, conns: make(chan net.Conn, 1), done: make(chan struct{})}
	newer = &listener{group: g, conns: make(chan net.Conn, 1), done: make(chan struct{})}
	newer.serving.Store(true)
	g.listeners = []*listener{oldL, newer}
	return &conn{Conn: server, listener: oldL}, newer, client
}

// The hand-over decision, step by step as net/http drives a connection.
// A connection is handed over only between two requests, with exactly the
// bytes of the next request the old server did not act on.
func TestConnHandsOverOnlyBetweenRequests(t *testing.T) {
	type step func(c *conn, client net.Conn)
	read := func(n int) step { // the server reads n bytes the client sent
		return func(c *conn, client net.Conn) {
			go client.Write(bytes.Repeat([]byte("R"), n))
			buf := make([]byte, n)
			if got, _ := c.Read(buf); got != n {
				panic("short read")
			}
		}
	}
	backgroundByte := func(c *conn, client net.Conn) { // net/http's 1-byte background read
		go client.Write([]byte("G"))
		c.Read(make([]byte, 1))
	}
	write := func(c *conn, client net.Conn) {
		go func() { buf := make([]byte, 64); client.Read(buf) }()
		c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	}
	deadline := func(c *conn, _ net.Conn) { c.SetReadDeadline(time.Time{}) }
	closing := func(c *conn, _ net.Conn) { close(c.listener.done) }

	for _, tc := range []struct {
		name   string
		steps  []step
		handed bool
		replay string
	}{
		{"idle after an answer", []step{read(10), write, deadline, closing}, true, ""},
		{"fresh connection, nothing read", []step{deadline, closing}, true, ""},
		{"request read, not answered", []step{read(10), closing}, false, ""},
		{"next request partly read", []step{read(10), write, deadline, read(3), closing}, false, ""},
		{"answer under way, no deadline change", []step{read(10), write, closing}, false, ""},
		{"listener still open", []step{read(10), write, deadline}, false, ""},
		{"first byte caught by the background read", []step{read(10), write, backgroundByte, closing}, true, "G"},
		{"background byte, then the server writes again", []step{read(10), write, backgroundByte, write, closing}, false, ""},
		{"HTTP/2 prior knowledge", []step{func(c *conn, client net.Conn) {
			go client.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			c.Read(make([]byte, 64))
		}, write, deadline, closing}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, newer, client := newPair(t)
			for _, s := range tc.steps {
				s(c, client)
			}
			c.Close()
			select {
			case got := <-newer.conns:
				if !tc.handed {
					t.Fatal("handed over; want closed")
				}
				if replay := string(got.(*conn).replay); replay != tc.replay {
					t.Fatalf("replays %q, want %q", replay, tc.replay)
				}
			default:
				if tc.handed {
					t.Fatal("closed; want handed over")
				}
			}
		})
	}
}

// Shutdown closes an idle connection while its goroutine waits in Read:
// the wait ends with a timeout, bytes arriving then are kept from the old
// server, and the goroutine's own Close hands them over.
func TestConnReleasedWhileReading(t *testing.T) {
	c, newer, _ := newPair(t)
	c.wrote() // an answer went out
	c.SetReadDeadline(time.Time{})

	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 64))
		readErr <- err
	}()
	for { // wait until the Read is pending
		c.mu.Lock()
		reading := c.reading
		c.mu.Unlock()
		if reading > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(c.listener.done)
	if err := c.Close(); err != nil { // Shutdown's close
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pending Read ended with %v, want a timeout", err)
	}
	c.Close() // the connection goroutine's own close
	select {
	case <-newer.conns:
	default:
		t.Fatal("not handed over")
	}
}
