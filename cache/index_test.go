package cache

import (
	"reflect"
	"slices"
	"strconv"
	"testing"
)

// TestIndexHoldsNoPointers: the index's per-entry records (and the maps holding them) carry no
// pointer, so a full cache's index costs the garbage collector nothing to scan. A field that brings
// one back fails here.
func TestIndexHoldsNoPointers(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[keyRecord](), reflect.TypeFor[baseChain](), reflect.TypeFor[storeSlot]()} {
		for i := range typ.NumField() {
			f := typ.Field(i)
			switch f.Type.Kind() {
			case reflect.Uint64, reflect.Uint32, reflect.Int32, reflect.Int64, reflect.Bool:
			case reflect.Slice:
				if typ == reflect.TypeFor[storeSlot]() && f.Name == "b" && f.Type.Elem().Kind() == reflect.Uint8 {
					continue // the block itself: one pointer to pointer-free memory
				}
				t.Errorf("%s.%s is a %s: it holds a pointer", typ.Name(), f.Name, f.Type)
			case reflect.Struct: // atomic.Bool
				if f.Type.Size() > 4 {
					t.Errorf("%s.%s is a %s", typ.Name(), f.Name, f.Type)
				}
			default:
				t.Errorf("%s.%s is a %s: it may hold a pointer", typ.Name(), f.Name, f.Type)
			}
		}
	}
}

// indexFixture stores blocks for keys under bases in a real store, so the index reads URLs and base
// keys from them as it does in the local tier.
type indexFixture struct {
	t   *testing.T
	st  *store
	x   index
	seq uint64
}

// put indexes and stores a key: url's base, plus variant (the key's own part), with tags.
func (f *indexFixture) put(service, url, variant string, tags ...string) (kh uint64, seq uint64) {
	return f.putKey(service, url, variant, false, tags)
}

// putKey is put, for a Vary marker when marker is set.
func (f *indexFixture) putKey(service, url, variant string, marker bool, tags []string) (kh uint64, seq uint64) {
	e := blockEntry(0)
	e.Service, e.URL = service, url
	base := appendBaseKey(nil, "example.com", service, url, "")
	e.BaseLen = len(base)
	e.Key = string(base) + variant
	f.seq++
	b := encodeBlock(e, f.seq)
	kh, bh := f.st.hash(blockKey(b)), f.st.hash(base)
	f.x.add(service, kh, bh, f.seq, marker, tags)
	if !f.st.put(kh, b, 1000, 0) {
		f.t.Fatal("store refused")
	}
	return kh, f.seq
}

func (f *indexFixture) base(service, url string) ([]byte, uint64) {
	b := appendBaseKey(nil, "example.com", service, url, "")
	return b, f.st.hash(b)
}

func hashes(refs []keyRef) []uint64 {
	out := make([]uint64, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.hash)
	}
	slices.Sort(out)
	return out
}

func sorted(hs ...uint64) []uint64 { slices.Sort(hs); return hs }

// TestIndexChains: the keys of one URL stay chained through removals from the middle, the head and
// the tail; replacing a key keeps one record, an older one never replaces a newer one; each take
// removes exactly what it names.
func TestIndexChains(t *testing.T) {
	f := &indexFixture{t: t, st: newStore(1<<30, func(uint64, []byte) {})}
	a1, _ := f.put("svc", "/a", "#1")
	a2, s2 := f.put("svc", "/a", "#2")
	a3, _ := f.put("svc", "/a", "#3")
	a4, _ := f.put("svc", "/a", "#4")
	b1, _ := f.put("svc", "/a/b", "#1")
	o1, _ := f.put("other", "/a", "#1")
	if f.x.len() != 6 {
		t.Fatalf("len %d, want 6", f.x.len())
	}
	if !f.x.remove(a2, s2) || f.x.remove(a2, s2) || !f.x.contains(a3, 3) {
		t.Fatal("remove from the middle of a chain")
	}
	if _, s4 := f.put("svc", "/a", "#4"); f.x.len() != 5 || !f.x.contains(a4, s4) || f.x.contains(a4, 4) {
		t.Fatal("a replaced key is not one record with the new sequence number")
	}
	if f.x.remove(a1, 99) {
		t.Fatal("removed with a stale sequence number")
	}
	base, bh := f.base("svc", "/a")
	if f.x.add("svc", a4, bh, 4, false, nil) || !f.x.contains(a4, 7) {
		t.Fatal("an older record of a key replaced a newer one")
	}
	if got := hashes(f.x.takeBase("svc", base, bh, f.st.byHash)); !slices.Equal(got, sorted(a1, a3, a4)) {
		t.Fatalf("takeBase took %v, want the three keys left of /a", got)
	}
	if f.x.len() != 2 || !f.x.contains(b1, 5) || !f.x.contains(o1, 6) {
		t.Fatal("takeBase took more than its URL")
	}
	if got := f.x.find("other", "/a", f.st.byHash); len(got) != 1 || got[0].hash != o1 {
		t.Fatalf("find: %v", got)
	}
	if got := hashes(f.x.take("svc", "/a", f.st.byHash)); !slices.Equal(got, []uint64{b1}) {
		t.Fatalf("take /a of svc took %v, want /a/b's key only", got)
	}
	if f.x.len() != 1 || !f.x.contains(o1, 6) {
		t.Fatal("take reached another service")
	}
}

