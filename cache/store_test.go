package cache

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// testBlocks returns n blocks of typical entries (blockEntry), keys distinct.
func testBlocks(n int) [][]byte {
	bs := make([][]byte, n)
	for i := range bs {
		bs[i] = encodeBlock(blockEntry(i), uint64(i+1))
	}
	return bs
}

// putBlock puts b under its key.
func putBlock(s *store, b []byte, cost int64, ttl time.Duration) bool {
	return s.put(s.hash(blockKey(b)), b, cost, ttl)
}

// recordEvictions returns a store of maxCost and the slice its onEvict appends to; onEvict must be
// told the hash of each block's key.
func recordEvictions(t *testing.T, maxCost int64) (*store, *[][]byte) {
	var mu sync.Mutex
	var gone [][]byte
	var s *store
	s = newStore(maxCost, func(h uint64, b []byte) {
		if h != s.hash(blockKey(b)) {
			t.Errorf("evicted block %d reported with another key's hash", blockSeq(b))
		}
		mu.Lock()
		gone = append(gone, b)
		mu.Unlock()
	})
	return s, &gone
}

// TestStoreBoundAndSecondChance: the store never holds more than its bound, each eviction is
// reported once, and entries read since the hand last passed them outlive the unread ones.
func TestStoreBoundAndSecondChance(t *testing.T) {
	bs := testBlocks(20)
	const cost = 1000
	s, gone := recordEvictions(t, 10*cost)
	for _, b := range bs[:10] {
		if !putBlock(s, b, cost, 0) {
			t.Fatal("refused within the bound")
		}
	}
	if len(*gone) != 0 || s.used.Load() != 10*cost {
		t.Fatalf("evicted %d, used %d before the bound was reached", len(*gone), s.used.Load())
	}
	// New entries count as seen: the first eviction clears every mark and removes one entry.
	putBlock(s, bs[10], cost, 0)
	if len(*gone) != 1 {
		t.Fatalf("%d evictions for one put into a full store", len(*gone))
	}
	first := blockSeq((*gone)[0]) - 1 // its index in bs
	// Read the survivors among the first five; the unread survivors of the next five go first.
	var read, unread []int
	for i := range 10 {
		switch {
		case uint64(i) == first:
		case i < 5:
			if _, ok := s.get(blockKey(bs[i])); !ok {
				t.Fatalf("entry %d missing", i)
			}
			read = append(read, i)
		default:
			unread = append(unread, i)
		}
	}
	for k := range unread {
		if !putBlock(s, bs[11+k], cost, 0) {
			t.Fatal("refused with entries to evict")
		}
		if s.used.Load() > s.max {
			t.Fatalf("used %d over the bound %d", s.used.Load(), s.max)
		}
	}
	for _, i := range read {
		if _, ok := s.get(blockKey(bs[i])); !ok {
			t.Errorf("entry %d, read since the hand passed, was evicted before an unread one", i)
		}
	}
	for _, i := range unread {
		if _, ok := s.get(blockKey(bs[i])); ok {
			t.Errorf("unread entry %d outlived the read ones", i)
		}
	}
	seen := map[uint64]bool{}
	for _, b := range *gone {
		if seen[blockSeq(b)] {
			t.Errorf("entry %d reported evicted twice", blockSeq(b))
		}
		seen[blockSeq(b)] = true
	}
	if len(*gone) != 1+len(unread) {
		t.Errorf("%d evictions, want %d", len(*gone), 1+len(unread))
	}
}

// TestStoreRefusesWhatCannotFit: an entry larger than the store is refused without touching what
// is stored.
func TestStoreRefusesWhatCannotFit(t *testing.T) {
	bs := testBlocks(2)
	s, gone := recordEvictions(t, 1000)
	putBlock(s, bs[0], 600, 0)
	if putBlock(s, bs[1], 1001, 0) {
		t.Fatal("stored an entry larger than the store")
	}
	if _, ok := s.get(blockKey(bs[0])); !ok || len(*gone) != 0 || s.used.Load() != 600 {
		t.Fatalf("a refused put changed the store: used %d, evicted %d", s.used.Load(), len(*gone))
	}
}

// TestStoreReplaceAndDelete: a put of a stored key replaces its block and cost (no eviction
// reported); del removes the block under a key hash unless it is newer than the sequence number
// given, and nothing under another hash.
func TestStoreReplaceAndDelete(t *testing.T) {
	bs := testBlocks(2)
	s, gone := recordEvictions(t, 10000)
	putBlock(s, bs[0], 500, 0)
	again := encodeBlock(blockEntry(0), 99)
	putBlock(s, again, 700, 0)
	if b, ok := s.get(blockKey(bs[0])); !ok || blockSeq(b) != 99 || s.used.Load() != 700 || len(*gone) != 0 {
		t.Fatalf("replace: seq %d, used %d, evictions %d", blockSeq(b), s.used.Load(), len(*gone))
	}
	putBlock(s, bs[1], 300, 0)
	s.del(s.hash(blockKey(bs[1])), 1) // bs[1] is 2: newer, it stays
	s.del(s.hash(blockKey(bs[0])), 99)
	s.del(s.hash(blockKey(bs[0])), 99) // twice: nothing more leaves
	if _, ok := s.get(blockKey(bs[0])); ok {
		t.Fatal("deleted entry still found")
	}
	if _, ok := s.get(blockKey(bs[1])); !ok || s.used.Load() != 300 {
		t.Fatalf("del removed more than its key: used %d", s.used.Load())
	}
}

