package cache

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// store holds the local tier's blocks (block.go) by key, bounded by the sum of their costs. It
// evicts with CLOCK (second chance): an entry read since the clock hand last passed it is spared
// one more round, the rest leave oldest-position first, as an LRU cache would evict (nginx and
// Varnish evict by LRU). A put evicts what it needs itself before it returns, so there is no
// background work per store and the next lookup sees the entry; expired entries are swept every
// few seconds (sweep) or as the hand passes them.
//
// What the garbage collector sees per entry is the block (pointer-free, not scanned) and one slot
// in a shard's slot array; the maps from key hash to slot hold no pointers. Keys are not kept: the
// block holds its key (blockKey), and get compares it, so two keys with one 64-bit hash cannot
// answer for each other (the newer block of the two replaces the older, which leaves through
// onEvict).
type store struct {
	seed   maphash.Seed
	max    int64
	used   atomic.Int64 // sum of the costs of the entries held, plus puts under way
	hand   atomic.Uint32
	closed atomic.Bool
	// onEvict is told of every block that leaves other than by del or close (evicted for room,
	// expired, or replaced by another key with the same hash), with its key's hash. It runs without
	// the store's locks.
	onEvict func(h uint64, b []byte)
	shards  [storeShards]storeShard
}

// storeShards spreads hits and stores over that many locks and maps.
const storeShards = 64

// storeShard is one lock's share of the entries, and its part of the eviction hand's round.
type storeShard struct {
	mu    sync.RWMutex
	slot  map[uint64]int32 // key hash → index in slots
	slots []storeSlot
	free  []int32 // indexes of empty slots
	hand  int
}

// storeSlot is one entry: its block and what eviction and expiry need to know without reading it.
type storeSlot struct {
	b      []byte // nil: empty
	hash   uint64
	cost   int64
	expire int64       // UnixNano; 0: never
	seen   atomic.Bool // read since the hand last passed
}

func newStore(maxCost int64, onEvict func(h uint64, b []byte)) *store {
	s := &store{seed: maphash.MakeSeed(), max: maxCost, onEvict: onEvict}
	for i := range s.shards {
		s.shards[i].slot = make(map[uint64]int32)
	}
	return s
}

func (s *store) hash(key []byte) uint64 { return maphash.Bytes(s.seed, key) }

func (s *store) shard(h uint64) *storeShard { return &s.shards[h%storeShards] }

// get returns the block stored under key, unless it expired (ok is false for another key's block
// under the same hash). It does not allocate.
func (s *store) get(key []byte) ([]byte, bool) {
	h := s.hash(key)
	sh := s.shard(h)
	sh.mu.RLock()
	i, ok := sh.slot[h]
	if !ok {
		sh.mu.RUnlock()
		return nil, false
	}
	sl := &sh.slots[i]
	b, expire := sl.b, sl.expire
	if !sl.seen.Load() {
		sl.seen.Store(true)
	}
	sh.mu.RUnlock()
	if expire != 0 && time.Now().UnixNano() >= expire {
		return nil, false
	}
	return b, matchesKey(b, key)
}

// put stores b under its key (blockKey), whose hash is h, for ttl (0: until evicted or replaced), at
// cost. It reports false when the entry cannot fit (larger than the store, or nothing left to
// evict), or when the store holds a newer block under h (a higher store sequence number: stores of
// one key ran side by side).
func (s *store) put(h uint64, b []byte, cost int64, ttl time.Duration) bool {
	if cost > s.max || s.closed.Load() {
		return false
	}
	if s.used.Add(cost) > s.max && !s.evict() {
		s.used.Add(-cost)
		return false
	}
	expire := expiry(time.Now().UnixNano(), ttl)
	sh := s.shard(h)
	sh.mu.Lock()
	var old []byte
	if i, ok := sh.slot[h]; ok {
		sl := &sh.slots[i]
		if blockSeq(sl.b) > blockSeq(b) {
			sh.mu.Unlock()
			s.used.Add(-cost)
			return false
		}
		old = sl.b
		s.used.Add(-sl.cost)
		sl.b, sl.cost, sl.expire = b, cost, expire
		sl.seen.Store(true)
	} else {
		sh.add(h, b, cost, expire)
	}
	sh.mu.Unlock()
	if old != nil && !matchesKey(old, blockKey(b)) {
		s.onEvict(h, old) // another key with the same hash
	}
	return true
}

// expiry is the UnixNano time ttl after now: 0 (never) for no ttl, and for one that ends past what
// UnixNano holds (the year 2262: an Expires of 2286 is fresh for centuries, not expired).
func expiry(now int64, ttl time.Duration) int64 {
	if ttl <= 0 || int64(ttl) > math.MaxInt64-now {
		return 0
	}
	return now + int64(ttl)
}

