package pool

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holdAll acquires n slots, failing the test on error, and returns one
// release per slot.
func holdAll(t *testing.T, l *Limiter, n int) []func() {
	t.Helper()
	rels := make([]func(), n)
	for i := range rels {
		rel, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		rels[i] = rel
	}
	return rels
}

// queueSignal makes l report every waiter that joins its queue on the
// returned channel.
func queueSignal(l *Limiter) <-chan struct{} {
	ch := make(chan struct{}, 64)
	l.queuedHook = func() { ch <- struct{}{} }
	return ch
}

func TestLimiterImmediate(t *testing.T) {
	tests := []struct {
		name       string
		maxConns   int
		maxPending int
		hold       int   // slots taken before the probe
		wantErr    error // of the probe
		want       LimiterStats
	}{
		{"unlimited", 0, 0, 1000, nil, LimiterStats{InFlight: 1001, Admitted: 1001}},
		{"negative is unlimited", -1, 0, 10, nil, LimiterStats{InFlight: 11, Admitted: 11}},
		{"under limit", 3, 0, 2, nil, LimiterStats{InFlight: 3, Admitted: 3}},
		{"full, no pending", 2, 0, 2, ErrQueueFull, LimiterStats{InFlight: 2, Admitted: 2, Rejected: 1}},
		{"full, negative pending", 1, -5, 1, ErrQueueFull, LimiterStats{InFlight: 1, Admitted: 1, Rejected: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.maxConns, tt.maxPending, time.Second)
			rels := holdAll(t, l, tt.hold)
			rel, err := l.Acquire(context.Background())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := l.Stats(); got != tt.want {
				t.Fatalf("stats = %+v, want %+v", got, tt.want)
			}
			if err == nil {
				rels = append(rels, rel)
			}
			for _, r := range rels {
				r()
			}
			if got := l.Stats(); got.InFlight != 0 || got.Queued != 0 {
				t.Fatalf("after release: %+v", got)
			}
		})
	}
}

func TestLimiterHammer(t *testing.T) {
	const (
		maxConns   = 4
		goroutines = 32
		perG       = 300
	)
	l := NewLimiter(maxConns, goroutines, 0)
	var cur, peak atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perG {
				rel, err := l.Acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				n := cur.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				runtime.Gosched() // hold the slot across a scheduling point
				cur.Add(-1)
				rel()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p != maxConns {
		t.Errorf("peak in flight = %d, want %d", p, maxConns)
	}
	st := l.Stats()
	want := LimiterStats{Admitted: goroutines * perG}
	if st != want {
		t.Errorf("stats = %+v, want %+v", st, want)
	}
}

func TestLimiterFIFO(t *testing.T) {
	const waiters = 10
	l := NewLimiter(1, waiters, 0)
	queued := queueSignal(l)
	first := holdAll(t, l, 1)[0]

	order := make(chan int, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			rel, err := l.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			rel()
		})
		<-queued // waiter i is in the queue before i+1 starts
	}
	if q := l.Stats().Queued; q != waiters {
		t.Fatalf("queued = %d, want %d", q, waiters)
	}
	first()
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("served waiter %d, want %d", got, want)
		}
		want++
	}
	if st := l.Stats(); st.InFlight != 0 || st.Queued != 0 || st.Admitted != waiters+1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestLimiterNoBarging checks that a newcomer does not take a slot freed
// while others wait: the slot goes to the queue's head.
func TestLimiterNoBarging(t *testing.T) {
	l := NewLimiter(1, 2, 0)
	queued := queueSignal(l)
	first := holdAll(t, l, 1)[0]

	got := make(chan func(), 1)
	go func() {
		rel, err := l.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	<-queued
	first() // hands the slot to the waiter
	// The waiter owns the slot even if it has not run yet: a newcomer finds
	// no room and, the queue having room, must queue behind.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		rel, err := l.Acquire(ctx)
		if err == nil {
			rel()
		}
		done <- err
	}()
	<-queued
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("newcomer err = %v, want context.Canceled", err)
	}
	(<-got)()
	if st := l.Stats(); st.InFlight != 0 || st.Queued != 0 || st.Abandoned != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestLimiterQueueErrors(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		cancel  bool // cancel the waiter's context once it is queued
		wantErr error
		want    LimiterStats // after the probe, the holder still in flight
	}{
		{"queue timeout", 10 * time.Millisecond, false, ErrQueueTimeout, LimiterStats{InFlight: 1, Admitted: 1, TimedOut: 1}},
		{"context cancelled", 0, true, context.Canceled, LimiterStats{InFlight: 1, Admitted: 1, Abandoned: 1}},
		{"cancel beats long timeout", time.Hour, true, context.Canceled, LimiterStats{InFlight: 1, Admitted: 1, Abandoned: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(1, 1, tt.timeout)
			queued := queueSignal(l)
			hold := holdAll(t, l, 1)[0]
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := l.Acquire(ctx)
				done <- err
			}()
			<-queued
			if tt.cancel {
				cancel()
			}
			if err := <-done; !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if st := l.Stats(); st != tt.want {
				t.Fatalf("stats = %+v, want %+v", st, tt.want)
			}
			hold() // nobody left to hand over to
			if st := l.Stats(); st.InFlight != 0 || st.Queued != 0 {
				t.Fatalf("after release: %+v", st)
			}
		})
	}
}

