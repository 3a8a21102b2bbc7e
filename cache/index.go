package cache

import (
	"sync"
)

// index remembers which keys the local tier stores for each service and URL, because the store
// keeps hashes, not keys: Purge walks a service's URLs, invalidation after an unsafe method drops one
// URL's entries (all variants and credentials), PurgeTags finds entries by tag. Entries enter before
// they are put in the store and leave on eviction, refusal, expiry, purge or replacement; removal
// compares the block's store sequence number, so a late callback for a replaced entry cannot drop
// its successor.
//
// Like the blocks (block.go), it holds no pointer per entry, so the garbage collector has nothing
// of it to scan: keys are known by the store's 64-bit hash of them, a URL by the hash of its base
// key, and the keys stored under one base are chained through their records. What it needs of an
// entry beyond that (its URL, its base key) it reads from the entry's block in the store (the
// blocks argument). Only tagged entries cost a pointer: their tags.
type index struct {
	mu       sync.Mutex
	services map[string]*serviceIndex
	byID     []*serviceIndex
	keys     map[uint64]keyRecord           // key hash → the key's record
	tags     map[string]map[uint64]struct{} // tag → the hashes of the keys carrying it
	tagsOf   map[uint64][]string            // key hash → its tags (tagged keys only)
}

// serviceIndex holds one service's URLs.
type serviceIndex struct {
	id    uint32
	bases map[uint64]baseChain // base key hash → its keys
}

// baseChain is the keys stored under one base key (a URL): usually one, more with Vary variants,
// credentials or key header values.
type baseChain struct {
	first uint64 // the first key's hash; the others follow through keyRecord.next
	n     int32
}

// keyRecord is one indexed key.
type keyRecord struct {
	base    uint64 // its base key's hash
	next    uint64 // the next key of the chain, when hasNext
	seq     uint64 // the block's store sequence number
	service uint32 // serviceIndex.id
	hasNext bool
	marker  bool
}

// keyRef is a key taken out of (or found in) the index.
type keyRef struct {
	hash, seq uint64
	marker    bool
	tags      []string // find only
}

// blockSource gives the index the block stored under a key hash (nil when it is gone).
type blockSource func(hash uint64) []byte

// add indexes the key with hash kh, stored for service under the base key with hash bh, unless the
// index holds a newer record of it (a higher seq: two stores of one key ran side by side, and the
// later one wins); it replaces an older record. It reports whether it added the record.
func (x *index) add(service string, kh, bh, seq uint64, marker bool, tags []string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.services == nil {
		x.services = make(map[string]*serviceIndex)
		x.keys = make(map[uint64]keyRecord)
	}
	sv := x.services[service]
	if sv == nil {
		sv = &serviceIndex{id: uint32(len(x.byID)), bases: make(map[uint64]baseChain)}
		x.services[service] = sv
		x.byID = append(x.byID, sv)
	}
	if old, ok := x.keys[kh]; ok {
		if old.seq > seq {
			return false
		}
		// Replaced: its tags must not find (and purge) the new entry.
		x.untag(kh)
		if old.service == sv.id && old.base == bh {
			old.seq, old.marker = seq, marker
			x.keys[kh] = old
			x.tag(kh, tags)
			return true
		}
		x.unlink(kh, old) // another key with the same hash, under another URL
	}
	ch := sv.bases[bh]
	x.keys[kh] = keyRecord{base: bh, next: ch.first, hasNext: ch.n > 0, seq: seq, service: sv.id, marker: marker}
	sv.bases[bh] = baseChain{first: kh, n: ch.n + 1}
	x.tag(kh, tags)
	return true
}

// unlink removes the key kh (record r) from its chain and the index; mu held, tags already gone.
func (x *index) unlink(kh uint64, r keyRecord) {
	sv := x.byID[r.service]
	ch := sv.bases[r.base]
	if ch.first == kh {
		ch.first = r.next
	} else {
		for prev := ch.first; ; {
			p := x.keys[prev]
			if p.next == kh {
				p.next, p.hasNext = r.next, r.hasNext
				x.keys[prev] = p
				break
			}
			if !p.hasNext {
				break // not chained (cannot happen): leave the chain as it is
			}
			prev = p.next
		}
	}
	if ch.n--; ch.n == 0 {
		delete(sv.bases, r.base)
	} else {
		sv.bases[r.base] = ch
	}
	delete(x.keys, kh)
}

// tag adds kh under each of its tags; mu held.
func (x *index) tag(kh uint64, tags []string) {
	if len(tags) == 0 {
		return
	}
	if x.tags == nil {
		x.tags = make(map[string]map[uint64]struct{})
		x.tagsOf = make(map[uint64][]string)
	}
	x.tagsOf[kh] = tags
	for _, t := range tags {
		set := x.tags[t]
		if set == nil {
			set = make(map[uint64]struct{}, 1)
			x.tags[t] = set
		}
		set[kh] = struct{}{}
	}
}

// untag removes kh from its tags; mu held.
func (x *index) untag(kh uint64) {
	tags, ok := x.tagsOf[kh]
	if !ok {
		return
	}
	delete(x.tagsOf, kh)
	for _, t := range tags {
		if set := x.tags[t]; set != nil {
			delete(set, kh)
			if len(set) == 0 {
				delete(x.tags, t)
			}
		}
	}
}

