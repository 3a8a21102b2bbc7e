// Package cache is the gateway's shared HTTP cache (RFC 9111) in front of a streaming upstream: it
// answers GET and HEAD from stored responses, streams misses to the client while recording them,
// collapses concurrent misses into one upstream request, revalidates with conditional requests, serves
// stale answers when allowed, and invalidates on unsafe methods. It uses plain net/http types only, so
// it is testable without Caddy; entries live in a byte-bounded store of blocks.
package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
	"go.uber.org/zap"
)

// Fetch forwards r upstream and writes the answer to w (streaming). It returns an error only when no
// response could be obtained (e.g. a caddyhttp.HandlerError with 502/504); in that case it has written
// nothing to w. client is the writer Serve was given for the request this exchange serves, so that
// the embedding server can account the exchange to it; it is nil for a background refresh.
type Fetch func(w http.ResponseWriter, r *http.Request, client http.ResponseWriter) error

// Runner runs background jobs (stale-while-revalidate refreshes) on a bounded worker pool; TrySubmit
// returns false (dropping the job) when the queue is full — it never blocks.
type Runner interface {
	TrySubmit(job func(ctx context.Context)) bool
}

// Options configure a Cache. Zero values select the documented defaults.
type Options struct {
	// MaxSize bounds the total cost of entries in bytes (header + body + key + a fixed per-entry
	// overhead, i.e. real memory). Default 256 MiB.
	MaxSize int64
	// MaxItemSize is the largest body stored; larger answers are streamed through and not kept (the
	// copy is dropped the moment it would exceed this). Default 1 MiB.
	MaxItemSize int64
	// DefaultTTL is the freshness given to answers with no freshness information that do not ask to
	// be revalidated. 0 (default) follows RFC 9111: such answers are not reused without revalidation.
	DefaultTTL time.Duration
	// StaleWhileRevalidate lets a stale entry be served at once while it is refreshed in the
	// background, for this long past its freshness; the response directive of the same name also
	// applies (the longer window wins).
	StaleWhileRevalidate time.Duration
	// StaleIfError lets a stale entry be served when upstream fails (no answer or 500/502/503/504),
	// for this long past its freshness; the response directive of the same name also applies.
	StaleIfError time.Duration
	// Name is the cache's name in Cache-Status fields. Default "caddy-gateway".
	Name string
	// Runner runs background refreshes; nil revalidates synchronously instead.
	Runner Runner
	// Detach returns a copy of r usable after the client's request ended (background refresh), with a
	// cancel func the cache calls when done. nil: r.Clone of a context without cancel, bounded to one
	// minute.
	Detach func(r *http.Request) (*http.Request, context.CancelFunc)
	// Logger receives debug logs; nil means none.
	Logger *zap.Logger
	// Now is the clock used for ages and freshness; tests replace it. Default time.Now.
	Now func() time.Time
	// Keys holds per-service rules for the cache key (service name → rules); a service without
	// rules keys on its whole path and query, the default.
	Keys map[string]*KeyRules
	// TagHeaders are the answer fields whose tags (separated by commas or white space) index an
	// entry for PurgeTags. Nil: DefaultTagHeaders; empty: no tags.
	TagHeaders []string
	// Redis, when set, adds a shared second tier behind the local one (see RedisOptions): local miss →
	// Redis → upstream; stored answers go to both; Purge and invalidations reach every instance.
	Redis *RedisOptions
}

// Result says how Serve answered a request: the gateway's one vocabulary for it (outcome.Cache).
type Result = outcome.Cache

// Results of Serve (see outcome.Cache).
const (
	ResultBypass      = outcome.CacheBypass
	ResultHit         = outcome.CacheHit
	ResultMiss        = outcome.CacheMiss
	ResultStale       = outcome.CacheStale
	ResultRevalidated = outcome.CacheRevalidated
	ResultCollapsed   = outcome.CacheCollapsed
)

// Stats is a snapshot of the cache's counters, for the admin API and metrics.
type Stats struct {
	Entries     int   `json:"entries"`     // stored objects (responses and Vary markers)
	Bytes       int64 `json:"bytes"`       // total cost of stored objects
	MaxBytes    int64 `json:"max_bytes"`   // MaxSize
	Hits        int64 `json:"hits"`        // fresh answers from the cache
	Misses      int64 `json:"misses"`      // answers forwarded upstream
	Stale       int64 `json:"stale"`       // stale answers served
	Bypass      int64 `json:"bypass"`      // requests the cache did not take part in
	Revalidated int64 `json:"revalidated"` // entries confirmed by 304
	Coalesced   int64 `json:"coalesced"`   // requests that waited on a concurrent miss
	Stores      int64 `json:"stores"`      // entries admitted into the store
	Rejected    int64 `json:"rejected"`    // entries refused: larger than the store, or stored while closing
	Evictions   int64 `json:"evictions"`   // entries evicted (space or expiry)
	Purged      int64 `json:"purged"`      // entries removed by Purge or invalidation
	// Reasons counts, by service and reason (see Reason), why requests were not answered from the
	// cache or answers not stored.
	Reasons map[string]map[string]int64 `json:"reasons"`
	// Redis describes the shared tier; nil without one.
	Redis *RedisStats `json:"redis,omitempty"`
}

