package cache

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// tier is one store of the cache's entries. The policy (Cache: serve.go, freshness.go, coalesce.go)
// reaches its tiers through this interface only and knows neither store: the local tier (local.go)
// keeps pointer-free blocks in memory, the Redis tier (redis*.go) shares entries between instances.
// Tiers are asked in order (Cache.tiers: local first); what a later tier finds is copied into the
// earlier ones. A tier never calls into the policy: the Redis tier applies other instances' removals
// to the tiers before it (redisTier.above), which are tiers too.
type tier interface {
	// get looks up the request whose header is h under q (a primary key, or a variant key when
	// q.varyMiss), following a Vary marker to the variant for h. The local tier makes view a view of
	// what it finds (no allocation); others return entries of their own.
	get(ctx context.Context, h http.Header, q query, view *Entry) found
	// put stores a response e and its Vary marker m (nil without one), both prepared and keyed, to
	// keep for ttl, unless a removal covering them came after mark (the tier's mark read before the
	// exchange that fetched them began).
	put(m, e *Entry, ttl time.Duration, mark uint64) storeOutcome
	// mark is the tier's position in its removals now (see put).
	mark() uint64
	// remove applies a purge, a purge by tag or an invalidation (purgeEvent) and returns how many
	// responses it removed. Answers in flight that it covers are not stored afterwards.
	remove(ctx context.Context, ev purgeEvent) int
	// stats adds the tier's figures to s.
	stats(s *Stats)
	close()
}

// maxTiers bounds Cache.tiers (local, and Redis when configured), so that an exchange's marks fit
// in an array.
const maxTiers = 2

// marks are the tiers' marks read before an exchange began, by tier.
type marks [maxTiers]uint64

// query is a lookup key.
type query struct {
	service  string
	key      []byte // a primary key, or a variant key when varyMiss
	baseLen  int    // the length of the key's base part
	varyMiss bool   // an earlier tier found the Vary marker but not the variant: key is the variant's
}

// found is what a tier's get found.
type found struct {
	e        *Entry // the response, or nil
	marker   *Entry // the Vary marker followed to e, for the caller to copy into earlier tiers (else nil)
	key      []byte // the final lookup key (the variant's after a marker)
	varyMiss bool   // a marker was found but not its variant
	again    bool   // a concurrent get found e and copied it into the earlier tiers: ask them again
	failed   bool   // the tier could not be asked (down, or the command failed): the miss says nothing
	// settle, when set, must be called once the caller copied e into the earlier tiers (copied) or
	// gave up on it: gets of the same key waiting on this one then ask those tiers again.
	settle func(copied bool)
}

// viewPool recycles the views a lookup fills: one crosses the tier interface on every request, so
// it cannot live on the stack.
var viewPool = sync.Pool{New: func() any { return new(Entry) }}

func getView() *Entry { return viewPool.Get().(*Entry) }

// putView returns a view to the pool, cleared so that it keeps no block alive.
func putView(v *Entry) {
	*v = Entry{}
	viewPool.Put(v)
}
