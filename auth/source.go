// Package auth provides the credential the gateway sends to each service:
// a static token, a token file that is re-read when it changes (mounted
// secrets rotate without a config reload), or an OAuth2 client-credentials
// token that is fetched on first use, cached, refreshed ahead of expiry and
// re-fetched when the service rejects it.
//
// Every Source is safe for concurrent use. None of them ever puts a token
// or a client secret into an error string, a log entry or its State: those
// end up in JSON error bodies, logs and admin answers, which are read by
// people who must not learn the credential.
package auth

import (
	"context"
	"net/http"
	"time"
)

// Source yields the credential the gateway sends to one service.
//
// The transport calls Token once per upstream request (it is cheap when the
// token is cached: a mutex or an atomic load) and Invalidate when the
// upstream answers 401 to a request made with that token.
type Source interface {
	// Token returns the current bearer token, fetching or refreshing it if
	// needed. Concurrent callers share one fetch. Errors are *Error values
	// whose Message is safe to show a client; no error text ever contains a
	// secret.
	Token(ctx context.Context) (string, error)
	// Invalidate tells the source that token was rejected by the upstream
	// (401): the next Token call obtains a new one, unless a newer token was
	// already obtained meanwhile, so N concurrent 401s cause one refresh.
	Invalidate(token string)
	// State reports the credential's health for /gateway/health. It never
	// contains the token or a secret.
	State() State
	// Close stops background work (in-flight fetches) and releases idle
	// connections to the token endpoint. It is idempotent. A token still
	// valid when Close is called keeps being served, so requests already in
	// flight during a config reload finish normally.
	Close()
}

// Kinds of Source, as State.Kind reports them.
const (
	KindStatic = "static"
	KindFile   = "file"
	KindOAuth2 = "oauth2"
)

// States of a Source, as State.State reports them.
const (
	// StateOK: the last fetch or read succeeded.
	StateOK = "ok"
	// StateRefreshing: a fetch is in flight and no fetch has failed since
	// the last success (first fetch, refresh-ahead, or after a 401).
	StateRefreshing = "refreshing"
	// StateFailing: the last fetch or re-read failed. A cached token may
	// still be served: ExpiresInSeconds tells for how long.
	StateFailing = "failing"
)

// State is what /gateway/health shows about a service's credential. It is
// built for JSON and deliberately has no field that could hold a token or
// secret: LastError is the sanitized description also used in logs.
type State struct {
	// Kind is "static", "file" or "oauth2".
	Kind string `json:"kind"`
	// State is "ok", "refreshing" or "failing". An OAuth2 source not used
	// yet is "ok" with no fetches and no expires_in_seconds.
	State string `json:"state"`
	// FailingSince is when the current run of failures began.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// LastError describes the last failure of the current run (no secrets).
	LastError string `json:"last_error,omitempty"`
	// ExpiresInSeconds is how long the cached token remains usable; absent
	// when there is none or it does not expire.
	ExpiresInSeconds *int64 `json:"expires_in_seconds,omitempty"`
	// RetryInSeconds is how long the source waits before contacting the
	// token endpoint again after failures (OAuth2 only, while backing off).
	RetryInSeconds *int64 `json:"retry_in_seconds,omitempty"`
	// Fetches counts successful fetches (OAuth2) or reads (file).
	Fetches int64 `json:"fetches"`
	// Failures counts failed fetches or re-reads.
	Failures int64 `json:"failures"`
	// RefreshedAt is when the token in use was obtained (OAuth2) or the
	// file last read; absent for a static token or before the first.
	RefreshedAt *time.Time `json:"refreshed_at,omitempty"`
}

// Error is what Token returns when it has no usable token. Status is the
// HTTP status the gateway should answer with: 502 when the token endpoint
// failed, 503 while the source backs off after failures (it did not contact
// the endpoint), 504 when the caller's own deadline expired while waiting.
// Message is short, fixed text safe to show a client; Err carries the
// sanitized cause for logs. Neither ever contains a token or secret.
type Error struct {
	Status  int
	Message string
	Err     error
}

// Error returns Message and the sanitized cause: for logs, not for clients
// (it may name internal addresses). Clients should get Message only.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Message
	}
	return e.Message + ": " + e.Err.Error()
}

// Unwrap exposes the cause, so errors.Is(err, context.Canceled) works.
func (e *Error) Unwrap() error { return e.Err }

// MsgUnavailable is the client-facing message of every token endpoint
// failure: a client can do nothing with more detail, and detail may name
// internal hosts.
const MsgUnavailable = "token endpoint unavailable"

func unavailable(status int, cause error) *Error {
	return &Error{Status: status, Message: MsgUnavailable, Err: cause}
}

// ctxError turns the caller's context ending while it waited for a shared
// fetch into an *Error. The fetch itself goes on for the other callers.
func ctxError(err error) *Error {
	if err == context.DeadlineExceeded {
		return &Error{Status: http.StatusGatewayTimeout, Message: "token endpoint timed out", Err: err}
	}
	return unavailable(http.StatusBadGateway, err)
}

// Static returns a Source that always yields token. It exists so that the
// transport handles every service through one interface.
func Static(token string) Source { return staticSource(token) }

type staticSource string

func (s staticSource) Token(context.Context) (string, error) { return string(s), nil }
func (staticSource) Invalidate(string)                       {}
func (staticSource) Close()                                  {}
func (staticSource) State() State                            { return State{Kind: KindStatic, State: StateOK} }

// clock is the time source of the file and OAuth2 sources; tests replace it
// to cross expiries and backoffs without sleeping.
type clock func() time.Time

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func secondsUntil(now, t time.Time) *int64 {
	d := max(t.Sub(now), 0)
	s := int64((d + time.Second - 1) / time.Second) // round up: 0 means gone
	return &s
}
