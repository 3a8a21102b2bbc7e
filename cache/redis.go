package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The shared tier.
//
// Client: github.com/redis/go-redis/v9 rather than rueidis. It was already a dependency; its
// per-command context deadlines (ContextTimeoutEnabled), PoolTimeout and MaxRetries=-1 give the hard
// per-request bound this tier needs; and rueidis' main advantage, server-assisted client-side caching
// (CLIENT TRACKING), does not fit: our local tier is a store of its own with a byte bound, purge index
// and per-entry freshness, and purges are by service and path *prefix*, which key-level tracking
// invalidations cannot express (BCAST prefixes would, but would push every write of every instance
// to every instance). A single pub/sub channel carrying "purge service/prefix" and "invalidate base
// key" messages is what the local tier needs, and it is a few lines with go-redis.
//
// Layout in Redis (P = KeyPrefix, S = a service name). Every key of a service carries the hash tag
// {S}, so that on a Redis Cluster all of them live in one slot: a service's writes, purges and
// invalidations are single-slot scripts, routed by go-redis to the master that owns the slot, and
// purge-all is one script per service (from P:services). The price is that one service's entries
// sit on one master; the services spread over all of them (docs/redis.md).
//
//	P:{S}:e:<h>         an encoded Entry (MarshalBinary, version byte first), PX = remaining
//	                    freshness + stale windows (+ revalidation time when it has a validator);
//	                    h = hex(sha256(base key))[:16] + hex(sha256(full key))[:32]
//	P:{S}:l             ZSET, all scores 0: members "<url>\x00<h><kind>" (kind e = response,
//	                    m = Vary marker), so ZRANGEBYLEX finds a path prefix or one base key exactly
//	P:{S}:x             ZSET, the same members scored by expiry (Redis TIME, ms): trims both indexes
//	P:{S}:t:<tag>       SET of the index members of the service's entries carrying the tag; its TTL
//	                    the longest of theirs (members of expired entries leave with the set)
//	P:services          SET of service names, for purge-all and tag purges across services
//	P:purge             pub/sub channel: JSON purge / invalidate messages between instances
//
// Writes and purges are Lua scripts (one round trip, atomic), so the indexes never drift from the
// entries by more than an expiry. The same layout serves a standalone server, a primary found
// through Sentinel, and a Redis Cluster.

// RedisStats describe the shared tier (Stats.Redis).
type RedisStats struct {
	Topology string `json:"topology"` // standalone, cluster or sentinel
	// Nodes are a cluster's nodes or the sentinel's primary and replicas, as last read (every
	// second); LastFailover is when a replica was last seen taking over (zero: never).
	Nodes        []RedisNode `json:"nodes,omitempty"`
	LastFailover time.Time   `json:"last_failover,omitzero"`
	Up           bool        `json:"up"`                   // false while skipped after an error
	DownSince    time.Time   `json:"down_since,omitzero"`  // when it was last marked down (while down)
	Failures     int64       `json:"consecutive_failures"` // failed probes in the current outage
	Hits         int64       `json:"hits"`                 // local misses answered from Redis
	Misses       int64       `json:"misses"`               // local misses Redis did not have either
	Skipped      int64       `json:"skipped"`              // lookups not attempted because the tier was down
	Errors       int64       `json:"errors"`               // failed commands, corrupt values included
	Corrupt      int64       `json:"corrupt"`              // values that were not an entry of this format
	Writes       int64       `json:"writes"`               // entries written
	Dropped      int64       `json:"dropped"`              // writes dropped: queue full, tier down, or overtaken by a purge
	Purged       int64       `json:"purged"`               // responses removed from Redis by Purge and invalidation
	Received     int64       `json:"received"`             // purge/invalidate messages applied from other instances
	Resyncs      int64       `json:"resyncs"`              // local tier flushed after the subscription was lost
}

const (
	subscribeIdle = 15 * time.Second // ping the pub/sub connection after this much silence
	purgeBatch    = 500
	purgeTimeout  = 10 * time.Second
)

// redisTier is the shared second tier of a Cache.
type redisTier struct {
	above  []tier // the tiers before this one (see newRedisTier)
	log    *zap.Logger
	opts   RedisOptions
	client redis.UniversalClient
	topo   topology // nodes of a cluster or sentinel, read by watchTopology
	id     string   // this instance, to ignore its own pub/sub messages
	prefix string   // KeyPrefix + ":"

	up        atomic.Bool
	level     atomic.Int64 // backoff level of the current (or last) outage
	failures  atomic.Int64 // failed probes in the current outage
	nextProbe atomic.Int64 // unix ns
	upSince   atomic.Int64
	downSince atomic.Int64
	kick      chan struct{} // the tier went down: wake the prober

	// epoch is moved by every purge or invalidation (local: fence; received: handle); a queued
	// write taken before the move is dropped, and one in flight across it is undone.
	epoch  atomic.Uint64
	writes chan redisWrite

	lookups flights // one Redis lookup per key at a time; others wait for it

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	psMu   sync.Mutex
	ps     *redis.PubSub

	hits, misses, skipped, errs, corrupt, written, dropped, purged, received, resyncs atomic.Int64

	hookLookup func(d time.Duration) // tests: duration of each request-path Redis lookup
}