// TestIndexFindUnlocked: find reads the head of each of a service's chains without holding the
// index lock, which stores wait on; under it, it reads only the keys of the chain that matched.
func TestIndexFindUnlocked(t *testing.T) {
	f := &indexFixture{t: t, st: newStore(1<<30, func(uint64, []byte) {})}
	for i := range 200 {
		f.put("svc", "/u/"+strconv.Itoa(i), "")
	}
	k1, _ := f.put("svc", "/u/7", "#1", "t")
	k2, _ := f.put("svc", "/u/7", "#2")
	k0, _ := f.put("svc", "/u/7", "")
	locked := 0
	blocks := func(h uint64) []byte {
		if f.x.mu.TryLock() {
			f.x.mu.Unlock()
		} else {
			locked++
		}
		return f.st.byHash(h)
	}
	got := f.x.find("svc", "/u/7", blocks)
	if !slices.Equal(hashes(got), sorted(k0, k1, k2)) {
		t.Fatalf("find: %v, want the three keys of /u/7", hashes(got))
	}
	if locked != 3 {
		t.Fatalf("%d blocks read under the index lock, want the 3 of the matching chain", locked)
	}
	for _, r := range got {
		if r.hash == k1 && !slices.Equal(r.tags, []string{"t"}) {
			t.Fatalf("tags of /u/7#1: %v", r.tags)
		}
	}
	if got := f.x.find("nobody", "/u/7", blocks); len(got) != 0 {
		t.Fatalf("find in an unknown service: %v", got)
	}
}

// TestIndexTags: a tag purge takes the keys carrying the tag in the service named, once each, and
// the Vary marker of a URL it leaves without answers (not of one that keeps some); a replaced key
// loses the tags of its predecessor.
func TestIndexTags(t *testing.T) {
	f := &indexFixture{t: t, st: newStore(1<<30, func(uint64, []byte) {})}
	k1, _ := f.put("svc", "/1", "", "x", "y")
	k2, _ := f.put("svc", "/2", "", "y")
	k3, _ := f.put("other", "/3", "", "y")
	f.put("svc", "/4", "", "x")
	f.put("svc", "/4", "") // replaced without tags: x no longer finds it
	if got := hashes(f.x.takeTags("svc", []string{"x", "y"})); !slices.Equal(got, sorted(k1, k2)) {
		t.Fatalf("takeTags took %v, want /1 and /2", got)
	}
	if f.x.len() != 2 || !f.x.contains(k3, 3) {
		t.Fatal("a tag purge of svc reached another service, or the untagged entry")
	}
	if got := hashes(f.x.takeTags("", []string{"y"})); !slices.Equal(got, []uint64{k3}) || len(f.x.tags) != 0 || len(f.x.tagsOf) != 0 {
		t.Fatalf("takeTags of all services took %v; tags left %v", got, f.x.tags)
	}

	m1, _ := f.putKey("svc", "/v", "M", true, nil) // the marker and two variants, both tagged
	v1, _ := f.put("svc", "/v", "V1", "z")
	v2, _ := f.put("svc", "/v", "V2", "z")
	m2, _ := f.putKey("svc", "/w", "M", true, nil) // one variant tagged, one not
	w1, _ := f.put("svc", "/w", "V1", "z")
	w2, _ := f.put("svc", "/w", "V2")
	if got := hashes(f.x.takeTags("svc", []string{"z"})); !slices.Equal(got, sorted(m1, v1, v2, w1)) {
		t.Fatalf("takeTags took %v, want /v's variants and marker and /w's tagged variant", got)
	}
	if !f.x.contains(m2, 9) || !f.x.contains(w2, 11) {
		t.Fatal("took the marker of a URL that keeps an answer")
	}
}
