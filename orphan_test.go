package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// orphanGateway starts a gateway whose service "slow" admits one request at a time (max_conns 1, no
// queue) in front of an upstream that holds /slow until released or until the gateway ends the
// exchange (reported on cancelled), and answers anything else at once. Answers are cacheable, so GETs
// lead flights.
func orphanGateway(t *testing.T) (in *instance, release, cancelled chan struct{}, calls *atomic.Int64) {
	release = make(chan struct{})
	cancelled = make(chan struct{}, 4)
	calls = new(atomic.Int64)
	t.Cleanup(func() { close(release) })
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		if r.URL.Path == "/slow" {
			calls.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
				cancelled <- struct{}{}
				return
			case <-time.After(4 * time.Second):
			}
		}
		_, _ = io.WriteString(w, "answer of "+r.URL.Path)
	})
	in = startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service slow %s {
			max_conns 1
			timeout 10s
		}
		cache
	}`, up.URL))
	return in, release, cancelled, calls
}

// getCtx sends a GET with ctx to the gateway; the error is returned, not fatal.
func getCtx(in *instance, ctx context.Context, path string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.url(path), nil)
	resp, err := in.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestOrphanedLeaderFreesItsSlot (#17.4): a client that gives up on a slow cacheable GET nobody else
// waits for ends the upstream exchange at once and frees its max_conns slot: the next request is
// served, not shed with a 503 until the slow answer comes or the timeout passes.
func TestOrphanedLeaderFreesItsSlot(t *testing.T) {
	in, _, cancelled, _ := orphanGateway(t)
	ctx, giveUp := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, _, err := getCtx(in, ctx, "/api/slow/slow"); errc <- err }()
	testutil.Eventually(t, "the slow request holds the slot", func() bool { f, _ := poolsOf(t, in, "slow"); return f == 1 })
	giveUp()
	if err := <-errc; err == nil {
		t.Fatal("the client's request succeeded after it gave up")
	}
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second): // the upstream answers by itself after 4 s
		t.Fatal("the orphaned exchange went on: the upstream request was not cancelled")
	}
	testutil.Eventually(t, "the slot is free", func() bool { f, _ := poolsOf(t, in, "slow"); return f == 0 })
	resp, body := in.get("/api/slow/other")
	if resp.StatusCode != http.StatusOK || string(body) != "answer of /other" {
		t.Fatalf("next request: %d %s", resp.StatusCode, body)
	}
}

// TestOrphanedLeaderGoesOnForFollowers (#17.4): when another request waits on the same fetch, the
// leader's client leaving does not end it; the follower gets the answer, the upstream sees one
// request, and the slot is freed when it ends.
func TestOrphanedLeaderGoesOnForFollowers(t *testing.T) {
	in, release, cancelled, calls := orphanGateway(t)
	ctx, giveUp := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, _, err := getCtx(in, ctx, "/api/slow/slow"); errc <- err }()
	testutil.Eventually(t, "the slow request holds the slot", func() bool { f, _ := poolsOf(t, in, "slow"); return f == 1 })
	type result struct {
		code int
		body string
		err  error
	}
	follower := make(chan result, 1)
	go func() {
		code, body, err := getCtx(in, context.Background(), "/api/slow/slow")
		follower <- result{code, body, err}
	}()
	testutil.Eventually(t, "a follower waits on the flight", func() bool {
		_, b := in.adminDo("GET", "/gateway/stats")
		return strings.Contains(string(b), `"coalesced":1`)
	})
	giveUp()
	<-errc
	testutil.Eventually(t, "the gateway sees the leader's client leave", func() bool {
		return strings.Contains(in.logs(), "the exchange goes on for its followers")
	})
	if f, _ := poolsOf(t, in, "slow"); f != 1 {
		t.Fatalf("in flight = %d after the leader left, want 1 (the exchange goes on)", f)
	}
	select {
	case <-cancelled:
		t.Fatal("the exchange was cancelled while a follower waited")
	default:
	}
	release <- struct{}{}
	r := <-follower
	if r.err != nil || r.code != http.StatusOK || r.body != "answer of /slow" {
		t.Fatalf("follower: %d %q %v", r.code, r.body, r.err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("upstream saw %d requests for /slow, want 1", n)
	}
	testutil.Eventually(t, "the slot is free", func() bool { f, _ := poolsOf(t, in, "slow"); return f == 0 })
}
