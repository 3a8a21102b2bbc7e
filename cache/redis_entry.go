package cache

// Entry I/O of the Redis tier: lookups on the request path, writes in the background.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
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

type redisWrite struct {
	epoch  uint64
	marker *Entry // Vary marker stored with the response, or nil
	entry  *Entry
	ttl    time.Duration
}

// getOne reads and decodes one entry; ok is false when the command failed or the value was corrupt.
func (t *redisTier) getOne(ctx context.Context, service string, key []byte, baseLen int) (e *Entry, ok bool) {
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

// put implements tier: it hands a response (and its Vary marker) to the background writers, to
// keep for ttl. epoch (mark) was read before the exchange began: a removal since has moved the
// epoch, and the write is dropped, or undone when it was in flight.
func (t *redisTier) put(marker, e *Entry, ttl time.Duration, epoch uint64) storeOutcome {
	if !t.up.Load() {
		t.dropped.Add(1)
		return storeRefused
	}
	if ttl <= 0 || e.Marker {
		return storeRefused
	}
	select {
	case t.writes <- redisWrite{epoch: epoch, marker: marker, entry: e, ttl: max(ttl, time.Second)}:
		return storeAdmitted
	default:
		t.dropped.Add(1)
		return storeRefused
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
