package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/caddy-gateway/internal/reqbody"
	"github.com/caddy-gateway/caddy-gateway/pool"
)

// Forward sends r to the service and streams the answer to w. r.URL.Path is
// the path relative to the service (what followed /api/{service}); the
// upstream base path is prepended here. It returns an *Error when nothing
// was written to w, or when the exchange failed after the answer started
// (then the error only reaches the logs: the client's connection is cut
// short by the reverse proxy).
func (s *Service) Forward(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()

	release, err := s.limiter.Acquire(ctx)
	if err != nil {
		return s.admissionError(r.Context(), err)
	}
	defer release()

	// The client's body is read under the exchange's deadline too; finish
	// is deferred after cancel so that it runs first.
	ctx, guard := guardBody(ctx, w, r)
	defer guard.finish()

	// A credential that cannot be had fails here, before the proxy: Caddy
	// would count a transport error against the upstream's health.
	if s.cred != nil {
		if _, err := s.cred.Token(ctx); err != nil {
			return s.credentialError(r.Context(), err)
		}
	}

	s.conns.Begin()
	defer s.conns.End()
	out := r.WithContext(ctx)
	if s.basePath != "" {
		u := *r.URL
		u.Path = s.basePath + u.Path
		if u.RawPath != "" {
			u.RawPath = s.basePath + u.RawPath
		}
		out.URL = &u
	}
	if guard != nil {
		out.Body = guard
	}

	s.budget.Request()
	body, replayable, err := s.replayableBody(out)
	if err != nil {
		return s.bodyError(r.Context(), ctx, err)
	}
	if !replayable || s.retries == 0 {
		return s.mapError(r.Context(), ctx, s.proxy.ServeHTTP(w, out, nopNext))
	}

	for attempt := 0; ; attempt++ {
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		if attempt == s.retries {
			return s.mapError(r.Context(), ctx, s.proxy.ServeHTTP(w, out, nopNext))
		}
		hw := &holdWriter{ResponseWriter: w}
		err := s.proxy.ServeHTTP(hw, out, nopNext)
		retryable := hw.held || (err != nil && !hw.wrote && retryableError(err))
		if retryable && ctx.Err() == nil && s.budget.TryRetry() {
			delay := s.backoff.Delay(attempt)
			if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > delay {
				if sleepCtx(ctx, delay) {
					s.retried.Add(1)
					if s.OnRetry != nil {
						s.OnRetry()
					}
					s.logger.Debug("retrying upstream request", zap.String("service", s.Name),
						zap.Int("attempt", attempt+1), zap.Duration("backoff", delay), zap.Int("status", hw.status))
					continue
				}
			}
		}
		if hw.held {
			if hw.release() {
				return nil
			}
			return &Error{Status: hw.status, Service: s.Name, Message: "upstream answered " + strconv.Itoa(hw.status)}
		}
		return s.mapError(r.Context(), ctx, err)
	}
}

// replayableBody buffers the request body, when the request may be retried
// and its body is small enough, so that it can be sent again (reqbody.Replay).
func (s *Service) replayableBody(r *http.Request) ([]byte, bool, error) {
	if s.retries == 0 || !pool.IsIdempotent(r) {
		return nil, false, nil
	}
	return reqbody.Replay(r, DefaultMaxRetryBody)
}

// retryableError reports whether err means no answer was obtained from an
// upstream (connection refused or reset, no healthy target) as opposed to a
// client that went away.
func retryableError(err error) bool {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return he.StatusCode == http.StatusBadGateway || he.StatusCode == http.StatusServiceUnavailable ||
			he.StatusCode == http.StatusGatewayTimeout
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
