package cache

import (
	"sync"
	"time"
)

// passTTL is how long a key whose last answer could not be stored skips
// coalescing ("hit-for-miss", as Varnish calls it).
const passTTL = 30 * time.Second

// passCap bounds the remembered keys; past it the set starts over.
const passCap = 65536

// passKeys remembers keys whose last answer was not storable, so that
// concurrent requests for them go upstream in parallel instead of waiting
// one after another behind a leader whose answer they cannot use — the
// uncacheable API endpoint under load must cost what an uncached proxy
// costs. A later storable answer forgets the key; being wrong costs only
// one lost coalescing, never a wrong answer.
type passKeys struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// known reports whether key is remembered as not storable at now.
func (p *passKeys) known(key string, now time.Time) bool {
	p.mu.Lock()
	until, ok := p.m[key]
	p.mu.Unlock()
	return ok && now.Before(until)
}

// remember marks key as not storable until now+passTTL.
func (p *passKeys) remember(key string, now time.Time) {
	p.mu.Lock()
	if p.m == nil || len(p.m) >= passCap {
		p.m = make(map[string]time.Time)
	}
	p.m[key] = now.Add(passTTL)
	p.mu.Unlock()
}

// forget drops key (its answer was stored).
func (p *passKeys) forget(key string) {
	p.mu.Lock()
	delete(p.m, key)
	p.mu.Unlock()
}