func TestLimiterQueueFull(t *testing.T) {
	l := NewLimiter(1, 1, 0)
	queued := queueSignal(l)
	hold := holdAll(t, l, 1)[0]
	got := make(chan error, 1)
	go func() {
		rel, err := l.Acquire(context.Background())
		if err == nil {
			rel()
		}
		got <- err
	}()
	<-queued
	start := time.Now()
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("ErrQueueFull took %v; it must not wait", d)
	}
	if st := l.Stats(); st.Rejected != 1 || st.Queued != 1 {
		t.Fatalf("stats = %+v", st)
	}
	hold()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestLimiterCancelledBeforeQueueing(t *testing.T) {
	l := NewLimiter(1, 1, 0)
	hold := holdAll(t, l, 1)[0]
	defer hold()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if st := l.Stats(); st.Queued != 0 || st.Abandoned != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestLimiterDoubleRelease(t *testing.T) {
	l := NewLimiter(2, 0, 0)
	rel, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rel()
	rel()
	if st := l.Stats(); st.InFlight != 0 || st.OverReleased != 1 {
		t.Fatalf("stats = %+v", st)
	}
	// The limit still holds afterwards.
	holdAll(t, l, 2)
	if _, err := l.Acquire(context.Background()); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third acquire: %v, want ErrQueueFull", err)
	}
}

// TestLimiterStress mixes waiting, timeouts and cancellations, including
// slots handed over just as a waiter gives up, and checks that every
// request is accounted for exactly once and nothing is left in flight.
func TestLimiterStress(t *testing.T) {
	const (
		goroutines = 16
		perG       = 300
		maxConns   = 3
	)
	l := NewLimiter(maxConns, 8, 200*time.Microsecond)
	var cur atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perG {
				ctx, cancel := context.WithCancel(context.Background())
				if rand.IntN(4) == 0 {
					go cancel()
				}
				rel, err := l.Acquire(ctx)
				if err == nil {
					if n := cur.Add(1); n > maxConns {
						t.Errorf("%d in flight, limit %d", n, maxConns)
					}
					runtime.Gosched()
					cur.Add(-1)
					rel()
				}
				cancel()
			}
		})
	}
	wg.Wait()
	st := l.Stats()
	if st.InFlight != 0 || st.Queued != 0 || st.OverReleased != 0 {
		t.Fatalf("stats = %+v", st)
	}
	if total := st.Admitted + st.Rejected + st.TimedOut + st.Abandoned; total != goroutines*perG {
		t.Fatalf("accounted %d requests, want %d (%+v)", total, goroutines*perG, st)
	}
}

func TestLimiterFastPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, maxConns := range []int{0, 10} {
		l := NewLimiter(maxConns, 0, 0)
		ctx := context.Background()
		allocs := testing.AllocsPerRun(1000, func() {
			rel, _ := l.Acquire(ctx)
			rel()
		})
		if allocs != 0 {
			t.Errorf("maxConns %d: %v allocs per acquire/release, want 0", maxConns, allocs)
		}
	}
}

// BenchmarkLimiterAcquireRelease measures the uncontended fast path: the
// limit is never reached, so no request queues. Run with -cpu 1,2.
func BenchmarkLimiterAcquireRelease(b *testing.B) {
	l := NewLimiter(1<<20, 0, 0)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rel, err := l.Acquire(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			rel()
		}
	})
}

// BenchmarkLimiterContended measures the slow path: 8 goroutines per CPU
// share 2 slots, so most acquisitions queue and are handed a slot.
func BenchmarkLimiterContended(b *testing.B) {
	l := NewLimiter(2, 1<<20, 0)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rel, err := l.Acquire(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			runtime.Gosched()
			rel()
		}
	})
}
