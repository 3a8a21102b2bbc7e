package cache

import (
	"slices"
	"strings"
	"sync"
)

// index remembers which keys the local tier stores for each service and URL, because the store
// keeps hashes, not keys: Purge walks a service's URLs, invalidation after an unsafe method drops one
// URL's entries (all variants and credentials), PurgeTags finds entries by tag. Entries enter before
// they are put in the store and leave on eviction, refusal, expiry, purge or replacement;
// removal compares the block's store sequence number, so a late callback for a replaced entry cannot
// drop its successor. It holds few pointers per entry (two strings and a slice), for the same reason
// as the blocks (block.go).
type index struct {
	mu       sync.Mutex
	services map[string]map[string]*baseRefs // service → base key → its keys
	tags     map[string]map[string]tagRef    // tag → key → where the key is indexed
	n        int
}

// baseRefs are the keys stored under one base key (a URL): usually one, more with Vary variants,
// credentials or key header values.
type baseRefs struct {
	url  string // upstream-relative path and query (Entry.URL)
	refs []keyRef
	one  [1]keyRef // refs' first backing array: one object per URL in the usual case
}

// keyRef is one indexed key.
type keyRef struct {
	key    string // shares its block's memory: it leaves the index with the block
	seq    uint64 // the block's store sequence number
	marker bool
	tags   []string // nil without tags
}

// tagRef says where a tagged key is indexed.
type tagRef struct {
	service string
	baseLen int
}

// add indexes ref, stored for service under url; it replaces the key's previous ref.
func (x *index) add(service, url string, baseLen int, ref keyRef) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.services == nil {
		x.services = make(map[string]map[string]*baseRefs)
	}
	bases := x.services[service]
	if bases == nil {
		bases = make(map[string]*baseRefs)
		x.services[service] = bases
	}
	br := bases[ref.key[:baseLen]]
	if br == nil {
		// The map key is not the block's memory: the base outlives a replaced block. The URL
		// shares the copy when the key ends with it (no query rules rewrote it).
		base := strings.Clone(ref.key[:baseLen])
		if strings.HasSuffix(base, url) {
			url = base[len(base)-len(url):]
		}
		br = &baseRefs{url: url}
		br.refs = br.one[:0]
		bases[base] = br
	}
	if i := br.find(ref.key); i >= 0 {
		x.untag(service, br.refs[i]) // replaced: its tags must not find (and purge) the new entry
		br.refs[i] = ref
	} else {
		br.refs = append(br.refs, ref)
		if len(br.refs) > 1 {
			// refs moved off the inline array: a ref left there would keep its block alive
			br.one = [1]keyRef{}
		}
		x.n++
	}
	x.tag(service, baseLen, ref)
}

func (br *baseRefs) find(key string) int {
	for i := range br.refs {
		if br.refs[i].key == key {
			return i
		}
	}
	return -1
}

// tag adds ref under each of its tags; mu held.
func (x *index) tag(service string, baseLen int, ref keyRef) {
	if len(ref.tags) == 0 {
		return
	}
	if x.tags == nil {
		x.tags = make(map[string]map[string]tagRef)
	}
	for _, t := range ref.tags {
		set := x.tags[t]
		if set == nil {
			set = make(map[string]tagRef, 1)
			x.tags[t] = set
		}
		set[ref.key] = tagRef{service: service, baseLen: baseLen}
	}
}

// untag removes ref from its tags; mu held.
func (x *index) untag(service string, ref keyRef) {
	for _, t := range ref.tags {
		if set := x.tags[t]; set != nil {
			if tr, ok := set[ref.key]; ok && tr.service == service {
				delete(set, ref.key)
			}
			if len(set) == 0 {
				delete(x.tags, t)
			}
		}
	}
}

// remove drops the key if the indexed ref is still the block with store sequence number seq; it
// reports whether it was.
func (x *index) remove(service, key string, baseLen int, seq uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	bases := x.services[service]
	base := key[:baseLen]
	br := bases[base]
	if br == nil {
		return false
	}
	i := br.find(key)
	if i < 0 || br.refs[i].seq != seq {
		return false
	}
	x.untag(service, br.refs[i])
	x.drop(service, bases, base, br, i)
	return true
}

// drop removes ref i of br (indexed under base of service); mu held.
func (x *index) drop(service string, bases map[string]*baseRefs, base string, br *baseRefs, i int) {
	br.refs = slices.Delete(br.refs, i, i+1) // clears the tail: no ref keeps a dropped block
	x.n--
	if len(br.refs) == 0 {
		delete(bases, base)
		if len(bases) == 0 {
			delete(x.services, service)
		}
	}
}

// contains reports whether the indexed ref for key is the block with store sequence number seq.
func (x *index) contains(service, key string, baseLen int, seq uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	br := x.services[service][key[:baseLen]]
	if br == nil {
		return false
	}
	i := br.find(key)
	return i >= 0 && br.refs[i].seq == seq
}

// take removes and returns the refs of service ("" = all services) whose URL is under prefix
// (underPrefix: segment boundaries).
func (x *index) take(service, prefix string) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []keyRef
	for svc, bases := range x.services {
		if service != "" && svc != service {
			continue
		}
		for b, br := range bases {
			if !underPrefix(br.url, prefix) {
				continue
			}
			for _, ref := range br.refs {
				x.untag(svc, ref)
			}
			out = append(out, br.refs...)
			x.n -= len(br.refs)
			delete(bases, b)
		}
		if len(bases) == 0 {
			delete(x.services, svc)
		}
	}
	return out
}

// takeBase removes and returns every ref stored under one base key (all variants, all credentials).
func (x *index) takeBase(service, base string) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	bases := x.services[service]
	br := bases[base]
	if br == nil {
		return nil
	}
	for _, ref := range br.refs {
		x.untag(service, ref)
	}
	x.n -= len(br.refs)
	delete(bases, base)
	if len(bases) == 0 {
		delete(x.services, service)
	}
	return br.refs
}

// takeTags removes and returns the refs of service ("" = all services) that carry one of tags.
func (x *index) takeTags(service string, tags []string) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []keyRef
	for _, t := range tags {
		for key, tr := range x.tags[t] {
			if service != "" && tr.service != service {
				continue
			}
			bases := x.services[tr.service]
			base := key[:tr.baseLen]
			br := bases[base]
			if br == nil {
				continue
			}
			i := br.find(key)
			if i < 0 {
				continue
			}
			ref := br.refs[i]
			out = append(out, ref)
			x.untag(tr.service, ref)
			x.drop(tr.service, bases, base, br, i)
		}
	}
	return out
}

// find returns the refs (Vary markers included) of service whose URL is url.
func (x *index) find(service, url string) []keyRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []keyRef
	for _, br := range x.services[service] {
		if br.url == url {
			out = append(out, br.refs...)
		}
	}
	return out
}

func (x *index) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.n
}
