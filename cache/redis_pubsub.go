package cache

// Pub/sub of the Redis tier: purges and invalidations between the instances sharing it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisMsg is one pub/sub message.
type redisMsg struct {
	From    string   `json:"from"`
	Op      string   `json:"op"` // "purge" or "invalidate"
	Service string   `json:"service"`
	Prefix  string   `json:"prefix,omitempty"`
	Tags    []string `json:"tags,omitempty"`  // "tags": a purge by tag
	Bases   [][]byte `json:"bases,omitempty"` // base keys (invalidate)
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
		t.applyAbove(purgeEvent{}) // everything
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

// handle applies another instance's purge or invalidation to the tiers before this one.
func (t *redisTier) handle(payload string) {
	var m redisMsg
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.From == t.id {
		return
	}
	ev := purgeEvent{service: m.Service}
	switch m.Op {
	case "purge":
		ev.prefix = matchForm(m.Prefix)
	case "invalidate":
		ev.refs = make([]baseRef, len(m.Bases))
		for i, b := range m.Bases {
			ev.refs[i].base = b
		}
	case "tags":
		if len(m.Tags) == 0 {
			return // never "everything"
		}
		ev.tags = m.Tags
	default:
		return
	}
	t.epoch.Add(1)
	t.applyAbove(ev)
	t.received.Add(1)
}

// applyAbove applies a removal to the tiers before this one (never to Redis: the instance that
// published it removed it there).
func (t *redisTier) applyAbove(ev purgeEvent) {
	for _, a := range t.above {
		a.remove(t.ctx, ev)
	}
}
