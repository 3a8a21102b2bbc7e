//go:build unix

package handoff

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
	"github.com/caddyserver/caddy/v2"
	"golang.org/x/sys/unix"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// group's accept loop and every hand-over end with the last listener.
func TestMain(m *testing.M) {
	testutil.VerifyMain(m)
}

// reuseport binds a socket the way Caddy does, so that two configs can
// listen on one address.
func reuseport(t *testing.T, addr string) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// config is one config's server on the shared address, counting the
// requests its handler ran by path.
type config struct {
	name   string
	srv    *http.Server
	ln     *listener
	served chan struct{}

	mu  sync.Mutex
	ran map[string]int

	// onState, if set, runs in the connection's goroutine at each state
	// change, as http.Server.ConnState does
	onState func(*config, http.ConnState)
	// handler, if set, runs before the usual answer
	handler func(*config, *http.Request)
}

func startConfig(t *testing.T, addr, name string, setup func(*config)) *config {
	t.Helper()
	c := &config{name: name, ran: map[string]int{}, served: make(chan struct{})}
	if setup != nil {
		setup(c)
	}
	w := &Wrapper{}
	c.ln = w.WrapListener(reuseport(t, addr)).(*listener)
	c.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.mu.Lock()
			c.ran[r.URL.Path]++
			c.mu.Unlock()
			if c.handler != nil {
				c.handler(c, r)
			}
			io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Config", c.name)
			io.WriteString(w, c.name)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if c.onState != nil {
				c.onState(c, st)
			}
		},
	}
	go func() {
		defer close(c.served)
		c.srv.Serve(c.ln)
	}()
	t.Cleanup(func() {
		c.srv.Close()
		<-c.served
	})
	return c
}

func (c *config) runs(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ran[path]
}

// shutDown starts the server's Shutdown, as a reload does, and returns
// once it has closed the listener: net/http is then shutting down.
func (c *config) shutDown() {
	go c.srv.Shutdown(context.Background())
	<-c.ln.done
}

// client is a raw keep-alive connection.
type client struct {
	t      *testing.T
	conn   net.Conn
	br     *bufio.Reader
	http10 bool // HTTP/1.0 with "Connection: keep-alive" (as ab -k sends)
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// post sends a POST and returns which config answered it, and whether the
// answer closed the connection; an error means the request was lost.
func (c *client) post(path string) (string, bool, error) {
	c.t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := "data for " + path
	proto := "HTTP/1.1"
	if c.http10 {
		proto = "HTTP/1.0\r\nConnection: keep-alive"
	}
	if _, err := fmt.Fprintf(c.conn, "POST %s %s\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, proto, len(body), body); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "", false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if string(b) != resp.Header.Get("X-Config") {
		c.t.Fatalf("answer %q from config %q", b, resp.Header.Get("X-Config"))
	}
	return string(b), resp.Close, nil
}

// The instants at which net/http's Shutdown closes a keep-alive connection
// that a plain HTTP/1.1 client will use again, each made certain with a
// ConnState hook or the handler: whatever the old server did not run, the
// new one runs, on the same connection, and no request runs twice.
func TestGroupHandsOverWhatShutdownWouldDrop(t *testing.T) {
	for _, tc := range []struct {
		name string
		// arm makes the old config shut down at the instant under test,
		// during the exchange of /second
		arm func(old *config, once *sync.Once)
		// who answers /second, and who runs /second and /third how often
		answers                        string
		oldSecond, newSecond, newThird int
	}{
		{
			// the answer went out before the shutdown began, so without
			// "Connection: close"; net/http then closes the connection
			name: "answered, then shutdown",
			arm: func(old *config, once *sync.Once) {
				old.onState = func(c *config, st http.ConnState) {
					if st == http.StateIdle && c.runs("/second") == 1 {
						once.Do(c.shutDown)
					}
				}
			},
			answers: "old", oldSecond: 1, newThird: 1,
		},
		{
			// the request read as the shutdown begins: net/http drops it
			// without running the handler
			name: "request read as the shutdown begins",
			arm: func(old *config, once *sync.Once) {
				old.onState = func(c *config, st http.ConnState) {
					if st == http.StateActive && c.runs("/first") == 1 {
						once.Do(c.shutDown)
					}
				}
			},
			answers: "new", newSecond: 1, newThird: 1,
		},
		{
			// the handler ran and died before answering: the request is
			// not run again elsewhere, it is lost (as with stock Caddy)
			name: "handler ran, then panicked",
			arm: func(old *config, once *sync.Once) {
				old.handler = func(c *config, r *http.Request) {
					if r.URL.Path == "/second" {
						once.Do(c.shutDown)
						panic(http.ErrAbortHandler)
					}
				}
			},
			oldSecond: 1,
		},
	} {
		for _, http10 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/HTTP1.0=%v", tc.name, http10), func(t *testing.T) {
				var once sync.Once
				old := startConfig(t, "127.0.0.1:0", "old", func(c *config) { tc.arm(c, &once) })
				addr := old.ln.Addr().String()
				cl := dial(t, addr)
				cl.http10 = http10
				if got, closed, err := cl.post("/first"); err != nil || got != "old" || closed {
					t.Fatalf("/first: %q, closed %v, %v", got, closed, err)
				}
				nw := startConfig(t, addr, "new", nil) // the reload

				got, closed, err := cl.post("/second")
				switch {
				case tc.answers == "" && err == nil:
					t.Fatalf("/second answered by %q: its handler ran and died", got)
				case tc.answers != "" && (err != nil || got != tc.answers || closed):
					t.Fatalf("/second: answered by %q (want %q), closed %v, %v", got, tc.answers, closed, err)
				}
				if o, n := old.runs("/second"), nw.runs("/second"); o != tc.oldSecond || n != tc.newSecond {
					t.Fatalf("/second ran %d times on the old config, %d on the new; want %d, %d", o, n, tc.oldSecond, tc.newSecond)
				}
				if tc.answers == "" {
					return
				}
				// and the connection goes on, with the new config
				if got, closed, err := cl.post("/third"); err != nil || got != "new" || closed {
					t.Fatalf("/third: %q, closed %v, %v", got, closed, err)
				}
				if n := nw.runs("/third"); n != tc.newThird {
					t.Fatalf("/third ran %d times on the new config", n)
				}
			})
		}
	}
}

