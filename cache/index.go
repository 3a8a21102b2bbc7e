package cache

import "sync"

// index remembers which keys are stored for each service and URL, because ristretto cannot iterate
// its keys: Purge walks a service's URLs, invalidation after an unsafe method drops one URL's entries
// (all variants and credentials). Entries enter before they are offered to ristretto and leave on
// eviction, rejection, expiry, purge or replacement; removal compares the entry pointer, so a late
// callback for a replaced entry cannot drop its successor.
type index struct {
	mu       sync.Mutex
	services map[string]map[string]map[string]*Entry // service → base key → key → entry
	tags     map[string]map[*Entry]struct{}          // tag → entries carrying it
	n        int
}

// tag adds e under each of its tags; mu held.
func (x *index) tag(e *Entry) {
	if len(e.tags) == 0 {
		return
	}
	if x.tags == nil {
		x.tags = make(map[string]map[*Entry]struct{})
	}
	for _, t := range e.tags {
		set := x.tags[t]
		if set == nil {
			set = make(map[*Entry]struct{}, 1)
			x.tags[t] = set
		}
		set[e] = struct{}{}
	}
}

// untag removes e from its tags; mu held.
func (x *index) untag(e *Entry) {
	for _, t := range e.tags {
		if set := x.tags[t]; set != nil {
			delete(set, e)
			if len(set) == 0 {
				delete(x.tags, t)
			}
		}
	}
}

// takeTags removes and returns the entries of service ("" = all services) that carry one of tags.
func (x *index) takeTags(service string, tags []string) []*Entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*Entry
	for _, t := range tags {
		for e := range x.tags[t] {
			if service != "" && e.Service != service {
				continue
			}
			out = append(out, e)
			x.untag(e)
			x.unindex(e)
		}
	}
	return out
}

// unindex drops e from the service index (it is the indexed entry for its key); mu held.
func (x *index) unindex(e *Entry) {
	bases := x.services[e.Service]
	base := e.Key[:e.BaseLen]
	keys := bases[base]
	delete(keys, e.Key)
	x.n--
	if len(keys) == 0 {
		delete(bases, base)
		if len(bases) == 0 {
			delete(x.services, e.Service)
		}
	}
}

func (x *index) add(e *Entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.services == nil {
		x.services = make(map[string]map[string]map[string]*Entry)
	}
	bases := x.services[e.Service]
	if bases == nil {
		bases = make(map[string]map[string]*Entry)
		x.services[e.Service] = bases
	}
	base := e.Key[:e.BaseLen]
	keys := bases[base]
	if keys == nil {
		keys = make(map[string]*Entry, 1)
		bases[base] = keys
	}
	if old, ok := keys[e.Key]; !ok {
		x.n++
	} else if old != e {
		x.untag(old) // replaced: its tags must not find (and purge) the new entry's key
	}
	keys[e.Key] = e
	x.tag(e)
}

// remove drops e if it is still the indexed entry for its key; it reports whether it was.
func (x *index) remove(e *Entry) bool {
	if e == nil {
		return false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	bases := x.services[e.Service]
	base := e.Key[:e.BaseLen]
	keys := bases[base]
	if keys[e.Key] != e {
		return false
	}
	x.untag(e)
	x.unindex(e)
	return true
}

// contains reports whether e is the indexed entry for its key.
func (x *index) contains(e *Entry) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.services[e.Service][e.Key[:e.BaseLen]][e.Key] == e
}

// take removes and returns the entries of service ("" = all services) whose URL is under prefix
// (underPrefix: segment boundaries).
func (x *index) take(service, prefix string) []*Entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*Entry
	for svc, bases := range x.services {
		if service != "" && svc != service {
			continue
		}
		for b, keys := range bases {
			for _, e := range keys {
				if underPrefix(e.URL, prefix) {
					out = append(out, e)
					x.untag(e)
					delete(keys, e.Key)
					x.n--
				}
			}
			if len(keys) == 0 {
				delete(bases, b)
			}
		}
		if len(bases) == 0 {
			delete(x.services, svc)
		}
	}
	return out
}

// takeBase removes and returns every entry stored under one base key (all variants, all credentials).
func (x *index) takeBase(service, base string) []*Entry {
	x.mu.Lock()
	defer x.mu.Unlock()
	bases := x.services[service]
	keys := bases[base]
	out := make([]*Entry, 0, len(keys))
	for _, e := range keys {
		out = append(out, e)
		x.untag(e)
		x.n--
	}
	delete(bases, base)
	if len(bases) == 0 {
		delete(x.services, service)
	}
	return out
}

func (x *index) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.n
}
