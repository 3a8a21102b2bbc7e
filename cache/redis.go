package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
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
// (CLIENT TRACKING), does not fit: our local tier is ristretto with its own byte bound, purge index
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

// storeScript stores 1 or 2 entries (a response and its Vary marker) and indexes them (by URL and
// by tag), then trims expired index members. KEYS: lex index, expiry index, entry keys...; ARGV: the
// service's tag key prefix, then per entry: value, ttl ms, index member, keep (1: never shorten the
// key's current TTL), tags (newline-separated, "" for none). All keys are of one service (one slot).
var storeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #KEYS do
  local a = 2 + (i - 3) * 5
  local ttl = tonumber(ARGV[a + 1])
  if ARGV[a + 3] == '1' then
    local p = redis.call('PTTL', KEYS[i])
    if p > ttl then ttl = p end
  end
  redis.call('SET', KEYS[i], ARGV[a], 'PX', ttl)
  redis.call('ZADD', KEYS[1], 0, ARGV[a + 2])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[a + 2])
  if ARGV[a + 4] ~= '' then
    for tag in string.gmatch(ARGV[a + 4], '[^\n]+') do
      local tk = ARGV[1] .. tag
      redis.call('SADD', tk, ARGV[a + 2])
      local p = redis.call('PTTL', tk)
      if p == -1 or p < ttl then redis.call('PEXPIRE', tk, ttl) end
    end
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
return #KEYS - 2
`)

// purgeScript removes up to ARGV[4] indexed entries whose member lies in the lex range ARGV[1]..ARGV[2]
// (a path prefix, or one base key). KEYS: lex index, expiry index; ARGV[3]: the service's entry key
// prefix. Returns {members removed, responses removed}.
var purgeScript = redis.NewScript(`
local ms = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local resp = 0
for _, m in ipairs(ms) do
  if redis.call('UNLINK', ARGV[3] .. string.sub(m, -49, -2)) == 1 and string.sub(m, -1) == 'e' then
    resp = resp + 1
  end
end
if #ms > 0 then
  redis.call('ZREM', KEYS[1], unpack(ms))
  redis.call('ZREM', KEYS[2], unpack(ms))
