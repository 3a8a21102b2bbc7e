package pool

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// workerStats is a snapshot of a [Workers] pool, for tests. Counters are
// totals since the pool was created.
type workerStats struct {
	// Workers is the number of worker goroutines (0 once closed).
	Workers int `json:"workers"`
	// Queued is the number of jobs waiting for a worker right now.
	Queued int `json:"queued"`
	// Processed counts jobs that ran to the end without panicking.
	Processed uint64 `json:"processed"`
	// Dropped counts jobs refused by TrySubmit (queue full or pool closed)
	// plus jobs still queued when the pool closed.
	Dropped uint64 `json:"dropped"`
	// Panics counts jobs that panicked; each was recovered and logged.
	Panics uint64 `json:"panics"`
}

// Workers runs background jobs (cache revalidation, health probes, warm-up)
// on a fixed number of goroutines fed by a bounded queue.
//
// Why a pool and not `go job()`: a burst of stale cache hits must not turn
// into a burst of goroutines and upstream requests. Submission never blocks
// the request path; when the queue is full the job is dropped and counted,
// which is the right trade for work that is only an optimisation.
//
// Every job gets the pool's context, cancelled by Close (tie Close to the
// module's Cleanup), so no job outlives the config that started it.
type Workers struct {
	name   string
	n      int
	jobs   chan func(context.Context)
	ctx    context.Context
	cancel context.CancelFunc
	logger *zap.Logger
	wg     sync.WaitGroup

	mu     sync.RWMutex // guards closed against TrySubmit racing Close
	closed bool

	processed atomic.Uint64
	dropped   atomic.Uint64
	panics    atomic.Uint64
}

// NewWorkers starts a pool named name (used in logs) with `workers`
// goroutines (at least 1) and room for `queue` waiting jobs (0: a job is
// accepted only when a worker is idle). A nil logger discards logs.
func NewWorkers(name string, workers, queue int, logger *zap.Logger) *Workers {
	if workers < 1 {
		workers = 1
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Workers{
		name:   name,
		n:      workers,
		jobs:   make(chan func(context.Context), max(queue, 0)),
		ctx:    ctx,
		cancel: cancel,
		logger: logger.With(zap.String("pool", name)),
	}
	w.wg.Add(workers)
	for range workers {
		go w.work()
	}
	return w
}

func (w *Workers) work() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case job := <-w.jobs:
			if w.ctx.Err() != nil {
				// select picks at random among ready cases; after Close, do
				// not start queued jobs.
				w.dropped.Add(1)
				return
			}
			w.run(job)
		}
	}
}

// run executes one job, turning a panic into a log line and a counter so one
// bad job never takes the process down.
func (w *Workers) run(job func(context.Context)) {
	defer func() {
		if v := recover(); v != nil {
			w.panics.Add(1)
			w.logger.Error("background job panicked",
				zap.Any("panic", v),
				zap.ByteString("stack", debug.Stack()))
		}
	}()
	job(w.ctx)
	w.processed.Add(1)
}

// TrySubmit queues job without blocking. It returns false, and counts a
// drop, when the queue is full or the pool is closed: background work is
// best effort and must never hold up a request.
func (w *Workers) TrySubmit(job func(ctx context.Context)) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped.Add(1)
		return false
	}
	select {
	case w.jobs <- job:
		return true
	default:
		w.dropped.Add(1)
		return false
	}
}

// stats returns a snapshot of the pool's counters.
func (w *Workers) stats() workerStats {
	w.mu.RLock()
	n := w.n
	if w.closed {
		n = 0
	}
	w.mu.RUnlock()
	return workerStats{
		Workers:   n,
		Queued:    len(w.jobs),
		Processed: w.processed.Load(),
		Dropped:   w.dropped.Load(),
		Panics:    w.panics.Load(),
	}
}

// Close cancels the context passed to running jobs, waits for every worker
// to return, and drops (counting them) the jobs still queued. It is
// idempotent and safe to call concurrently; later submissions are refused.
// Jobs must honour their context for Close to return promptly.
func (w *Workers) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.wg.Wait() // a concurrent Close may still be waiting; match its guarantee
		return
	}
	w.closed = true
	w.mu.Unlock()

	w.cancel()
	w.wg.Wait()
	for {
		select {
		case <-w.jobs:
			w.dropped.Add(1)
		default:
			return
		}
	}
}
