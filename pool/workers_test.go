package pool

import (
	"context"
	"sync"
	"testing"

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
			st := w.stats()
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
	if st := w.stats(); st.Panics != 1 || st.Processed != 1 {
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
	if st := w.stats(); st.Queued != 1 || st.Dropped != 1 {
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
	if st := w.stats(); st.Dropped != 3 || st.Queued != 0 || st.Processed != 1 {
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
