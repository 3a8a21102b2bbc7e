package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
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

// get sends a traced GET and reads the body to EOF, which is when the
// transport pools the connection (and reports PutIdleConn) before returning.
func get(t *testing.T, c *ConnCounter, client *http.Client, ctx context.Context, url string) {
	t.Helper()
	req, err := http.NewRequestWithContext(c.Trace(ctx), http.MethodGet, url, nil)
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

// TestConnCounterSharedContext covers a context reused for several round
// trips (a retry loop): each new connection replaces the previous reference.
func TestConnCounterSharedContext(t *testing.T) {
	var c ConnCounter
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	client := &http.Client{Transport: countedTransport(t, &c, 2)}
	ctx := c.Trace(context.Background())
	for range 3 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wantConns(t, &c, 1, 0, 1)
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

// TestConnCounterHTTP2 uses TLS + HTTP/2, where many requests share one
// connection and the transport never reports PutIdleConn: a request's
// reference is dropped when its context ends.
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

	ctxs := make([]context.CancelFunc, 3)
	for i := range ctxs {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		req, _ := http.NewRequestWithContext(c.Trace(ctx), http.MethodGet, srv.URL, nil)
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
	wantConns(t, &c, 1, 1, 0) // one shared connection, requests not ended yet
	for _, cancel := range ctxs {
		cancel()
	}
	testutil.Eventually(t, "HTTP/2 connection to turn idle", func() bool { return c.Stats().Active == 0 })
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

func BenchmarkConnCounterTrace(b *testing.B) {
	var c ConnCounter
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Trace(ctx)
	}
}

// BenchmarkConnCounterRequestLifecycle measures what one proxied HTTP/1
// request costs the counter inside Caddy: Trace, Caddy's reverse proxy
// layering its own ClientTrace on top (httptrace composes the two with
// reflection), then the GotConn and PutIdleConn callbacks.
func BenchmarkConnCounterRequestLifecycle(b *testing.B) {
	var c ConnCounter
	a, p := net.Pipe()
	defer p.Close()
	conn, _ := c.WrapDial(func(context.Context, string, string) (net.Conn, error) { return a, nil })(context.Background(), "pipe", "x")
	defer conn.Close()
	info := httptrace.GotConnInfo{Conn: conn, Reused: true}
	for _, caddy := range []bool{false, true} {
		name := "bare"
		if caddy {
			name = "under-caddy-trace"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ctx := c.Trace(context.Background())
				if caddy {
					ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
						Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil },
					})
				}
				tr := httptrace.ContextClientTrace(ctx)
				tr.GotConn(info)
				tr.PutIdleConn(nil)
			}
		})
	}
}
