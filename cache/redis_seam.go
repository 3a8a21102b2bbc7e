package cache

// The Redis tier as a tier (tier.go): lookups on the request path, and what the policy hands it.
// The tier holds no *Cache: other instances' removals it applies to the tiers before it (above),
// which are tiers too; everything else it returns to its caller.

import (
	"context"
	"net/http"
	"time"
)

// get implements tier: after a miss in the tiers before it, it asks Redis for q's key (a primary
// key, or a variant key when an earlier tier had the Vary marker), following a marker to the
// variant, and returns what it found with the marker, for the caller to copy into the earlier
// tiers. Concurrent gets of one key make one Redis request: one that waited for another's returns
// again when that one found the entry (copied up by its caller before it settles). It never takes
// longer than Timeout.
func (t *redisTier) get(ctx context.Context, h http.Header, q query, _ *Entry) found {
	if !t.up.Load() {
		t.skipped.Add(1)
		return found{key: q.key, varyMiss: q.varyMiss, failed: true}
	}
	start := time.Now()
	if t.hookLookup != nil {
		defer func() { t.hookLookup(time.Since(start)) }()
	}
	fkey := string(q.key)
	fl, leader := t.lookups.join(fkey)
	if !leader {
		tm := time.NewTimer(t.opts.Timeout)
		defer tm.Stop()
		select {
		case <-fl.done:
		case <-tm.C:
			return found{key: q.key, varyMiss: q.varyMiss}
		case <-ctx.Done():
			return found{key: q.key, varyMiss: q.varyMiss}
		}
		return found{key: q.key, varyMiss: q.varyMiss, again: fl.stored}
	}
	ctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	f := t.fetch(ctx, h, q)
	f.settle = func(copied bool) { t.lookups.finish(fkey, fl, copied && f.e != nil, nil) }
	return f
}

// fetch makes the Redis requests of one get.
func (t *redisTier) fetch(ctx context.Context, h http.Header, q query) found {
	buf := q.key
	var marker *Entry
	if !q.varyMiss {
		e, ok := t.getOne(ctx, q.service, buf, q.baseLen)
		if e == nil {
			if ok {
				t.misses.Add(1)
			}
			return found{key: buf, failed: !ok}
		}
		if !e.Marker {
			t.hits.Add(1)
			return found{e: e, key: buf}
		}
		marker = e
		buf = appendVariantKey(buf, e.Vary, h)
	}
	e, ok := t.getOne(ctx, q.service, buf, q.baseLen)
	if e == nil || e.Marker {
		if ok {
			t.misses.Add(1)
		}
		return found{marker: marker, key: buf, varyMiss: true, failed: !ok}
	}
	t.hits.Add(1)
	return found{e: e, marker: marker, key: buf}
}

// mark implements tier: the epoch, moved by every removal.
func (t *redisTier) mark() uint64 { return t.epoch.Load() }

// remove implements tier. It moves the epoch first (in purge, purgeTags and invalidate): the caller
// removed from the tiers before this one already, so a put that did not see the removal there read
// this tier's mark before the move, and its write is dropped or undone.
func (t *redisTier) remove(ctx context.Context, ev purgeEvent) int {
	switch {
	case ev.tags != nil:
		return t.purgeTags(ev.service, ev.tags)
	case ev.refs != nil:
		t.invalidate(ctx, ev.service, ev.refs)
		return 0
	default:
		return t.purge(ev.service, ev.prefix)
	}
}

// stats implements tier.
func (t *redisTier) stats(s *Stats) { s.Redis = t.snapshot() }

var _ tier = (*redisTier)(nil)