// remove drops the key kh if its record is still the block with store sequence number seq; it
// reports whether it was.
func (x *index) remove(kh, seq uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	r, ok := x.keys[kh]
	if !ok || r.seq != seq {
		return false
	}
	x.untag(kh)
	x.unlink(kh, r)
	return true
}

// contains reports whether the record for kh is the block with store sequence number seq.
func (x *index) contains(kh, seq uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	r, ok := x.keys[kh]
	return ok && r.seq == seq
}

// chain calls fn for each key of a chain, in order; mu held. fn may not change the chain.
func (x *index) chain(ch baseChain, fn func(kh uint64, r keyRecord)) {
	kh := ch.first
	for range ch.n {
		r := x.keys[kh]
		fn(kh, r)
		if !r.hasNext {
			return
		}
		kh = r.next
	}
}

// takeFrom removes the keys of a chain that match (nil: all of them) from the index and appends
// them to out; mu held. Every take goes through here.
func (x *index) takeFrom(ch baseChain, match func(kh uint64) bool, out []keyRef) []keyRef {
	n := len(out)
	x.chain(ch, func(kh uint64, r keyRecord) {
		if match == nil || match(kh) {
			out = append(out, keyRef{hash: kh, seq: r.seq, marker: r.marker})
		}
	})
	for _, ref := range out[n:] {
		x.untag(ref.hash)
		x.unlink(ref.hash, x.keys[ref.hash])
	}
	return out
}

// take removes and returns the keys of service ("" = all services) whose URL is under prefix
// (underPrefix: segment boundaries), reading each key's URL from its block: a key whose block is
// gone (being evicted right now) is left to its eviction.
func (x *index) take(service, prefix string, blocks blockSource) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	var under func(kh uint64) bool // nil: everything is under ""
	if prefix != "" {
		under = func(kh uint64) bool {
			b := blocks(kh)
			return b != nil && underPrefix(blockURL(b), prefix)
		}
	}
	var out []keyRef
	for name, sv := range x.services {
		if service != "" && name != service {
			continue
		}
		for _, ch := range sv.bases {
			out = x.takeFrom(ch, under, out)
		}
	}
	return out
}

// takeBase removes and returns every key stored under one base key (all variants, all
// credentials), bh being its hash. Keys whose block shows another base (a hash collision) stay.
func (x *index) takeBase(service string, base []byte, bh uint64, blocks blockSource) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	sv := x.services[service]
	if sv == nil {
		return nil
	}
	ch, ok := sv.bases[bh]
	if !ok {
		return nil
	}
	return x.takeFrom(ch, func(kh uint64) bool {
		b := blocks(kh)
		return b == nil || string(blockBase(b)) == string(base)
	}, nil)
}

// takeTags removes and returns the keys of service ("" = all services) that carry one of tags, and
// the Vary markers of the URLs that are left without a stored answer (markers carry no tags; left
// behind, the URL's next request would be labelled a vary-miss).
func (x *index) takeTags(service string, tags []string) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []keyRef
	var id uint32
	if service != "" {
		sv := x.services[service]
		if sv == nil {
			return nil
		}
		id = sv.id
	}
	type chainID struct {
		service uint32
		base    uint64
	}
	var touched []chainID
	for _, t := range tags {
		for kh := range x.tags[t] {
			r := x.keys[kh]
			if service != "" && r.service != id {
				continue
			}
			out = append(out, keyRef{hash: kh, seq: r.seq, marker: r.marker})
			x.untag(kh)
			x.unlink(kh, r)
			touched = append(touched, chainID{r.service, r.base})
		}
	}
	for _, c := range touched {
		ch, ok := x.byID[c.service].bases[c.base]
		if !ok {
			continue
		}
		answers := false
		x.chain(ch, func(_ uint64, r keyRecord) { answers = answers || !r.marker })
		if !answers {
			out = x.takeFrom(ch, nil, out)
		}
	}
	return out
}

// find returns the keys (Vary markers included) of service whose URL is url, with their tags: for
// the admin API, not for requests. It reads the URL of the head of each of the service's chains
// with mu released (a large service has a chain per URL, and stores wait on mu), then, under mu
// again, the URL of each key of the chains that matched (the keys of a chain share their URL unless
// two base keys' hashes collide).
func (x *index) find(service, url string, blocks blockSource) []keyRef {
	type head struct{ base, first uint64 }
	x.mu.Lock()
	sv := x.services[service]
	if sv == nil {
		x.mu.Unlock()
		return nil
	}
	heads := make([]head, 0, len(sv.bases))
	for bh, ch := range sv.bases {
		heads = append(heads, head{bh, ch.first})
	}
	x.mu.Unlock()
	match := heads[:0]
	for _, h := range heads {
		if b := blocks(h.first); b == nil || blockURL(b) == url {
			match = append(match, h) // a head gone meanwhile: its chain is read below
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []keyRef
	for _, h := range match {
		ch, ok := sv.bases[h.base]
		if !ok || x.services[service] != sv {
			continue // taken meanwhile
		}
		x.chain(ch, func(kh uint64, r keyRecord) {
			if b := blocks(kh); b != nil && blockURL(b) == url {
				out = append(out, keyRef{hash: kh, seq: r.seq, marker: r.marker, tags: x.tagsOf[kh]})
			}
		})
	}
	return out
}

// clear forgets every key (the tier closed).
func (x *index) clear() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.services, x.byID, x.keys, x.tags, x.tagsOf = nil, nil, nil, nil, nil
}

func (x *index) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.keys)
}