// TestStoreExpiry: an expired entry is not found, and the sweep removes it and reports it, leaving
// the entries without a TTL and those still fresh.
func TestStoreExpiry(t *testing.T) {
	bs := testBlocks(3)
	s, gone := recordEvictions(t, 10000)
	putBlock(s, bs[0], 100, 0)
	putBlock(s, bs[1], 100, time.Hour)
	putBlock(s, bs[2], 100, time.Minute)
	// bs[2] expired a second ago (the store reads the real clock)
	hash := s.hash(blockKey(bs[2]))
	sh := s.shard(hash)
	sh.mu.Lock()
	sh.slots[sh.slot[hash]].expire = time.Now().Add(-time.Second).UnixNano()
	sh.mu.Unlock()
	if _, ok := s.get(blockKey(bs[2])); ok {
		t.Fatal("expired entry found")
	}
	s.sweep(time.Now())
	if len(*gone) != 1 || blockSeq((*gone)[0]) != 3 || s.used.Load() != 200 {
		t.Fatalf("sweep removed %d entries, used %d; want entry 3 only", len(*gone), s.used.Load())
	}
	s.sweep(time.Now().Add(2 * time.Hour))
	if _, ok := s.get(blockKey(bs[0])); !ok || len(*gone) != 2 || s.used.Load() != 100 {
		t.Fatalf("after the hour: evicted %d, used %d; want the entry without TTL kept", len(*gone), s.used.Load())
	}
}

// TestStoreFarExpiry: a TTL that ends past what UnixNano holds (the year 2262) keeps the entry, as
// one without expiry, instead of wrapping around to a time long past.
func TestStoreFarExpiry(t *testing.T) {
	bs := testBlocks(1)
	s, _ := recordEvictions(t, 10000)
	putBlock(s, bs[0], 100, 250*365*24*time.Hour)
	if _, ok := s.get(blockKey(bs[0])); !ok {
		t.Fatal("an entry fresh for 250 years is not found")
	}
	now := time.Now().UnixNano()
	for _, c := range []struct {
		ttl  time.Duration
		want int64
	}{{0, 0}, {-time.Second, 0}, {time.Second, now + int64(time.Second)}, {math.MaxInt64, 0}, {250 * 365 * 24 * time.Hour, 0}} {
		if got := expiry(now, c.ttl); got != c.want {
			t.Errorf("expiry(now, %v) = %d, want %d", c.ttl, got, c.want)
		}
	}
}

// TestStoreConcurrent: puts, gets and deletes from many goroutines keep the accounting exact (run
// it with -race).
func TestStoreConcurrent(t *testing.T) {
	bs := testBlocks(400)
	s, _ := recordEvictions(t, 100*1000)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				b := bs[(i*7+g*13)%len(bs)]
				switch i % 5 {
				case 0:
					s.del(s.hash(blockKey(b)), blockSeq(b))
				case 1, 2:
					s.get(blockKey(b))
				default:
					putBlock(s, b, 1000, 0)
				}
			}
		})
	}
	wg.Wait()
	var sum int64
	for i := range s.shards {
		for j := range s.shards[i].slots {
			sum += s.shards[i].slots[j].cost
		}
	}
	if used := s.used.Load(); used != sum || used > s.max {
		t.Fatalf("used %d, slots hold %d, bound %d", used, sum, s.max)
	}
}

// TestStoreEvictsUnderReads: readers that mark every entry again and again do not make a full store
// refuse new entries (the hand takes an entry whatever its mark after a whole round without one).
func TestStoreEvictsUnderReads(t *testing.T) {
	bs := testBlocks(12)
	s, _ := recordEvictions(t, 8*1000)
	stop := testutil.Repeat(4, func() bool {
		for _, b := range bs {
			s.get(blockKey(b))
		}
		return true
	})
	refused := 0
	for i := range 1000 {
		if !putBlock(s, bs[i%len(bs)], 1000, 0) {
			refused++
		}
	}
	stop()
	if refused > 0 {
		t.Fatalf("%d of 1000 puts refused by a full store whose entries are being read", refused)
	}
}

// TestStoreKeepsTheNewerBlock: a put of a key the store holds a newer block of (a higher store
// sequence number: two stores of one key ran side by side) is refused, and costs nothing.
func TestStoreKeepsTheNewerBlock(t *testing.T) {
	s, _ := recordEvictions(t, 10000)
	newer, older := encodeBlock(blockEntry(0), 2), encodeBlock(blockEntry(0), 1)
	putBlock(s, newer, 500, 0)
	if putBlock(s, older, 700, 0) {
		t.Fatal("an older block replaced a newer one")
	}
	if b, ok := s.get(blockKey(newer)); !ok || blockSeq(b) != 2 || s.used.Load() != 500 {
		t.Fatalf("store holds seq %d, used %d", blockSeq(b), s.used.Load())
	}
}