// newRedisTier connects the shared tier. above are the tiers before it, to which it applies the
// removals other instances publish.
func newRedisTier(o RedisOptions, log *zap.Logger, above []tier) (*redisTier, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	client, err := o.newClient()
	if err != nil {
		return nil, err
	}
	var rnd [8]byte
	for i := range rnd {
		rnd[i] = byte(rand.Uint32())
	}
	t := &redisTier{
		above:  above,
		log:    log,
		opts:   o,
		client: client,
		id:     hex.EncodeToString(rnd[:]),
		prefix: o.KeyPrefix + ":",
		kick:   make(chan struct{}, 1),
		writes: make(chan redisWrite, o.WriteQueue),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.up.Store(true)
	t.upSince.Store(time.Now().UnixNano())
	if err := t.ping(); err != nil {
		t.markDown(err)
	}
	t.spawn("redis prober", t.prober)
	t.spawn("redis subscriber", t.subscriber)
	if o.topology() != TopologyStandalone {
		t.spawn("redis topology", t.watchTopology)
	}
	for range 2 {
		t.spawn("redis writer", t.writer)
	}
	return t, nil
}

// spawn runs loop in a goroutine that ends on close; a panic is logged and the loop restarted
// after a pause, so a bug in message handling cannot stop invalidations for good.
func (t *redisTier) spawn(name string, loop func()) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for t.ctx.Err() == nil {
			if !t.runRecovered(name, loop) {
				return
			}
			t.sleep(time.Second)
		}
	}()
}

// runRecovered runs loop and reports whether it panicked.
func (t *redisTier) runRecovered(name string, loop func()) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			t.log.Error("recovered from a panic; restarting", zap.String("goroutine", name), zap.Any("panic", v))
		}
	}()
	loop()
	return false
}

// sleep waits d or until close; it reports false on close.
func (t *redisTier) sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-t.ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func (t *redisTier) close() {
	t.once.Do(func() {
		t.cancel()
		t.psMu.Lock()
		if t.ps != nil {
			_ = t.ps.Close()
		}
		t.psMu.Unlock()
		t.wg.Wait()
		_ = t.client.Close()
	})
}

// snapshot returns the tier's counters and state.
func (t *redisTier) snapshot() *RedisStats {
	s := &RedisStats{
		Topology: t.opts.topology(),
		Up:       t.up.Load(),
		Hits:     t.hits.Load(),
		Misses:   t.misses.Load(),
		Skipped:  t.skipped.Load(),
		Errors:   t.errs.Load(),
		Corrupt:  t.corrupt.Load(),
		Writes:   t.written.Load(),
		Dropped:  t.dropped.Load(),
		Purged:   t.purged.Load(),
		Received: t.received.Load(),
		Resyncs:  t.resyncs.Load(),
	}
	if !s.Up {
		s.DownSince = time.Unix(0, t.downSince.Load())
		s.Failures = t.failures.Load()
	}
	t.topo.snapshot(s)
	return s
}

// entryKey is the Redis key of the entry stored under key (base part key[:baseLen]).
func (t *redisTier) entryKey(service string, key []byte, baseLen int) (rkey, suffix string) {
	bh := sha256.Sum256(key[:baseLen])
	fh := sha256.Sum256(key)
	var h [48]byte
	hex.Encode(h[:16], bh[:8])
	hex.Encode(h[16:], fh[:16])
	suffix = string(h[:])
	return t.entryPrefix(service) + suffix, suffix
}

// svcPrefix starts every key of service: the hash tag keeps them in one cluster slot.
func (t *redisTier) svcPrefix(service string) string   { return t.prefix + "{" + service + "}:" }
func (t *redisTier) entryPrefix(service string) string { return t.svcPrefix(service) + "e:" }

func (t *redisTier) lexKey(service string) string { return t.svcPrefix(service) + "l" }
func (t *redisTier) expKey(service string) string { return t.svcPrefix(service) + "x" }
func (t *redisTier) servicesKey() string          { return t.prefix + "services" }
func (t *redisTier) channel() string              { return t.prefix + "purge" }
func (t *redisTier) tagKey(service, tag string) string {
	return t.svcPrefix(service) + "t:" + tag
}
