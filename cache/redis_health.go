package cache

// The Redis tier's health: failures mark it down, a background probe brings it back with backoff.

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

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

// isUp reports whether the tier is being asked (false while skipped after an error).
func (t *redisTier) isUp() bool { return t.up.Load() }
