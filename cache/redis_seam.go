package cache

import (
	"net/http"

	"go.uber.org/zap"
)

// The cache's side of the Redis tier: what the policy hands the tier and takes from it. The tier
// holds no *Cache: it reaches the policy only through the hooks built here, given at construction,
// and through the found callback of a lookup.

// redisHooks are what the Redis tier needs from the cache above it.
type redisHooks struct {
	log *zap.Logger
	// purged, tagsPurged and invalidated apply another instance's purge, tag purge or invalidation
	// to the local tier; resync empties the local tier after pub/sub messages may have been lost.
	purged      func(service, prefix string)
	tagsPurged  func(service string, tags []string)
	invalidated func(service string, bases [][]byte)
	resync      func()
}

// newShared builds the Redis tier of c.
func (c *Cache) newShared(o RedisOptions) (*redisTier, error) {
	return newRedisTier(o, redisHooks{
		log:         c.log,
		purged:      func(service, prefix string) { c.purgeLocal(service, prefix) },
		tagsPurged:  func(service string, tags []string) { c.purgeTagsLocal(service, tags) },
		invalidated: c.invalidateLocal,
		resync:      func() { c.purgeLocal("", "") },
	})
}

// lookupShared asks the Redis tier after a local miss (see redisTier.lookup). What it finds is
// prepared and stored in the local tier, unless a purge came while it asked; when a concurrent
// lookup found the entry, the local tier is asked again (into view).
func (c *Cache) lookupShared(r *http.Request, service, auth string, key []byte, baseLen int, varyMiss bool, view *Entry) (*Entry, []byte, bool) {
	since := c.purgeSeq() // what Redis answers may predate a purge that comes while we ask
	e, key, varyMiss, again := c.redis.lookup(r, service, key, baseLen, varyMiss, func(e *Entry) {
		e.prepare(&c.opts)
		c.fill(e, since)
	})
	if again {
		e, key, _, varyMiss = c.lookup(key, r, service, auth, view)
	}
	return e, key, varyMiss
}

// shareStored hands a response stored locally (and its Vary marker) to the Redis tier for what
// remains of its retention; epoch is the tier's, read before the local store checked its purge log.
func (c *Cache) shareStored(m, e *Entry, epoch uint64) {
	c.redis.enqueue(m, e, c.retention(e)-e.age(c.now()), epoch)
}
