package cache

// Purges of the Redis tier: by path prefix, by tag, and invalidations after unsafe methods.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

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