// Across a reload, new connections keep being accepted: the new config's
// socket is emptied into the first one and stops listening at once.
func TestGroupKeepsOneSocket(t *testing.T) {
	old := startConfig(t, "127.0.0.1:0", "old", nil)
	addr := old.ln.Addr().String()
	startConfig(t, addr, "new", nil)
	for range 20 {
		cl := dial(t, addr)
		if got, _, err := cl.post("/x"); err != nil || got != "new" && got != "old" {
			t.Fatalf("%q, %v", got, err)
		}
	}
	old.srv.Shutdown(context.Background())
	for range 20 {
		cl := dial(t, addr)
		if got, _, err := cl.post("/y"); err != nil || got != "new" {
			t.Fatalf("after the old config stopped: %q, %v", got, err)
		}
	}
}

// The group's own socket gets every new connection: a socket another
// config binds on the address later receives none, so stopping it resets
// none (Linux: SO_ATTACH_REUSEPORT_CBPF).
func TestGroupSteersNewConnectionsToItsSocket(t *testing.T) {
	if !SteeringSupported() {
		t.Skip("this kernel does not take SO_ATTACH_REUSEPORT_CBPF: no steering")
	}
	old := startConfig(t, "127.0.0.1:0", "old", nil)
	addr := old.ln.Addr().String()
	later := reuseport(t, addr) // listening, never accepting
	defer later.Close()
	for range 64 {
		cl := dial(t, addr)
		if got, _, err := cl.post("/x"); err != nil || got != "old" {
			t.Fatalf("%q, %v", got, err)
		}
		cl.conn.Close()
	}
	_ = later.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Millisecond))
	if c, err := later.Accept(); err == nil {
		c.Close()
		t.Fatal("a new connection reached a socket bound later")
	}
}

// The wrapper takes only sockets Caddy made or inherited, never one under
// another wrapper: taken from under crypto/tls, a connection would lose
// its TLS state (r.TLS, {scheme}, X-Forwarded-Proto).
func TestTCPListenerFindsOnlyCaddysOwnSockets(t *testing.T) {
	raw := reuseport(t, "127.0.0.1:0")
	defer raw.Close()
	if tcp, _ := tcpListener(tls.NewListener(raw, &tls.Config{}), 4); tcp != nil {
		t.Fatal("found the socket under a TLS listener")
	}

	made := caddyListen(t, "tcp/127.0.0.1:0")
	if tcp, inherited := tcpListener(made, 4); tcp == nil || inherited {
		t.Fatalf("a socket Caddy made: found %v, inherited %v", tcp != nil, inherited)
	}

	file, err := raw.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	fd := caddyListen(t, fmt.Sprintf("fd/%d", file.Fd()))
	if tcp, inherited := tcpListener(fd, 4); tcp == nil || !inherited {
		t.Fatalf("an inherited socket (fd/N): found %v, inherited %v", tcp != nil, inherited)
	}
}

func caddyListen(t *testing.T, addr string) net.Listener {
	t.Helper()
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := na.Listen(context.Background(), 0, net.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.(net.Listener).Close() })
	return ln.(net.Listener)
}

// With socket activation (`bind fd/N`) every config gets another handle
// on the one inherited socket: a reload must leave it listening, and the
// group must not replace it with a socket of its own.
func TestGroupKeepsAnInheritedSocketListening(t *testing.T) {
	raw := reuseport(t, "127.0.0.1:0")
	defer raw.Close()
	file, err := raw.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	addr := raw.Addr().String()
	fdAddr := fmt.Sprintf("fd/%d", file.Fd())

	serve := func(name string) (*http.Server, chan struct{}) {
		ln := (&Wrapper{}).WrapListener(caddyListen(t, fdAddr))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Config", name)
			io.WriteString(w, name)
		})}
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(ln) }()
		return srv, done
	}
	old, oldDone := serve("old")
	nw, nwDone := serve("new") // the reload
	old.Shutdown(context.Background())
	<-oldDone
	for range 10 {
		cl := dial(t, addr)
		if got, _, err := cl.post("/x"); err != nil || got != "new" {
			t.Fatalf("after the reload: %q, %v", got, err)
		}
		cl.conn.Close()
	}
	nw.Shutdown(context.Background())
	<-nwDone
	// and the socket still listens for whoever inherits it next (systemd
	// passes it to the restarted process)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the inherited socket no longer listens: %v", err)
	}
	c.Close()
	_ = raw.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	if c, err := raw.Accept(); err != nil {
		t.Fatalf("the inherited socket no longer listens: %v", err)
	} else {
		c.Close()
	}
}