// Cache is a shared HTTP cache. Use New; all methods are safe for concurrent use. It is the RFC 9111
// policy (serve.go, freshness.go, coalesce.go): it keeps entries in its local tier (local.go) and,
// when configured, the shared Redis tier (redis*.go), and knows neither store's insides.
type Cache struct {
	opts Options
	now  func() time.Time
	log  *zap.Logger
	// tiers are the stores, asked in order: the local tier, then the Redis tier when configured.
	// hitStatus is the Cache-Status of a hit from each.
	tiers     []tier
	hitStatus []string
	// local is tiers[0]: Inspect reads what this instance holds, and purgedSince its purge log;
	// lookups and stores go through tiers.
	local  *localTier
	closed atomic.Bool
	fl     flights
	pass   *passKeys
	// keys are the compiled Options.Keys (nil: default keys everywhere).
	keys map[string]*KeyRules

	hits, misses, stale, bypass, revalidated, coalesced atomic.Int64
	reasons                                             reasonCounts
	decided                                             decisions

	// orphanLimit bounds a flight leader's exchange once its client left (see lead); tests shorten it.
	orphanLimit time.Duration

	hookFollower func() // tests: called when a request starts waiting on a concurrent fetch
	hookJoin     func() // tests: called before a GET miss joins (or starts) the flight of its key
	hookOrphan   func() // tests: called when a leader's client left and its fetch goes on without it
}

