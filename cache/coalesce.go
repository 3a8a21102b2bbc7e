package cache

import "sync"

// flight is one upstream exchange that concurrent requests for the same key wait on instead of
// making their own. The leader fills the outcome and closes done exactly once (finish); followers read
// the outcome only after done is closed.
type flight struct {
	done chan struct{}
	once sync.Once
	// stored: the answer is now in the cache, followers look it up again. err: the leader got no
	// answer at all; followers report the same error instead of hammering a failing upstream. retry:
	// the leader's exchange was given up for reasons of its own (its client left): the answer says
	// nothing about the URL, so followers join a new flight, one of them leading it.
	stored bool
	retry  bool
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
	f.end(key, fl, func() { fl.stored, fl.err = stored, err })
}

// retry ends the flight with the retry outcome (see flight.retry); like finish, only the first call
// has an effect.
func (f *flights) retry(key string, fl *flight) {
	f.end(key, fl, func() { fl.retry = true })
}

func (f *flights) end(key string, fl *flight, set func()) {
	if fl == nil {
		return
	}
	fl.once.Do(func() {
		f.mu.Lock()
		if f.m[key] == fl {
			delete(f.m, key)
		}
		f.mu.Unlock()
		set()
		close(fl.done)
	})
}
