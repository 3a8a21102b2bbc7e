package pool

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		ceiling time.Duration // delays must fall in [0, ceiling); 0: always 0
	}{
		{"zero value", Backoff{}, 3, 0},
		{"first retry", Backoff{Base: 50 * time.Millisecond, Cap: time.Second}, 0, 50 * time.Millisecond},
		{"doubles", Backoff{Base: 50 * time.Millisecond, Cap: time.Second}, 2, 200 * time.Millisecond},
		{"capped", Backoff{Base: 50 * time.Millisecond, Cap: time.Second}, 10, time.Second},
		{"huge attempt is capped, no overflow", Backoff{Base: time.Second, Cap: time.Minute}, 1000, time.Minute},
		{"no cap, huge attempt", Backoff{Base: time.Second}, 200, 1<<63 - 1},
		{"negative attempt is the first", Backoff{Base: time.Millisecond, Cap: time.Second}, -3, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var maxSeen time.Duration
			for range 2000 {
				d := tt.b.Delay(tt.attempt)
				if d < 0 || (tt.ceiling == 0 && d != 0) || (tt.ceiling > 0 && d >= tt.ceiling) {
					t.Fatalf("Delay(%d) = %v, want in [0, %v)", tt.attempt, d, tt.ceiling)
				}
				maxSeen = max(maxSeen, d)
			}
			// Full jitter: the draws spread over the range, not just its bottom.
			if tt.ceiling > 0 && maxSeen < tt.ceiling/2 {
				t.Fatalf("max of 2000 draws = %v, want >= %v", maxSeen, tt.ceiling/2)
			}
		})
	}
}

func TestIsIdempotent(t *testing.T) {
	tests := []struct {
		method string
		key    string
		want   bool
	}{
		{http.MethodGet, "", true},
		{http.MethodHead, "", true},
		{http.MethodOptions, "", true},
		{http.MethodTrace, "", true},
		{http.MethodPut, "", true},
		{http.MethodDelete, "", true},
		{http.MethodPost, "", false},
		{http.MethodPatch, "", false},
		{http.MethodPost, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
		{http.MethodPatch, "k1", true},
		{http.MethodConnect, "", false},
		{http.MethodConnect, "k1", false},
		{"PROPFIND", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+"/"+tt.key, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://gw.test/api/users/1", nil)
			if tt.key != "" {
				r.Header.Set("Idempotency-Key", tt.key)
			}
			if got := IsIdempotent(r); got != tt.want {
				t.Fatalf("IsIdempotent(%s, key %q) = %v, want %v", tt.method, tt.key, got, tt.want)
			}
		})
	}
}

func newTestBudget(ratio float64, minPerSecond int, window time.Duration) (*Budget, *testutil.Clock) {
	b := NewBudget(ratio, minPerSecond, window)
	c := testutil.NewClock(b.start)
	b.now = c.Now
	return b, c
}

// TestBudgetDownUpstream simulates an upstream that fails every request:
// each request asks for a retry, and the budget lets through about ratio of
// them plus the floor.
func TestBudgetDownUpstream(t *testing.T) {
	tests := []struct {
		name         string
		ratio        float64
		minPerSecond int
		requests     int
		spread       time.Duration // requests evenly spread over this
		wantMax      int
		wantMin      int
	}{
		// window 10s: floor = 1/s * 10s = 10 retries
		{"ratio 0.2, one window", 0.2, 1, 1000, 10 * time.Second, 200 + 10, 190},
		{"ratio 0.2, burst", 0.2, 1, 1000, 0, 200 + 10, 200},
		{"ratio 0, floor only", 0, 1, 1000, 0, 10, 10},
		// 30s of traffic = three windows: each window allows its own share.
		{"ratio 0.1, three windows", 0.1, 0, 3000, 30 * time.Second, 300 + 10, 270},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, clock := newTestBudget(tt.ratio, tt.minPerSecond, 10*time.Second)
			step := tt.spread / time.Duration(tt.requests)
			retries := 0
			for range tt.requests {
				b.Request()
				if b.TryRetry() {
					retries++
				}
				clock.Advance(step)
			}
			if retries > tt.wantMax || retries < tt.wantMin {
				t.Fatalf("%d retries for %d requests, want %d..%d", retries, tt.requests, tt.wantMin, tt.wantMax)
			}
			if st := b.stats(); st.Denied != uint64(tt.requests-retries) {
				t.Fatalf("stats = %+v, want %d denied", st, tt.requests-retries)
			}
		})
	}
}

func TestBudgetFloorAndRecovery(t *testing.T) {
	b, clock := newTestBudget(0.5, 2, 10*time.Second) // floor 20 per window
	for i := range 20 {
		if !b.TryRetry() {
			t.Fatalf("retry %d denied within the floor", i)
		}
	}
	if b.TryRetry() {
		t.Fatal("retry beyond the floor allowed with no traffic")
	}
	b.Request()
	b.Request()
	if !b.TryRetry() {
		t.Fatal("two requests at ratio 0.5 should earn one retry")
	}
	if b.TryRetry() {
		t.Fatal("budget should be spent again")
	}
	// Half a window later the old retries still count.
	clock.Advance(5 * time.Second)
	if b.TryRetry() {
		t.Fatal("retries from 5s ago should still count")
	}
	// Once the window has slid past them, the floor is available again.
	clock.Advance(5 * time.Second)
	for i := range 20 {
		if !b.TryRetry() {
			t.Fatalf("retry %d denied after the window slid", i)
		}
	}
	if st := b.stats(); st.Retries != 20 || st.Requests != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := NewBudget(0.2, 0, time.Hour) // real clock; the window outlasts the test
	const goroutines, perG = 8, 1000
	var mu sync.Mutex
	granted := 0
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			n := 0
			for range perG {
				b.Request()
				if b.TryRetry() {
					n++
				}
			}
			mu.Lock()
			granted += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if limit := goroutines * perG / 5; granted > limit {
		t.Fatalf("%d retries granted, budget %d", granted, limit)
	}
	if st := b.stats(); st.Requests != goroutines*perG || st.Retries != int64(granted) {
		t.Fatalf("stats = %+v, granted %d", st, granted)
	}
}

func BenchmarkBudgetRequest(b *testing.B) {
	bud := NewBudget(0.2, 1, 10*time.Second)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bud.Request()
		}
	})
}

func BenchmarkBackoffDelay(b *testing.B) {
	bo := Backoff{Base: 50 * time.Millisecond, Cap: 2 * time.Second}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = bo.Delay(i & 7)
			i++
		}
	})
}

func BenchmarkBudgetTryRetry(b *testing.B) {
	bud := NewBudget(0.2, 1, 10*time.Second)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bud.Request()
			bud.TryRetry()
		}
	})
}