// New builds a Cache. Close it when the configuration is unloaded.
func New(opts Options) (*Cache, error) {
	if opts.MaxSize == 0 {
		opts.MaxSize = 256 << 20
	}
	if opts.MaxItemSize == 0 {
		opts.MaxItemSize = min(1<<20, opts.MaxSize) // a small cache needs no max_item_size of its own
	}
	if opts.Name == "" {
		opts.Name = "caddy-gateway"
	}
	switch {
	case opts.MaxSize < 0:
		return nil, fmt.Errorf("cache: max_size %d must be positive", opts.MaxSize)
	case opts.MaxItemSize < 0 || opts.MaxItemSize > opts.MaxSize:
		return nil, fmt.Errorf("cache: max_item_size %d must be positive and at most max_size %d", opts.MaxItemSize, opts.MaxSize)
	case opts.DefaultTTL < 0 || opts.StaleWhileRevalidate < 0 || opts.StaleIfError < 0:
		return nil, errors.New("cache: default_ttl, stale_while_revalidate and stale_if_error must not be negative")
	}
	c := &Cache{opts: opts, now: opts.Now, log: opts.Logger, orphanLimit: orphanLimit, pass: newPassKeys()}
	for svc, k := range opts.Keys {
		ck, err := compileKeyRules(k)
		if err != nil {
			return nil, fmt.Errorf("cache: key of service %q: %w", svc, err)
		}
		if ck != nil {
			if c.keys == nil {
				c.keys = make(map[string]*KeyRules, len(opts.Keys))
			}
			c.keys[svc] = ck
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	local := newLocalTier(opts.MaxSize)
	c.local, c.tiers, c.hitStatus = local, []tier{local}, []string{"hit"}
	if opts.Redis != nil {
		shared, err := newRedisTier(*opts.Redis, c.log, c.tiers[:1:1])
		if err != nil {
			local.close()
			return nil, err
		}
		c.tiers = append(c.tiers, shared)
		c.hitStatus = append(c.hitStatus, "hit; detail=redis")
	}
	return c, nil
}

// Close stops the tiers' goroutines and drops every entry. It is idempotent; after Close, Serve
// passes every request straight to fetch.
func (c *Cache) Close() {
	if c.closed.Swap(true) {
		return
	}
	for _, t := range c.tiers {
		t.close()
	}
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		MaxBytes:    c.opts.MaxSize,
		Hits:        c.hits.Load(),
		Misses:      c.misses.Load(),
		Stale:       c.stale.Load(),
		Bypass:      c.bypass.Load(),
		Revalidated: c.revalidated.Load(),
		Coalesced:   c.coalesced.Load(),
		Reasons:     c.reasons.snapshot(),
	}
	for _, t := range c.tiers {
		t.stats(&s)
	}
	return s
}

// Purge removes the entries of service ("" = every service) whose upstream-relative URL (path and
// query) is under pathPrefix ("" = all of them) and returns how many responses it removed (Vary
// markers not counted). "Under" stops at segment boundaries, so that purging one resource never
// takes its look-alike siblings: /x matches /x, /x?… and /x/…, but not /x2; a prefix ending in '/'
// or '?' (/x/, /x?) matches everything that starts with it. Paths are compared with their
// percent-escapes decoded (matchForm): /caf%C3%A9 and /café name the entry stored for either. Answers
// whose fetch was in flight when Purge ran are not stored afterwards.
// With a Redis tier it also removes them from Redis and, through pub/sub, from every other
// instance's local tier; it then returns the larger of the local and the Redis count (Redis holds
// what every instance stored). A Redis that is down is skipped (logged), never waited for.
func (c *Cache) Purge(service, pathPrefix string) int {
	return c.remove(context.Background(), purgeEvent{service: service, prefix: matchForm(pathPrefix)})
}

// remove applies a removal to every tier, in order, and returns the largest count: a later tier
// (Redis) holds what every instance stored. After Close only the first tier is asked.
func (c *Cache) remove(ctx context.Context, ev purgeEvent) int {
	n := 0
	for i, t := range c.tiers {
		if i > 0 && c.closed.Load() {
			break
		}
		n = max(n, t.remove(ctx, ev))
	}
	return n
}

// marks reads every tier's mark: an exchange reads them before it begins and hands them to
// storeResponse, which refuses the answer when a removal covering it came since.
func (c *Cache) marks() (m marks) {
	for i, t := range c.tiers {
		m[i] = t.mark()
	}
	return m
}

// storeOutcome says what became of an offered entry.
type storeOutcome uint8

const (
	storeAdmitted storeOutcome = iota // in the store
	storeRefused                      // the store could not take it (larger than the store, or closed)
	storeOutdated                     // a purge or invalidation covering it came after its fetch began
)

// retention is how long the store keeps e (wall clock): its freshness plus the stale windows, plus
// time to be revalidated when it has a validator. Vary markers live as long as any variant might.
func (c *Cache) retention(e *Entry) time.Duration {
	if e.Marker {
		return 0 // no expiry; replaced or evicted like any entry
	}
	keep := addSat(e.lifetime, max(e.swr, e.sie))
	if e.hasValidator() {
		keep = addSat(keep, max(time.Hour, e.lifetime))
	}
	return max(keep, time.Second)
}

// lookup asks tiers in order for r's entry (following Vary markers), copying what a later tier has
// into the earlier ones. It builds keys in buf; view is filled by a tier that reads in place (the
// local one). It returns the entry (nil on a miss), the (possibly grown) buffer holding the final
// lookup key, whether a marker was found without its variant, and the index of the tier that had
// the entry. A hit in the first tier does not allocate.
func (c *Cache) lookup(buf []byte, r *http.Request, service, auth string, view *Entry, tiers []tier) (e *Entry, key []byte, varyMiss bool, from int) {
	buf, baseLen := c.appendPrimaryKey(buf[:0], r, service, auth)
	primary := len(buf)
	q := query{service: service, key: buf, baseLen: baseLen}
	var mk marks
	for i, t := range tiers {
		if i > 0 {
			if c.closed.Load() {
				break
			}
			// Read before asking: what this tier answers may predate a removal that comes meanwhile.
			mk[i-1] = tiers[i-1].mark()
		}
		f := t.get(r.Context(), r.Header, q, view)
		q.key, q.varyMiss = f.key, f.varyMiss
		if f.failed {
			c.explain(service, "", 0, ReasonRedisError) // this miss could not ask the tier
		}
		copied := false
		if i > 0 && (f.e != nil || f.marker != nil) {
			copied = c.copyUp(f, tiers[:i], mk)
		}
		if f.settle != nil {
			f.settle(copied)
		}
		if f.e != nil {
			return f.e, q.key, false, i
		}
		if f.again {
			// A concurrent lookup found it here and copied it up: ask the earlier tiers again.
			e, key, varyMiss, _ = c.lookup(q.key[:primary], r, service, auth, view, tiers[:i])
			return e, key, varyMiss, i
		}
	}
	return nil, q.key, q.varyMiss, 0
}

// copyUp stores what a later tier found (the response and the marker followed to it) in the tiers
// before it, for what remains of its retention (its times are the original ones, so Age stays
// right); mk are those tiers' marks, read before the later tier was asked. It reports whether the
// first tier took the response.
func (c *Cache) copyUp(f found, tiers []tier, mk marks) bool {
	if f.marker != nil {
		f.marker.prepare(&c.opts)
	}
	if f.e == nil {
		for i, t := range tiers {
			t.put(nil, f.marker, 0, mk[i])
		}
		return false
	}
	f.e.prepare(&c.opts)
	ttl := c.retention(f.e) - f.e.age(c.now())
	if ttl <= 0 {
		return false
	}
	copied := false
	for i, t := range tiers {
		if t.put(f.marker, f.e, ttl, mk[i]) == storeAdmitted && i == 0 {
			copied = true
		}
	}
	return copied
}
