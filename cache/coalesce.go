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

	// Guarded by flights.mu: how many followers wait on the flight now, whether the leader's client
	// is gone, and how to end the leader's exchange (nil for a background refresh, which has no
	// client). An exchange nobody waits for any more ends at once: it must not hold an upstream slot.
	waiters    int
	leaderGone bool
	abort      func()
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
		fl.waiters++
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

// setAbort registers how to end the leader's exchange (see leaderLeft and leave).
func (f *flights) setAbort(fl *flight, abort func()) {
	f.mu.Lock()
	fl.abort = abort
	f.mu.Unlock()
}

// leaderLeft records that the leader's client went away. When no follower waits, the flight leaves
// the set (a later request for the key starts its own) and leaderLeft reports true: the caller ends
// the exchange at once. Otherwise it goes on for the followers, and the last of them to leave ends it.
func (f *flights) leaderLeft(key string, fl *flight) (abandoned bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl.leaderGone = true
	if fl.waiters > 0 {
		return false
	}
	if f.m[key] == fl {
		delete(f.m, key)
	}
	return true
}

// leave records that a follower stopped waiting (its context ended). The last follower to leave a
// flight whose leader's client is gone ends the exchange: nobody is left to use its answer.
func (f *flights) leave(key string, fl *flight) {
	f.mu.Lock()
	fl.waiters--
	var abort func()
	if fl.waiters == 0 && fl.leaderGone {
		if f.m[key] == fl {
			delete(f.m, key)
		}
		abort = fl.abort
	}
	f.mu.Unlock()
	if abort != nil {
		abort()
	}
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
