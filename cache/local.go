package cache

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// localTier is the cache's in-process tier: entries as pointer-free blocks (block.go) in a
// byte-bounded ristretto cache, the index that finds them by service, URL and tag, and the purge log
// that keeps an answer fetched before a purge from being stored after it.
type localTier struct {
	rs     *ristretto.Cache[[]byte, []byte]
	idx    index
	purges purgeLog
	seq    atomic.Uint64 // store sequence numbers (blockSeq)

	// mu orders stores against removals and close: stores (index add + ristretto Set + Wait) hold it
	// shared, removals and close exclusively, so a purge never misses an entry half-way into the
	// store and nothing touches ristretto after close. It is never held across network I/O.
	mu     sync.RWMutex
	closed atomic.Bool

	stores, rejected, evictions, purged atomic.Int64
}

func newLocalTier(maxSize int64) (*localTier, error) {
	l := &localTier{}
	// ristretto wants ~10 counters per expected entry; assume 2 KiB entries on average.
	counters := min(max(maxSize/2048*10, 10_000), 20_000_000)
	rs, err := ristretto.NewCache(&ristretto.Config[[]byte, []byte]{
		NumCounters: counters,
		MaxCost:     maxSize,
		BufferItems: 64,
		// Our cost already is the entry's real size including a per-entry overhead (entryOverhead)
		// that covers ristretto's own item; adding its internal cost would count that twice.
		IgnoreInternalCost: true,
		OnEvict: func(it *ristretto.Item[[]byte]) {
			if l.unindex(it.Value) {
				l.evictions.Add(1)
			}
		},
		OnReject: func(it *ristretto.Item[[]byte]) {
			if l.unindex(it.Value) {
				l.rejected.Add(1)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: creating store: %w", err)
	}
	l.rs = rs
	return l, nil
}

// unindex drops a block that left ristretto from the index, unless it was replaced since.
func (l *localTier) unindex(b []byte) bool {
	if b == nil {
		return false
	}
	service, key, baseLen := blockRef(b)
	return l.idx.remove(service, key, baseLen, blockSeq(b))
}

// close implements tier: it drops every entry and stops ristretto's goroutines; it is idempotent.
func (l *localTier) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed.Swap(true) {
		l.rs.Close()
	}
}

// get implements tier. It does not allocate.
func (l *localTier) get(_ context.Context, h http.Header, q query, view *Entry) found {
	buf := q.key
	b, ok := l.rs.Get(buf)
	if q.varyMiss {
		if !ok || blockIsMarker(b) || !matchesKey(b, buf) {
			return found{key: buf, varyMiss: true}
		}
	} else {
		if !ok || !matchesKey(b, buf) {
			return found{key: buf}
		}
		if blockIsMarker(b) {
			vr := blockVary(b)
			buf = append(buf, 'V')
			for range vr.uvarint() {
				buf = appendHeaderValue(buf, vr.string(), h)
			}
			b, ok = l.rs.Get(buf)
			if !ok || blockIsMarker(b) || !matchesKey(b, buf) {
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
// that began at purge-log position since. It waits for ristretto to apply the write (Wait) so the very next lookup sees it: a store
// happens once per upstream exchange, which already cost a round trip, while a pending-writes map
// would cost a lock on every hit. The purge log is checked under mu: a removal either came before
// (logged, the entry is refused) or comes after (it finds the entry indexed).
func (l *localTier) putOne(e *Entry, ttl time.Duration, since uint64) storeOutcome {
	seq := l.seq.Add(1)
	b := encodeBlock(e, seq)
	e.cost = blockCost(b, e.tags)
	_, key, _ := blockRef(b)
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		return storeRefused
	}
	if l.purges.covers(e, since) {
		return storeOutdated
	}
	l.idx.add(e.Service, e.URL, e.BaseLen, keyRef{key: key, seq: seq, marker: e.Marker, tags: e.tags})
	if !l.rs.SetWithTTL(blockKey(b), b, e.cost, ttl) {
		l.idx.remove(e.Service, key, e.BaseLen, seq)
		l.rejected.Add(1)
		return storeRefused
	}
	l.rs.Wait()
	if !l.idx.contains(e.Service, key, e.BaseLen, seq) {
		return storeRefused
	}
	if !e.Marker {
		l.stores.Add(1)
	}
	return storeAdmitted
}

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
			refs = append(refs, l.idx.takeBase(ev.service, string(ref.base))...)
		}
	default:
		refs = l.idx.take(ev.service, ev.prefix)
	}
	n := 0
	for _, ref := range refs {
		if !l.closed.Load() {
			l.rs.Del([]byte(ref.key))
		}
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
	for _, ref := range l.idx.find(service, url) {
		b, ok := l.rs.Get([]byte(ref.key))
		if !ok || blockSeq(b) != ref.seq {
			continue
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
	if !l.closed.Load() {
		s.Bytes = l.rs.MaxCost() - l.rs.RemainingCost()
	}
	s.Stores = l.stores.Load()
	s.Rejected = l.rejected.Load()
	s.Evictions = l.evictions.Load()
	s.Purged = l.purged.Load()
}

var _ tier = (*localTier)(nil)
