package cache

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyMain(m) }

// newClock is a fake clock for Options.Now.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

// origin is a real upstream (httptest.Server) whose handler is swappable and whose calls are counted.
type origin struct {
	srv     *httptest.Server
	calls   atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
	lastReq atomic.Pointer[http.Request]
}

// newOrigin starts an upstream answering with h; every answer gets a Date from clk (so ages follow
// the fake clock) unless h sets one.
func newOrigin(t testing.TB, clk *testutil.Clock, h http.HandlerFunc) *origin {
	o := &origin{}
	o.set(h)
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.calls.Add(1)
		o.lastReq.Store(r)
		if clk != nil {
			w.Header().Set("Date", clk.Now().UTC().Format(http.TimeFormat))
		}
		(*o.handler.Load())(w, r)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) set(h http.HandlerFunc) { o.handler.Store(&h) }

// fetch returns a Fetch backed by httputil.ReverseProxy to the origin; transport errors are returned,
// not written, as the contract asks.
func (o *origin) fetch() Fetch {
	u, _ := url.Parse(o.srv.URL)
	tr := o.srv.Client().Transport
	return func(w http.ResponseWriter, r *http.Request, _ http.ResponseWriter) error {
		var perr error
		p := &httputil.ReverseProxy{
			Rewrite:      func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
			Transport:    tr,
			ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { perr = err },
		}
		p.ServeHTTP(w, r)
		if perr != nil {
			return errors.Join(errBadGateway, perr)
		}
		return nil
	}
}

var errBadGateway = errors.New("bad gateway")

// newTestCache builds a cache with the fake clock and closes it at the end of the test.
func newTestCache(t testing.TB, clk *testutil.Clock, opts Options) *Cache {
	t.Helper()
	if clk != nil {
		opts.Now = clk.Now
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// get sends one request through the cache and returns the recorded answer.
func do(t testing.TB, c *Cache, fetch Fetch, method, target string, hdr ...string) (*httptest.ResponseRecorder, Result, error) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	res, err := c.Serve(w, r, &Route{Service: "svc", Fetch: fetch})
	return w, res, err
}

// manualRunner queues jobs until the test runs them.
type manualRunner struct {
	mu   sync.Mutex
	jobs []func(ctx context.Context)
	full bool
}

func (m *manualRunner) TrySubmit(job func(ctx context.Context)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.full {
		return false
	}
	m.jobs = append(m.jobs, job)
	return true
}

func (m *manualRunner) runAll() int {
	m.mu.Lock()
	jobs := m.jobs
	m.jobs = nil
	m.mu.Unlock()
	for _, j := range jobs {
		j(context.Background())
	}
	return len(jobs)
}

// respond returns a handler writing the given status, header pairs and body.
func respond(status int, body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Add(hdr[i], hdr[i+1])
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// store puts a prepared, keyed entry into c's local tier for its retention, as a fresh exchange would.
func (c *Cache) store(e *Entry) storeOutcome {
	return c.local.put(nil, e, c.retention(e), c.local.mark())
}

// purgeLocal purges c's local tier only, as another instance's published purge does.
func (c *Cache) purgeLocal(service, prefix string) int {
	return c.local.remove(context.Background(), purgeEvent{service: service, prefix: matchForm(prefix)})
}

// shared is c's Redis tier (nil without one).
func (c *Cache) shared() *redisTier {
	if len(c.tiers) < 2 {
		return nil
	}
	return c.tiers[1].(*redisTier)
}
