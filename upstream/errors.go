package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-gateway/caddy-gateway/auth"
	"github.com/caddy-gateway/caddy-gateway/internal/outcome"
	"github.com/caddy-gateway/caddy-gateway/pool"
)

// StatusClientClosedRequest is the non-standard status Caddy (and nginx)
// record when the client went away before an answer; nothing is written.
const StatusClientClosedRequest = 499

// Error is a failed exchange with a service, carrying what the gateway
// answers the client: a status and a message safe to show (never the
// upstream's address, never a token). Err keeps the cause for the logs.
type Error struct {
	Status     int
	Service    string
	Message    string
	RetryAfter time.Duration // set on 503 answers from admission control
	Err        error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("service %q: %s", e.Service, e.Message)
	}
	return fmt.Sprintf("service %q: %s: %v", e.Service, e.Message, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Kind classifies the failure for metrics: the client gone before the
// answer, a bad request (its body broken off or too slow), a timeout, a
// queue rejection, or an upstream failure.
func (e *Error) Kind() outcome.Error {
	switch {
	case e.Status == StatusClientClosedRequest:
		return outcome.ErrorClient
	case e.Status == http.StatusBadRequest || e.Status == http.StatusRequestTimeout:
		return outcome.ErrorBadRequest
	case e.Status == http.StatusGatewayTimeout:
		return outcome.ErrorTimeout
	case e.RetryAfter > 0:
		return outcome.ErrorQueue
	}
	return outcome.ErrorUpstream
}

// mapError turns what the reverse proxy returned into an *Error. clientCtx
// is the client's request context, ctx the exchange's (with the timeout).
func (s *Service) mapError(clientCtx, ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Status: http.StatusBadGateway, Service: s.Name, Message: "upstream unavailable", Err: err}
	if clientFault(e, clientCtx, ctx) {
		return e
	}
	var he caddyhttp.HandlerError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		e.Status, e.Message = http.StatusGatewayTimeout, "upstream timeout"
	case errors.As(err, &he):
		switch he.StatusCode {
		case http.StatusServiceUnavailable:
			e.Status, e.Message = http.StatusServiceUnavailable, "no healthy upstream"
		case http.StatusGatewayTimeout:
			e.Status, e.Message = http.StatusGatewayTimeout, "upstream timeout"
		}
	}
	return e
}

// msgBodyTimeout answers a client whose request body did not arrive within
// the service's timeout.
const msgBodyTimeout = "request body timeout: the body did not arrive in time"

// bodyError answers a request whose body could not be read before it was
// forwarded (buffered for retries): the client's doing, never counted
// against the upstream.
func (s *Service) bodyError(clientCtx, ctx context.Context, err error) error {
	e := &Error{Status: http.StatusBadRequest, Service: s.Name, Message: "request body incomplete", Err: err}
	if !clientFault(e, clientCtx, ctx) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// the time ran out between two reads of a trickling body
		e.Status, e.Message = http.StatusRequestTimeout, msgBodyTimeout
	}
	return e
}

// clientFault sets e for the failures that are the client's doing — its
// body stalled past the timeout (checked first: cutting the stalled read
// short also cancels the client's context), or it went away — and reports
// whether one applied.
func clientFault(e *Error, clientCtx, ctx context.Context) bool {
	switch {
	case guardFrom(ctx).stalledBody():
		e.Status, e.Message = http.StatusRequestTimeout, msgBodyTimeout
	case clientCtx.Err() != nil:
		e.Status, e.Message = StatusClientClosedRequest, "client closed request"
	default:
		return false
	}
	return true
}

// admissionError answers a request that could not get a slot.
func (s *Service) admissionError(clientCtx context.Context, err error) error {
	e := &Error{Status: http.StatusServiceUnavailable, Service: s.Name, RetryAfter: time.Second, Err: err}
	switch {
	case clientCtx.Err() != nil:
		e.Status, e.Message, e.RetryAfter = StatusClientClosedRequest, "client closed request", 0
	case errors.Is(err, pool.ErrQueueFull):
		e.Message = "service overloaded: queue full"
	default: // queue timeout or the exchange deadline passed while queued
		e.Message = "service overloaded: queue timeout"
	}
	return e
}

// credentialError answers a request whose service token could not be
// obtained. The client's own Authorization is never sent instead.
func (s *Service) credentialError(clientCtx context.Context, err error) error {
	e := &Error{Status: http.StatusBadGateway, Service: s.Name, Message: auth.MsgUnavailable, Err: err}
	var ae *auth.Error
	if errors.As(err, &ae) {
		e.Status, e.Message = ae.Status, ae.Message
	}
	if clientCtx.Err() != nil {
		e.Status, e.Message = StatusClientClosedRequest, "client closed request"
	}
	return e
}
