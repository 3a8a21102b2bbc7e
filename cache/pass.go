package cache

import (
	"hash/maphash"
	"sync/atomic"
	"time"
)

// passTTL is how long a key whose last answer could not be stored skips
// coalescing ("hit-for-miss", as Varnish calls it).
const passTTL = 30 * time.Second

// passSlots is the size of the hit-for-miss table (a power of two); a key
// shares its slot with 1/passSlots of the others, and the later one wins.
const passSlots = 1 << 15

// passKeys remembers keys whose last answer was not storable, so that
// concurrent requests for them go upstream in parallel instead of waiting
// one after another behind a leader whose answer they cannot use — the
// uncacheable API endpoint under load must cost what an uncached proxy
// costs. A later storable answer forgets the key; being wrong costs only
// one lost coalescing, never a wrong answer.
//
// It is a fixed table of atomic words, one per slot: the high 32 bits of a
// key's hash and, in the low 32 bits, the Unix second until which the key
// passes. Reading and writing it takes no lock and allocates nothing (it is
// on every uncacheable request's path); a key pushed out of its slot by
// another, or mistaken for one with the same slot and 32 bits of hash,
// costs one coalescing more or less.
type passKeys struct {
	seed  maphash.Seed
	slots [passSlots]atomic.Uint64
}

func newPassKeys() *passKeys {
	return &passKeys{seed: maphash.MakeSeed()}
}

// slot returns key's slot and the tag that identifies it there.
func (p *passKeys) slot(key string) (*atomic.Uint64, uint64) {
	h := maphash.String(p.seed, key)
	return &p.slots[h&(passSlots-1)], h &^ (1<<32 - 1)
}

// known reports whether key is remembered as not storable at now.
func (p *passKeys) known(key string, now time.Time) bool {
	s, tag := p.slot(key)
	v := s.Load()
	return v&^(1<<32-1) == tag && int32(uint32(v)-uint32(now.Unix())) > 0
}

// remember marks key as not storable until now+passTTL.
func (p *passKeys) remember(key string, now time.Time) {
	s, tag := p.slot(key)
	s.Store(tag | uint64(uint32(now.Add(passTTL).Unix())))
}

// forget drops key (its answer was stored).
func (p *passKeys) forget(key string) {
	s, tag := p.slot(key)
	if v := s.Load(); v&^(1<<32-1) == tag {
		s.CompareAndSwap(v, 0)
	}
}
