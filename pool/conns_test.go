package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// countedTransport returns a keep-alive transport whose connections c
// counts, closed when the test ends.
func countedTransport(t *testing.T, c *ConnCounter, maxIdle int) *http.Transport {
	t.Helper()
	var d net.Dialer
	tr := &http.Transport{
		DialContext:         c.WrapDial(d.DialContext),
		MaxIdleConnsPerHost: maxIdle,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// get sends a GET between Begin and End and reads the body to EOF, which is
// when the transport pools the connection.
func get(t *testing.T, c *ConnCounter, client *http.Client, ctx context.Context, url string) {
	t.Helper()
	c.Begin()
	defer c.End()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Error(err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Error(err)
	}
	resp.Body.Close()
}

func wantConns(t *testing.T, c *ConnCounter, open, active, idle int64) {
	t.Helper()
	st := c.Stats()
	if st.Open != open || st.Active != active || st.Idle != idle {
		t.Fatalf("open/active/idle = %d/%d/%d, want %d/%d/%d (%+v)",
			st.Open, st.Active, st.Idle, open, active, idle, st)
	}
}

func TestConnCounterSequentialKeepAlive(t *testing.T) {
	for _, k := range []int{1, 2, 10} {
		var c ConnCounter
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
		client := &http.Client{Transport: countedTransport(t, &c, 2)}
		for range k {
			get(t, &c, client, context.Background(), srv.URL)
		}
		wantConns(t, &c, 1, 0, 1)
		if st := c.Stats(); st.Dialed != 1 {
			t.Fatalf("k=%d: dialed %d, want 1", k, st.Dialed)
		}
		client.CloseIdleConnections()
		wantConns(t, &c, 0, 0, 0)
	}
}

func TestConnCounterConcurrent(t *testing.T) {
	for _, n := range []int{1, 3, 8} {
		var c ConnCounter
		var (
			arrived = make(chan struct{}, n)
			gate    = make(chan struct{})
		)
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-gate // every request holds its connection until all are in
			io.WriteString(w, "hello")
		})
		client := &http.Client{Transport: countedTransport(t, &c, n)}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { get(t, &c, client, context.Background(), srv.URL) })
		}
		for range n {
			<-arrived
		}
		wantConns(t, &c, int64(n), int64(n), 0)
		close(gate)
		wg.Wait()
		wantConns(t, &c, int64(n), 0, int64(n))
		client.CloseIdleConnections()
		wantConns(t, &c, 0, 0, 0)
	}
}

// TestConnCounterActiveAtMostOpen: exchanges in flight that hold no
// connection yet (waiting for a dial, or for one to come back to the pool)
// are not counted as active connections.
func TestConnCounterActiveAtMostOpen(t *testing.T) {
	var c ConnCounter
	c.Begin()
	c.Begin()
	wantConns(t, &c, 0, 0, 0)
	a, p := net.Pipe()
	defer p.Close()
	conn, err := c.WrapDial(func(context.Context, string, string) (net.Conn, error) { return a, nil })(context.Background(), "pipe", "x")
	if err != nil {
		t.Fatal(err)
	}
	wantConns(t, &c, 1, 1, 0)
	c.End()
	wantConns(t, &c, 1, 1, 0)
	c.End()
	wantConns(t, &c, 1, 0, 1)
	conn.Close()
	wantConns(t, &c, 0, 0, 0)
}

// TestConnCounterServerClose checks that a connection closed by the
// upstream (Connection: close) leaves the counts, without any idle report.
func TestConnCounterServerClose(t *testing.T) {
	var c ConnCounter
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	client := &http.Client{Transport: countedTransport(t, &c, 2)}
	for range 3 {
		get(t, &c, client, context.Background(), srv.URL)
	}
	// The transport closes such a connection itself once the body hits EOF.
	testutil.Eventually(t, "connections to close", func() bool { return c.Stats().Open == 0 })
	wantConns(t, &c, 0, 0, 0)
	if st := c.Stats(); st.Dialed != 3 {
		t.Fatalf("dialed %d, want 3", st.Dialed)
	}
}

// TestConnCounterHTTP2 uses TLS + HTTP/2, where many exchanges share one
// connection: Active stays at most Open.
func TestConnCounterHTTP2(t *testing.T) {
	var c ConnCounter
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = c.WrapDial(d.DialContext)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	for range 3 {
		c.Begin() // exchanges still in flight: their End comes below
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("proto %s, want HTTP/2", resp.Proto)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wantConns(t, &c, 1, 1, 0) // one shared connection
	for range 3 {
		c.End()
	}
	wantConns(t, &c, 1, 0, 1)
	client.CloseIdleConnections()
	testutil.Eventually(t, "HTTP/2 connection to close", func() bool { return c.Stats().Open == 0 })
}

func TestConnCounterDialErrors(t *testing.T) {
	var c ConnCounter
	errRefused := errors.New("refused")
	dial := c.WrapDial(func(context.Context, string, string) (net.Conn, error) { return nil, errRefused })
	if _, err := dial(context.Background(), "tcp", "127.0.0.1:1"); !errors.Is(err, errRefused) {
		t.Fatalf("err = %v", err)
	}
	if st := c.Stats(); st != (ConnStats{DialErrors: 1}) {
		t.Fatalf("stats = %+v", st)
	}
}

func TestConnCounterCloseCountedOnce(t *testing.T) {
	var c ConnCounter
	a, b := net.Pipe()
	defer b.Close()
	dial := c.WrapDial(func(context.Context, string, string) (net.Conn, error) { return a, nil })
	conn, err := dial(context.Background(), "pipe", "x")
	if err != nil {
		t.Fatal(err)
	}
	wantConns(t, &c, 1, 0, 1)
	conn.Close()
	conn.Close()
	wantConns(t, &c, 0, 0, 0)
	if nc, ok := conn.(interface{ NetConn() net.Conn }); !ok || nc.NetConn() != a {
		t.Fatal("NetConn does not unwrap to the dialled connection")
	}
}

func TestConnCounterWarmUp(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		maxIdle  int
		wantOpen int64
	}{
		{"none", 0, 4, 0},
		{"one", 1, 4, 1},
		{"four", 4, 4, 4},
		{"idle pool smaller than n", 4, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c ConnCounter
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			client := &http.Client{Transport: countedTransport(t, &c, tt.maxIdle)}
			if err := c.WarmUp(context.Background(), client, srv.URL+"/health", tt.n); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, "surplus connections to close", func() bool { return c.Stats().Open == tt.wantOpen })
			wantConns(t, &c, tt.wantOpen, 0, tt.wantOpen)
			if st := c.Stats(); st.Dialed != uint64(tt.n) {
				t.Fatalf("dialed %d, want %d", st.Dialed, tt.n)
			}
		})
	}
}

func TestConnCounterWarmUpError(t *testing.T) {
	var c ConnCounter
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	client := &http.Client{Transport: countedTransport(t, &c, 2)}
	if err := c.WarmUp(context.Background(), client, url, 3); err == nil {
		t.Fatal("want an error from a dead upstream")
	}
	if st := c.Stats(); st.DialErrors != 3 || st.Open != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestConnCounterBeginEndAllocateNothing: counting an exchange is on every
// proxied request's path.
func TestConnCounterBeginEndAllocateNothing(t *testing.T) {
	var c ConnCounter
	if n := testing.AllocsPerRun(100, func() { c.Begin(); c.End() }); n != 0 {
		t.Fatalf("Begin+End allocate %.0f times, want 0", n)
	}
}
