package cache

import (
	"context"
	"sync"
	"testing"
)

// localEntry is a prepared entry of the local tier's tests: blockEntry(i), the same key for the
// same i.
func localEntry(i int) *Entry { return blockEntry(i) }

// TestLocalStoresOfOneKeySideBySide: two stores of one key at once (variants storing one Vary
// marker, a copy from Redis beside a fetch) leave the index and the store agreeing on one block,
// so that a purge removes what is stored.
func TestLocalStoresOfOneKeySideBySide(t *testing.T) {
	l := newLocalTier(1 << 30)
	defer l.close()
	kh := l.st.hash([]byte(localEntry(0).Key))
	for range 500 {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { l.putOne(localEntry(0), 0, l.mark()) })
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

// TestLocalRefusedReplacement: an answer the store cannot take does not leave the entry it was to
// replace stored but unindexed (served, and out of every purge's reach): it is superseded.
func TestLocalRefusedReplacement(t *testing.T) {
	l := newLocalTier(4096)
	defer l.close()
	if l.putOne(localEntry(0), 0, l.mark()) != storeAdmitted {
		t.Fatal("refused")
	}
	big := localEntry(0)
	big.Body = make([]byte, 8192)
	big.prepare(&Options{})
	if l.putOne(big, 0, l.mark()) != storeRefused {
		t.Fatal("stored an answer larger than the store")
	}
	if b := l.st.byHash(l.st.hash([]byte(big.Key))); b != nil || l.idx.len() != 0 || l.st.used.Load() != 0 {
		t.Fatalf("the replaced entry is left: block %v, index %d, used %d", b != nil, l.idx.len(), l.st.used.Load())
	}
}