end
return {#ms, resp}
`)

// tagPurgeScript removes the entries whose index members the tag set KEYS[1] holds from the entries
// and both indexes (KEYS[2] lex, KEYS[3] expiry), then the set; ARGV[1] is the service's entry key
// prefix. Returns the responses removed. All keys are of one service (one slot).
var tagPurgeScript = redis.NewScript(`
local ms = redis.call('SMEMBERS', KEYS[1])
local resp = 0
for _, m in ipairs(ms) do
  if redis.call('UNLINK', ARGV[1] .. string.sub(m, -49, -2)) == 1 and string.sub(m, -1) == 'e' then
    resp = resp + 1
  end
end
if #ms > 0 then
  redis.call('ZREM', KEYS[2], unpack(ms))
  redis.call('ZREM', KEYS[3], unpack(ms))
end
redis.call('UNLINK', KEYS[1])
return resp
`)

// redisTier is the shared second tier of a Cache.
type redisTier struct {
	hooks  redisHooks // the cache above, as far as the tier needs it
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

type redisWrite struct {
	epoch  uint64
	marker *Entry // Vary marker stored with the response, or nil
	entry  *Entry
	ttl    time.Duration
}

// redisMsg is one pub/sub message.
type redisMsg struct {
	From    string   `json:"from"`
	Op      string   `json:"op"` // "purge" or "invalidate"
	Service string   `json:"service"`
	Prefix  string   `json:"prefix,omitempty"`
	Tags    []string `json:"tags,omitempty"`  // "tags": a purge by tag
	Bases   [][]byte `json:"bases,omitempty"` // base keys (invalidate)
}

func newRedisTier(o RedisOptions, hooks redisHooks) (*redisTier, error) {
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
		hooks:  hooks,
		log:    hooks.log,
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

func (t *redisTier) stats() *RedisStats {
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

// backoff is the pause after the n-th consecutive failure: exponential from BackoffMin, capped at
// BackoffMax, with "equal jitter" (between half and all of it).
func (t *redisTier) backoff(n int64) time.Duration {
	d := t.opts.BackoffMin
	for i := int64(1); i < n && d < t.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, t.opts.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// fail records a failed command: an error the server answered (e.g. OOM, LOADING) leaves the tier
// up; anything else (timeout, refused, reset, pool exhausted) marks it down. ctx's own cancellation
// by the client is not the tier's fault and is not counted.
func (t *redisTier) fail(ctx context.Context, err error) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return // the client went away, or the tier is closing
	}
	t.errs.Add(1)
	var rerr redis.Error
	if errors.As(err, &rerr) {
		t.log.Debug("redis command failed", zap.Error(err))
		return
	}
	t.markDown(err)
}

// markDown skips the tier until a background probe succeeds.
func (t *redisTier) markDown(err error) {
	if t.ctx.Err() != nil || !t.up.CompareAndSwap(true, false) {
		return
	}
	now := time.Now()
	lvl := int64(1)
	if now.Sub(time.Unix(0, t.upSince.Load())) < t.opts.BackoffMax {
		lvl = t.level.Load() + 1 // flapping: keep escalating
	}
	t.level.Store(lvl)
	t.failures.Store(0)
	t.downSince.Store(now.UnixNano())
	t.nextProbe.Store(now.Add(t.backoff(lvl)).UnixNano())
	t.log.Warn("redis cache tier down; serving from the local tier and upstream", zap.Error(err))
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func (t *redisTier) markUp() {
	t.upSince.Store(time.Now().UnixNano())
	t.up.Store(true)
	t.log.Info("redis cache tier up again",
		zap.Duration("down_for", time.Since(time.Unix(0, t.downSince.Load()))))
}

// ping checks the server off the request path.
func (t *redisTier) ping() error {
	ctx, cancel := context.WithTimeout(t.ctx, t.opts.DialTimeout+t.opts.ReadTimeout+t.opts.WriteTimeout)
	defer cancel()
	return t.client.Ping(ctx).Err()
}

// prober brings a down tier back: it probes when the backoff has passed, escalating on failure.
func (t *redisTier) prober() {
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.kick:
		}
		for !t.up.Load() {
			if !t.sleep(time.Until(time.Unix(0, t.nextProbe.Load()))) {
				return
			}
			if err := t.ping(); err == nil {
				t.markUp()
				break
			} else if t.ctx.Err() != nil {
				return
			} else {
				t.failures.Add(1)
				lvl := t.level.Add(1)
				t.nextProbe.Store(time.Now().Add(t.backoff(lvl)).UnixNano())
				t.log.Debug("redis probe failed", zap.Error(err))
			}
		}
	}
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

// lookup is the request path after a local miss: it asks Redis for the key in buf (a primary key,
// or a variant key when the local tier had the Vary marker), hands what it finds (a marker, then
// the variant) to found, and returns the entry, the final lookup key and whether a marker was found
// without its variant. Concurrent lookups of one key make one Redis request: a request that waited
// for another's gets again = true when that one found the entry (the caller looks it up locally).
// It never takes longer than Timeout.
func (t *redisTier) lookup(r *http.Request, service string, buf []byte, baseLen int, varyMiss bool,
	found func(*Entry)) (e *Entry, key []byte, vm, again bool) {
	if !t.up.Load() {
		t.skipped.Add(1)
		return nil, buf, varyMiss, false
	}
	start := time.Now()
	if t.hookLookup != nil {
		defer func() { t.hookLookup(time.Since(start)) }()
	}
	fkey := string(buf)
	fl, leader := t.lookups.join(fkey)
	if !leader {
		tm := time.NewTimer(t.opts.Timeout)
		defer tm.Stop()
		select {
		case <-fl.done:
		case <-tm.C:
			return nil, buf, varyMiss, false
		case <-r.Context().Done():
			return nil, buf, varyMiss, false
		}
		return nil, buf, varyMiss, fl.stored
	}
	ctx, cancel := context.WithTimeout(r.Context(), t.opts.Timeout)
	defer cancel()
	e, buf, varyMiss = t.fetch(ctx, r, service, buf, baseLen, varyMiss, found)
	t.lookups.finish(fkey, fl, e != nil, nil)
	return e, buf, varyMiss, false
}

func (t *redisTier) fetch(ctx context.Context, r *http.Request, service string, buf []byte, baseLen int, varyMiss bool,
	found func(*Entry)) (*Entry, []byte, bool) {
	if !varyMiss {
		e, ok := t.get(ctx, service, buf, baseLen)
		if e == nil {
			if ok {
				t.misses.Add(1)
			}
			return nil, buf, false
		}
		if !e.Marker {
			t.hits.Add(1)
			found(e)
			return e, buf, false
		}
		found(e)
		buf = appendVariantKey(buf, e.Vary, r.Header)
	}
	e, ok := t.get(ctx, service, buf, baseLen)
	if e == nil || e.Marker {
		if ok {
			t.misses.Add(1)
		}
		return nil, buf, true
	}
	t.hits.Add(1)
	found(e)
	return e, buf, false
}

// get reads and decodes one entry; ok is false when the command failed or the value was corrupt.
func (t *redisTier) get(ctx context.Context, service string, key []byte, baseLen int) (e *Entry, ok bool) {
	rk, _ := t.entryKey(service, key, baseLen)
	b, err := t.client.Get(ctx, rk).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, true
	}
	if err != nil {
		t.fail(ctx, err)
		return nil, false
	}
	e = new(Entry)
	if err := e.UnmarshalBinary(b); err != nil || e.Key != string(key) || e.BaseLen != baseLen || e.Service != service {
		if err == nil {
			err = fmt.Errorf("%w: stored under another key", ErrCorruptEntry)
		}
		t.corrupt.Add(1)
		t.errs.Add(1)
		t.log.Debug("ignoring a corrupt value in redis", zap.String("key", rk), zap.Error(err))
		return nil, false
	}
	return e, true
}

// fence moves the tier's epoch: every purge or invalidation of the local tier calls it (under the
// store lock), so that a write taken before it is dropped, or undone when it lands after it.
func (t *redisTier) fence() { t.epoch.Add(1) }

// currentEpoch is read by a store before it checks the purge log (see enqueue).
func (t *redisTier) currentEpoch() uint64 { return t.epoch.Load() }

// isUp reports whether the tier is being asked (false while skipped after an error).
func (t *redisTier) isUp() bool { return t.up.Load() }

// enqueue hands a stored response (and its Vary marker) to the background writers, to keep for
// ttl. epoch (currentEpoch) was read before the local store checked the purge log: a purge or
// invalidation that store did not see has fenced the tier since, and the write is dropped or undone.
func (t *redisTier) enqueue(marker, e *Entry, ttl time.Duration, epoch uint64) {
	if !t.up.Load() {
		t.dropped.Add(1)
		return
	}
	if ttl <= 0 {
		return
	}
	select {
	case t.writes <- redisWrite{epoch: epoch, marker: marker, entry: e, ttl: max(ttl, time.Second)}:
	default:
		t.dropped.Add(1)
	}
}

func (t *redisTier) writer() {
	for {
		select {
		case <-t.ctx.Done():
			return
		case w := <-t.writes:
			t.write(w)
		}
	}
}

func (t *redisTier) member(e *Entry, suffix string) string {
	kind := "e"
	if e.Marker {
		kind = "m"
	}
	return e.URL + "\x00" + suffix + kind
}

func (t *redisTier) write(w redisWrite) {
	if !t.up.Load() || w.epoch != t.epoch.Load() {
		t.dropped.Add(1)
		return
	}
	e := w.entry
	service := e.Service
	ttl := w.ttl.Milliseconds()
	keys := []string{t.lexKey(service), t.expKey(service)}
	args := []any{t.tagKey(service, "")}
	var written []string
	for _, x := range []*Entry{e, w.marker} {
		if x == nil {
			continue
		}
		val, err := x.MarshalBinary()
		if err != nil {
			return
		}
		rk, suffix := t.entryKey(service, []byte(x.Key), x.BaseLen)
		keys = append(keys, rk)
		keep := "0"
		if x.Marker {
			keep = "1"
		}
		args = append(args, val, ttl, t.member(x, suffix), keep, strings.Join(x.tags, "\n"))
		written = append(written, rk)
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.opts.DialTimeout+t.opts.WriteTimeout+t.opts.ReadTimeout)
	defer cancel()
	if err := storeScript.Run(ctx, t.client, keys, args...).Err(); err != nil {
		t.fail(ctx, err)
		return
	}
	if err := t.client.SAdd(ctx, t.servicesKey(), service).Err(); err != nil {
		t.fail(ctx, err)
		return
	}
	if w.epoch != t.epoch.Load() {
		// A purge or invalidation started while we wrote: it may have run before our write landed.
		t.client.Unlink(ctx, written...)
		t.dropped.Add(1)
		return
	}
	t.written.Add(1)
}

// lexRange returns the ZRANGEBYLEX bounds of the members whose text starts with p.
func lexRange(p string) (lo, hi string) {
	if p == "" {
		return "-", "+"
	}
	b := []byte(p)
	for len(b) > 0 && b[len(b)-1] == 0xff {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "[" + p, "+"
	}
	b[len(b)-1]++
	return "[" + p, "(" + string(b)
}

// purgePrefixes are the member prefixes (members are URL "\x00" ...) that hold the entries under a
// purge prefix as underPrefix defines it: the URL itself and what continues it after '/' or '?'.
func purgePrefixes(prefix string) []string {
	if prefix == "" || strings.HasSuffix(prefix, "/") || strings.HasSuffix(prefix, "?") {
		return []string{prefix}
	}
	return []string{prefix + "\x00", prefix + "/", prefix + "?"}
}

// purge removes the entries of service ("" = all) under the path prefix from Redis and tells the
// other instances to drop them from their local tiers. It returns the responses removed from Redis.
func (t *redisTier) purge(service, prefix string) int {
	t.epoch.Add(1)
	if !t.up.Load() {
		t.log.Warn("redis cache tier down: purge not applied to redis nor other instances",
			zap.String("service", service), zap.String("prefix", prefix))
		return 0
	}
	ctx, cancel := context.WithTimeout(t.ctx, purgeTimeout)
	defer cancel()
	services, ok := t.purgeServices(ctx, service)
	if !ok {
		return 0
	}
	n := 0
	for _, svc := range services {
		for _, p := range purgePrefixes(prefix) {
			lo, hi := lexRange(p)
			for {
				res, err := purgeScript.Run(ctx, t.client, []string{t.lexKey(svc), t.expKey(svc)},
					lo, hi, t.entryPrefix(svc), purgeBatch).Int64Slice()
				if err != nil || len(res) != 2 {
					t.fail(ctx, fmt.Errorf("purge: %v %w", res, err))
					return n
				}
				n += int(res[1])
				if res[0] < purgeBatch {
					break
				}
			}
		}
	}
	t.purged.Add(int64(n))
	t.publish(ctx, redisMsg{From: t.id, Op: "purge", Service: service, Prefix: prefix})
	return n
}

// purgeServices are the services a purge of service ("" = all, as P:services lists them) covers;
// ok is false when Redis could not say.
func (t *redisTier) purgeServices(ctx context.Context, service string) (services []string, ok bool) {
	if service != "" {
		return []string{service}, true
	}
	services, err := t.client.SMembers(ctx, t.servicesKey()).Result()
	if err != nil {
		t.fail(ctx, err)
		return nil, false
	}
	return services, true
}

// purgeTags removes the entries of service ("" = all) carrying one of tags from Redis and tells the
// other instances to drop them from their local tiers. It returns the responses removed from Redis.
func (t *redisTier) purgeTags(service string, tags []string) int {
	t.epoch.Add(1)
	if !t.up.Load() {
		t.log.Warn("redis cache tier down: tag purge not applied to redis nor other instances",
			zap.String("service", service), zap.Strings("tags", tags))
		return 0
	}
	ctx, cancel := context.WithTimeout(t.ctx, purgeTimeout)
	defer cancel()
	services, ok := t.purgeServices(ctx, service)
	if !ok {
		return 0
	}
	n := 0
	for _, svc := range services {
		for _, tag := range tags {
			res, err := tagPurgeScript.Run(ctx, t.client, []string{t.tagKey(svc, tag), t.lexKey(svc), t.expKey(svc)},
				t.entryPrefix(svc)).Int64()
			if err != nil {
				t.fail(ctx, fmt.Errorf("tag purge: %w", err))
				return n
			}
			n += int(res)
		}
	}
	t.purged.Add(int64(n))
	t.publish(ctx, redisMsg{From: t.id, Op: "tags", Service: service, Tags: tags})
	return n
}

// baseRef names one URL's entries for invalidation.
type baseRef struct {
	url  string // path?query, as in Entry.URL
	base []byte // base key
}

// invalidate removes every entry under the given base keys from Redis and tells the other instances
// (one pipelined round trip), within Timeout of the request's context.
func (t *redisTier) invalidate(ctx context.Context, service string, refs []baseRef) {
	t.epoch.Add(1)
	if !t.up.Load() {
		t.skipped.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	msg := redisMsg{From: t.id, Op: "invalidate", Service: service}
	pipe := t.client.Pipeline()
	cmds := make([]*redis.Cmd, 0, len(refs))
	for _, ref := range refs {
		bh := sha256.Sum256(ref.base)
		p := ref.url + "\x00" + hex.EncodeToString(bh[:8])
		cmds = append(cmds, purgeScript.Eval(ctx, pipe, []string{t.lexKey(service), t.expKey(service)},
			"["+p, "("+p+"~", t.entryPrefix(service), purgeBatch))
		msg.Bases = append(msg.Bases, ref.base)
	}
	payload, _ := json.Marshal(msg)
	pipe.Publish(ctx, t.channel(), payload)
	if _, err := pipe.Exec(ctx); err != nil {
		t.fail(ctx, err)
		return
	}
	for _, cmd := range cmds {
		if res, err := cmd.Int64Slice(); err == nil && len(res) == 2 {
			t.purged.Add(res[1])
		}
	}
}

func (t *redisTier) publish(ctx context.Context, msg redisMsg) {
	payload, _ := json.Marshal(msg)
	if err := t.client.Publish(ctx, t.channel(), payload).Err(); err != nil {
		t.fail(ctx, err)
	}
}

// subscriber keeps a subscription to the purge channel, reconnecting with backoff. Every
// subscription after the first flushes the local tier: messages sent while it was lost are gone.
func (t *redisTier) subscriber() {
	first := true
	var lvl int64
	for t.ctx.Err() == nil {
		err := t.subscribeOnce(&first)
		if t.ctx.Err() != nil {
			return
		}
		if err == nil {
			lvl = 0
		}
		lvl++
		t.log.Debug("redis subscription lost; reconnecting", zap.Error(err))
		if !t.sleep(t.backoff(lvl)) {
			return
		}
	}
}

func (t *redisTier) subscribeOnce(first *bool) error {
	ps := t.client.Subscribe(t.ctx, t.channel())
	t.psMu.Lock()
	if t.ctx.Err() != nil {
		t.psMu.Unlock()
		_ = ps.Close()
		return t.ctx.Err()
	}
	t.ps = ps
	t.psMu.Unlock()
	defer func() {
		t.psMu.Lock()
		t.ps = nil
		t.psMu.Unlock()
		_ = ps.Close()
	}()
	// The confirmation proves the subscription is in place.
	msg, err := ps.ReceiveTimeout(t.ctx, t.opts.DialTimeout+t.opts.ReadTimeout+t.opts.WriteTimeout)
	if err != nil {
		return err
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		return fmt.Errorf("unexpected first pub/sub message %T", msg)
	}
	if !*first {
		t.resyncs.Add(1)
		t.epoch.Add(1)
		t.hooks.resync()
		t.log.Info("redis subscription restored; local cache tier flushed (invalidations may have been missed)")
	}
	*first = false
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(t.ctx, subscribeIdle)
		if err != nil {
			if t.ctx.Err() != nil {
				return err
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				pinged = true
				pctx, cancel := context.WithTimeout(t.ctx, t.opts.WriteTimeout+t.opts.DialTimeout)
				perr := ps.Ping(pctx)
				cancel()
				if perr == nil {
					continue
				}
				return perr
			}
			return err
		}
		pinged = false
		if m, ok := msg.(*redis.Message); ok {
			t.handle(m.Payload)
		}
	}
}

// handle applies another instance's purge or invalidation to the local tier.
func (t *redisTier) handle(payload string) {
	var m redisMsg
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.From == t.id {
		return
	}
	switch m.Op {
	case "purge":
		t.epoch.Add(1)
		t.hooks.purged(m.Service, m.Prefix)
	case "invalidate":
		t.epoch.Add(1)
		t.hooks.invalidated(m.Service, m.Bases)
	case "tags":
		if len(m.Tags) == 0 {
			return // never "everything"
		}
		t.epoch.Add(1)
		t.hooks.tagsPurged(m.Service, m.Tags)
	default:
		return
	}
	t.received.Add(1)
}