// add puts a new slot in the shard (mu held). A new entry counts as seen: it is spared once.
func (sh *storeShard) add(h uint64, b []byte, cost, expire int64) {
	var i int32
	if n := len(sh.free); n > 0 {
		i, sh.free = sh.free[n-1], sh.free[:n-1]
	} else {
		sh.slots = append(sh.slots, storeSlot{})
		i = int32(len(sh.slots) - 1)
	}
	sl := &sh.slots[i]
	sl.b, sl.hash, sl.cost, sl.expire = b, h, cost, expire
	sl.seen.Store(true)
	sh.slot[h] = i
}

// drop empties slot i (mu held) and returns its block.
func (s *store) drop(sh *storeShard, i int32) []byte {
	sl := &sh.slots[i]
	b := sl.b
	delete(sh.slot, sl.hash)
	s.used.Add(-sl.cost)
	*sl = storeSlot{}
	sh.free = append(sh.free, i)
	return b
}

// evict removes entries until the store is within its bound. The hand goes round all entries,
// shard after shard and slot after slot: it removes the first entry not seen since it last passed
// (or expired) and clears the mark of those it passes, so a seen entry outlives unseen ones
// (CLOCK). After a whole round without one (readers marked every entry again behind the hand), it
// removes the next entry whatever its mark. It reports false when it found nothing to remove in
// two more rounds: the store is empty (of entries that are not being put right now).
func (s *store) evict() bool {
	now := time.Now().UnixNano()
	for ends := 0; s.used.Load() > s.max; {
		if ends > 3*storeShards {
			return false
		}
		at := s.hand.Load()
		sh := &s.shards[at%storeShards]
		sh.mu.Lock()
		h, b := s.evictOne(sh, now, ends > storeShards)
		sh.mu.Unlock()
		if b == nil {
			s.hand.CompareAndSwap(at, at+1) // the shard's end: on to the next one
			ends++
			continue
		}
		ends = 0
		s.onEvict(h, b)
	}
	return true
}

// evictOne removes the shard's next entry from its hand on that is unseen or expired (any entry, when
// force), clearing the marks it passes, and returns it with its key's hash; mu held. Nil when the hand
// reached the shard's end (it starts over next time).
func (s *store) evictOne(sh *storeShard, now int64, force bool) (uint64, []byte) {
	for sh.hand < len(sh.slots) {
		i := sh.hand
		sh.hand++
		sl := &sh.slots[i]
		if sl.b == nil {
			continue
		}
		if !force && sl.seen.Load() && (sl.expire == 0 || now < sl.expire) {
			sl.seen.Store(false)
			continue
		}
		h := sl.hash // before drop clears the slot
		return h, s.drop(sh, int32(i))
	}
	sh.hand = 0
	return 0, nil
}

// byHash returns the block stored under the key hash h, expired or not (nil when there is none). It
// does not count as a read for eviction.
func (s *store) byHash(h uint64) []byte {
	b, _ := s.peek(h)
	return b
}

// peek returns the block stored under the key hash h and whether it is still unexpired, without
// counting a read for eviction.
func (s *store) peek(h uint64) (b []byte, live bool) {
	sh := s.shard(h)
	sh.mu.RLock()
	i, ok := sh.slot[h]
	var expire int64
	if ok {
		b, expire = sh.slots[i].b, sh.slots[i].expire
	}
	sh.mu.RUnlock()
	return b, b != nil && (expire == 0 || time.Now().UnixNano() < expire)
}

// del removes the block stored under the key hash h unless it is newer than store sequence number
// seq (a later store of the key put it there).
func (s *store) del(h, seq uint64) {
	sh := s.shard(h)
	sh.mu.Lock()
	if i, ok := sh.slot[h]; ok && blockSeq(sh.slots[i].b) <= seq {
		s.drop(sh, i)
	}
	sh.mu.Unlock()
}

// sweep removes the entries expired at now.
func (s *store) sweep(now time.Time) {
	t := now.UnixNano()
	type expired struct {
		h uint64
		b []byte
	}
	var gone []expired
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for j := range sh.slots {
			if sl := &sh.slots[j]; sl.b != nil && sl.expire != 0 && t >= sl.expire {
				h := sl.hash // before drop clears the slot
				gone = append(gone, expired{h, s.drop(sh, int32(j))})
			}
		}
		sh.mu.Unlock()
		for _, e := range gone {
			s.onEvict(e.h, e.b)
		}
		gone = gone[:0]
	}
}

// close drops every entry (onEvict is not called) and refuses puts from now on.
func (s *store) close() {
	s.closed.Store(true)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.slot, sh.slots, sh.free = map[uint64]int32{}, nil, nil
		sh.mu.Unlock()
	}
	s.used.Store(0)
}
