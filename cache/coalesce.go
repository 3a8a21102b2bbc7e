package cache

import "sync"

// flight is one upstream exchange that concurrent requests for the same key wait on instead of
// making their own. The leader fills the outcome and closes done exactly once (finish); followers read
// the outcome only after done is closed.
type flight struct {
	done chan struct{}
	once sync.Once
	// stored: the answer is now in the cache, followers look it up again. err: the leader got no
	// answer at all; followers report the same error instead of hammering a failing upstream.
	stored bool
	err    error
}

// flights is the set of exchanges in progress, by key. Its lock only guards the map: nobody holds it
// across I/O.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// join returns the flight for key and whether the caller leads it (and must call finish).
func (f *flights) join(key string) (*flight, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.m[key]; ok {
		return fl, false
	}
	if f.m == nil {
		f.m = make(map[string]*flight)
	}
	fl := &flight{done: make(chan struct{})}
	f.m[key] = fl
	return fl, true
}

// finish publishes the outcome, removes the flight so later requests start afresh, and wakes the
// followers. Only the first call has an effect, so the leader may release followers early (as soon as
// it knows the answer will not be stored) and call finish again at the end without harm.
func (f *flights) finish(key string, fl *flight, stored bool, err error) {
	if fl == nil {
		return
	}
	fl.once.Do(func() {
		f.mu.Lock()
		if f.m[key] == fl {
			delete(f.m, key)
		}
		f.mu.Unlock()
		fl.stored, fl.err = stored, err
		close(fl.done)
	})
}
