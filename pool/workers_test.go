package pool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestWorkersRunJobs(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name           string
		workers, queue int
		jobs           int
	}{
		{"one worker", 1, 100, 100},
		{"several workers", 4, 100, 100},
		{"zero workers means one", 0, 10, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWorkers(tt.name, tt.workers, tt.queue, nil)
			var wg sync.WaitGroup
			wg.Add(tt.jobs)
			for i := range tt.jobs {
				if !w.TrySubmit(func(context.Context) { wg.Done() }) {
					t.Fatalf("job %d dropped", i)
				}
			}
			wg.Wait()
			w.Close()
			st := w.Stats()
			if st.Processed != uint64(tt.jobs) || st.Dropped != 0 || st.Workers != 0 {
				t.Fatalf("stats = %+v", st)
			}
		})
	}
}

func TestWorkersPanicIsContained(t *testing.T) {
	defer goleak.VerifyNone(t)
	core, logs := observer.New(zapcore.ErrorLevel)
	w := NewWorkers("revalidate", 1, 4, zap.New(core))
	defer w.Close()

	done := make(chan struct{})
	w.TrySubmit(func(context.Context) { panic("boom") })
	w.TrySubmit(func(context.Context) { close(done) }) // same, only worker
	<-done

	entries := logs.FilterMessage("background job panicked").All()
	if len(entries) != 1 {
		t.Fatalf("got %d panic log entries, want 1", len(entries))
	}
	fields := entries[0].ContextMap()
	if fields["pool"] != "revalidate" || fields["panic"] != "boom" {
		t.Errorf("log fields = %v", fields)
	}
	if s, _ := fields["stack"].(string); s == "" {
		t.Error("no stack in the log entry")
	}
	w.Close()
	if st := w.Stats(); st.Panics != 1 || st.Processed != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestWorkersDropWhenFull(t *testing.T) {
	defer goleak.VerifyNone(t)
	w := NewWorkers("probe", 1, 1, nil)
	started := make(chan struct{})
	var sawCancel bool
	w.TrySubmit(func(ctx context.Context) {
		close(started)
		<-ctx.Done() // busy until Close
		sawCancel = true
	})
	<-started
	if !w.TrySubmit(func(context.Context) {}) {
		t.Fatal("second job should fit in the queue")
	}
	if w.TrySubmit(func(context.Context) {}) {
		t.Fatal("third job should be dropped: worker busy, queue full")
	}
	if st := w.Stats(); st.Queued != 1 || st.Dropped != 1 {
		t.Fatalf("stats = %+v", st)
	}
	w.Close()
	if !sawCancel {
		t.Fatal("running job did not see its context cancelled")
	}
	if w.TrySubmit(func(context.Context) {}) {
		t.Fatal("submit after Close succeeded")
	}
	// dropped: the full-queue one, the queued one at Close, the late one
	if st := w.Stats(); st.Dropped != 3 || st.Queued != 0 || st.Processed != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestWorkersCloseIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t)
	w := NewWorkers("idem", 3, 0, nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(w.Close)
	}
	wg.Wait()
	w.Close()
}

func TestWorkersSubmitRetry(t *testing.T) {
	defer goleak.VerifyNone(t)
	errDown := errors.New("upstream down")
	tests := []struct {
		name        string
		attempts    int
		failures    int // the job fails this many times, then succeeds
		wantRuns    int
		wantFailed  uint64
		wantRetries uint64
	}{
		{"succeeds first time", 3, 0, 1, 0, 0},
		{"succeeds on third", 3, 2, 3, 0, 2},
		{"gives up", 3, 5, 3, 1, 2},
		{"zero attempts runs once", 0, 5, 1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			w := NewWorkers("retry", 1, 1, zap.New(core))
			runs := 0
			finished := make(chan struct{})
			ok := w.SubmitRetry(func(context.Context) error {
				runs++
				if runs <= tt.failures {
					if runs == tt.attempts || tt.attempts == 0 {
						defer close(finished)
					}
					return errDown
				}
				defer close(finished)
				return nil
			}, tt.attempts, Backoff{Base: time.Microsecond, Cap: time.Millisecond})
			if !ok {
				t.Fatal("dropped")
			}
			<-finished
			// The job wrapper may still be counting: Close waits for it.
			w.Close()
			st := w.Stats()
			if runs != tt.wantRuns || st.Failed != tt.wantFailed || st.Retries != tt.wantRetries {
				t.Fatalf("runs = %d, stats = %+v", runs, st)
			}
			if got := logs.FilterMessage("background job failed").Len(); uint64(got) != tt.wantFailed {
				t.Fatalf("%d failure log entries, want %d", got, tt.wantFailed)
			}
		})
	}
}

// TestWorkersCloseInterruptsBackoff shows Close does not wait out a backoff.
func TestWorkersCloseInterruptsBackoff(t *testing.T) {
	defer goleak.VerifyNone(t)
	w := NewWorkers("slow", 1, 1, nil)
	failed := make(chan struct{})
	var once sync.Once
	ok := w.SubmitRetry(func(context.Context) error {
		once.Do(func() { close(failed) })
		return errors.New("nope")
	}, 5, Backoff{Base: time.Hour, Cap: time.Hour})
	if !ok {
		t.Fatal("dropped")
	}
	<-failed
	start := time.Now()
	w.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if st := w.Stats(); st.Failed != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func BenchmarkWorkersTrySubmit(b *testing.B) {
	w := NewWorkers("bench", 2, 1024, nil)
	defer w.Close()
	job := func(context.Context) {}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.TrySubmit(job)
		}
	})
}
