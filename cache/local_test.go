package cache

import (
	"context"
	"sync"
	"testing"
)

// TestLocalStoresOfOneKeySideBySide: two stores of one key at once (variants storing one Vary
// marker, a copy from Redis beside a fetch) leave the index and the store agreeing on one block,
// so that a purge removes what is stored.
func TestLocalStoresOfOneKeySideBySide(t *testing.T) {
	l := newLocalTier(1 << 30)
	defer l.close()
	kh := l.st.hash([]byte(blockEntry(0).Key))
	for range 500 {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { l.putOne(blockEntry(0), 0, l.mark()) })
		}
		wg.Wait()
		if b := l.st.byHash(kh); b == nil || !l.idx.contains(kh, blockSeq(b)) {
			t.Fatal("the stored block is not the indexed one")
		}
		l.remove(context.Background(), purgeEvent{service: "svc"})
		if b := l.st.byHash(kh); b != nil || l.idx.len() != 0 || l.st.used.Load() != 0 {
			t.Fatalf("after a purge of everything: a block left %v, index %d, used %d", b != nil, l.idx.len(), l.st.used.Load())
		}
	}
}

// TestLocalInterleavedStores drives two and three stores of one key through their steps (index
// add, then commit) in the orders that once left a block stored without an index record: whatever
// the order, a purge of everything leaves the store empty.
func TestLocalInterleavedStores(t *testing.T) {
	type step struct {
		put    int  // which store
		commit bool // false: its index add
	}
	for _, tt := range []struct {
		name  string
		big   []bool // per store: larger than the store (refused)
		steps []step
	}{
		// P adds, A adds and replaces it, A is refused, then P commits: P's block must not stay.
		{"older lands last", []bool{false, true}, []step{{0, false}, {1, false}, {1, true}, {0, true}}},
		// P is stored; A and C add in turn, both are refused: P is superseded, not left unindexed.
		{"two refusals", []bool{false, true, true}, []step{{0, false}, {0, true}, {1, false}, {2, false}, {1, true}, {2, true}}},
		// A newer store lands first, the older one after it.
		{"newer first", []bool{false, false}, []step{{0, false}, {1, false}, {1, true}, {0, true}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newLocalTier(8192)
			defer l.close()
			type pending struct {
				b       []byte
				cost    int64
				kh, bh  uint64
				e       *Entry
				skipped bool
			}
			ps := make([]*pending, len(tt.big))
			for i, big := range tt.big {
				e := blockEntry(0)
				if big {
					e.Body = make([]byte, 16384)
					e.prepare(&Options{})
				}
				b := encodeBlock(e, l.seq.Add(1))
				key := blockKey(b)
				ps[i] = &pending{b: b, cost: blockCost(b, e.tags), kh: l.st.hash(key), bh: l.st.hash(key[:e.BaseLen]), e: e}
			}
			for _, s := range tt.steps {
				p := ps[s.put]
				if !s.commit {
					p.skipped = !l.idx.add(p.e.Service, p.kh, p.bh, blockSeq(p.b), false, nil)
				} else if !p.skipped {
					l.commit(p.kh, p.b, p.cost, 0)
				}
			}
			if b := l.st.byHash(ps[0].kh); b != nil && !l.idx.contains(ps[0].kh, blockSeq(b)) {
				t.Fatalf("block %d stored without its index record", blockSeq(b))
			}
			l.remove(context.Background(), purgeEvent{service: "svc"})
			if b := l.st.byHash(ps[0].kh); b != nil || l.st.used.Load() != 0 {
				t.Fatalf("after a purge of everything a block is left (%v), used %d", b != nil, l.st.used.Load())
			}
		})
	}
}

// TestLocalRefusedReplacement: an answer the store cannot take does not leave the entry it was to
// replace stored but unindexed (served, and out of every purge's reach): it is superseded.
func TestLocalRefusedReplacement(t *testing.T) {
	l := newLocalTier(4096)
	defer l.close()
	if l.putOne(blockEntry(0), 0, l.mark()) != storeAdmitted {
		t.Fatal("refused")
	}
	big := blockEntry(0)
	big.Body = make([]byte, 8192)
	big.prepare(&Options{})
	if l.putOne(big, 0, l.mark()) != storeRefused {
		t.Fatal("stored an answer larger than the store")
	}
	if b := l.st.byHash(l.st.hash([]byte(big.Key))); b != nil || l.idx.len() != 0 || l.st.used.Load() != 0 {
		t.Fatalf("the replaced entry is left: block %v, index %d, used %d", b != nil, l.idx.len(), l.st.used.Load())
	}
}
