package cache

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// localTier is the cache's in-process tier: entries as pointer-free blocks (block.go) in a
// byte-bounded store (store.go), the index that finds them by service, URL and tag, and the purge
// log that keeps an answer fetched before a purge from being stored after it.
type localTier struct {
	st     *store
	idx    index
	purges purgeLog
	seq    atomic.Uint64 // store sequence numbers (blockSeq)
	ended  atomic.Uint64 // puts ended (stored or not), counted after their block is visible

	// mu orders stores against removals and close: stores (index add + store put) hold it shared,
	// removals and close exclusively, so a purge never misses an entry half-way into the store and
	// nothing is stored after close. It is never held across network I/O.
	mu     sync.RWMutex
	closed atomic.Bool

	sweepStop, sweepDone chan struct{}

	stores, rejected, evictions, purged atomic.Int64

	hookPut func() // tests: called when a put has its sequence number, before its block is visible
}

// sweepInterval is how often expired entries leave the store and the index.
const sweepInterval = 5 * time.Second

func newLocalTier(maxSize int64) *localTier {
	l := &localTier{sweepStop: make(chan struct{}), sweepDone: make(chan struct{})}
	l.st = newStore(maxSize, func(h uint64, b []byte) {
		if l.idx.remove(h, blockSeq(b)) { // unless it was replaced since
			l.evictions.Add(1)
		}
	})
	go l.sweepLoop()
	return l
}

// sweepLoop removes expired entries every sweepInterval until close.
func (l *localTier) sweepLoop() {
	defer close(l.sweepDone)
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-l.sweepStop:
			return
		case now := <-t.C:
			l.st.sweep(now)
		}
	}
}

// close implements tier: it drops every entry and stops the sweeper; it is idempotent.
func (l *localTier) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed.Swap(true) {
		close(l.sweepStop)
		<-l.sweepDone
		l.st.close()
		l.idx.clear()
	}
}

// get implements tier. It does not allocate.
func (l *localTier) get(_ context.Context, h http.Header, q query, view *Entry) found {
	buf := q.key
	b, ok := l.st.get(buf) // ok: b is buf's block
	if q.varyMiss {
		if !ok || blockIsMarker(b) {
			return found{key: buf, varyMiss: true}
		}
	} else {
		if !ok {
			return found{key: buf}
		}
		if blockIsMarker(b) {
			vr := blockVary(b)
			buf = append(buf, 'V')
			for range vr.uvarint() {
				buf = appendHeaderValue(buf, vr.string(), h)
			}
			b, ok = l.st.get(buf)
			if !ok || blockIsMarker(b) {
				return found{key: buf, varyMiss: true}
			}
		}
	}
	view.view(b)
	return found{e: view, key: buf}
}

// put implements tier: the marker first (kept until replaced or evicted), then the response.
func (l *localTier) put(m, e *Entry, ttl time.Duration, mark uint64) storeOutcome {
	if m != nil {
		if res := l.putOne(m, 0, mark); res != storeAdmitted {
			return res
		}
	}
	if e.Marker {
		ttl = 0
	}
	return l.putOne(e, ttl, mark)
}

// putOne stores e (prepared, keyed) for ttl (0: until replaced or evicted), fetched by an exchange
// that began at purge-log position since; the next lookup sees it. The purge log is checked under
// mu: a removal either came before (logged, the entry is refused) or comes after (it finds the
// entry indexed).
func (l *localTier) putOne(e *Entry, ttl time.Duration, since uint64) storeOutcome {
	seq := l.seq.Add(1)
	defer l.ended.Add(1) // last: after the block is visible and mu released
	if l.hookPut != nil {
		l.hookPut()
	}
	b := encodeBlock(e, seq)
	e.cost = blockCost(b, e.tags)
	key := blockKey(b)
	kh, bh := l.st.hash(key), l.st.hash(key[:e.BaseLen])
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		return storeRefused
	}
	if l.purges.covers(e, since) {
		return storeOutdated
	}
	if !l.idx.add(e.Service, kh, bh, seq, e.Marker, e.tags) {
		return storeRefused // a newer answer for this key is being stored
	}
	res := l.commit(kh, b, e.cost, ttl)
	if res == storeAdmitted && !e.Marker {
		l.stores.Add(1)
	}
	return res
}

// commit puts block b, indexed under key hash kh, in the store; mu held shared. Stores of one key
// may run side by side (between their index add and their commit): the index and the store each
// keep the newest block (the highest seq), and a store that finds its record gone removes what it
// left in the store, so that no block stays stored without a record (served, and out of every
// purge's reach).
func (l *localTier) commit(kh uint64, b []byte, cost int64, ttl time.Duration) storeOutcome {
	seq := blockSeq(b)
	if !l.st.put(kh, b, cost, ttl) {
		if l.idx.remove(kh, seq) { // still the newest: the store could not take it
			l.st.del(kh, seq) // what it was to replace is superseded
			l.rejected.Add(1)
		}
		return storeRefused
	}
	if !l.idx.contains(kh, seq) { // evicted at once, or a newer store of the key came
		l.st.del(kh, seq) // ours, if still there
		return storeRefused
	}
	return storeAdmitted
}

// puts counts the puts ended so far. A put is counted once its block is visible, so a lookup that
// missed after reading the count can tell, by reading it again, that nothing stored since could
// have answered it: a put that was under way when the count was read is counted after.
func (l *localTier) puts() uint64 { return l.ended.Load() }

// mark implements tier: the purge log's position now.
func (l *localTier) mark() uint64 { return l.purges.seq.Load() }

// removedSince reports whether a removal after mark covers e (put would refuse it).
func (l *localTier) removedSince(e *Entry, since uint64) bool {
	if l.mark() == since {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.purges.covers(e, since)
}

// remove implements tier (Vary markers are not counted). It logs the removal first, under mu: a put
// that did not see it in the log is already indexed, and is removed here.
func (l *localTier) remove(_ context.Context, ev purgeEvent) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.purges.add(ev)
	var refs []keyRef
	switch {
	case ev.tags != nil:
		refs = l.idx.takeTags(ev.service, ev.tags)
	case ev.refs != nil:
		for _, ref := range ev.refs {
			refs = append(refs, l.idx.takeBase(ev.service, ref.base, l.st.hash(ref.base), l.st.byHash)...)
		}
	default:
		refs = l.idx.take(ev.service, ev.prefix, l.st.byHash)
	}
	n := 0
	for _, ref := range refs {
		l.st.del(ref.hash, ref.seq)
		if !ref.marker {
			n++
		}
	}
	l.purged.Add(int64(n))
	return n
}

// find returns views of the entries (Vary markers included) of service whose URL is url, with their
// tags. For the admin API.
func (l *localTier) find(service, url string) (views []Entry, tags [][]string) {
	for _, ref := range l.idx.find(service, url, l.st.byHash) {
		b, live := l.st.peek(ref.hash)
		if !live || blockSeq(b) != ref.seq {
			continue // expired, or replaced meanwhile
		}
		var e Entry
		e.view(b)
		e.cost = blockCost(b, ref.tags)
		views = append(views, e)
		tags = append(tags, ref.tags)
	}
	return views, tags
}

// stats implements tier.
func (l *localTier) stats(s *Stats) {
	s.Entries = l.idx.len()
	s.Bytes = l.st.used.Load()
	s.Stores = l.stores.Load()
	s.Rejected = l.rejected.Load()
	s.Evictions = l.evictions.Load()
	s.Purged = l.purged.Load()
}

var _ tier = (*localTier)(nil)
