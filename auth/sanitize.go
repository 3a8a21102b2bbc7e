package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"unicode"

	"golang.org/x/oauth2"
)

// maxErrText bounds text taken from a token endpoint's answer: it goes
// into logs and the admin API, and the endpoint is not ours.
const maxErrText = 200

// scrubber removes known secrets from text, in every encoding in which the
// OAuth2 library sends them (raw, form-encoded, inside basic auth), in case
// a token endpoint or a proxy echoes the request in an error.
type scrubber []string

func newScrubber(clientID, secret string) scrubber {
	if secret == "" {
		return nil
	}
	basic := url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)
	return scrubber{
		secret,
		url.QueryEscape(secret),
		base64.StdEncoding.EncodeToString([]byte(basic)),
		base64.StdEncoding.EncodeToString([]byte(clientID + ":" + secret)),
	}
}

func (s scrubber) scrub(text string) string {
	for _, secret := range s {
		if secret != "" {
			text = strings.ReplaceAll(text, secret, "[redacted]")
		}
	}
	return text
}

// safeText makes outside text fit for one log field: printable, one line,
// bounded.
func safeText(text string) string {
	var b strings.Builder
	n := 0
	for _, r := range text {
		if n == maxErrText {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// safeWord keeps an RFC 6749 error code only when it looks like one.
func safeWord(code string) string {
	if len(code) > 64 {
		return ""
	}
	for _, r := range code {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return ""
		}
	}
	return code
}

// EndpointError is the sanitized cause of a failed token fetch: what Err of
// an *Error holds (possibly wrapped), and what State.LastError shows.
type EndpointError struct {
	// StatusCode is the token endpoint's HTTP status, 0 when it gave none
	// (connection failure, timeout, unusable answer).
	StatusCode int
	// Code is the RFC 6749 "error" value when the endpoint sent one.
	Code string
	msg  string
	err  error // context.Canceled / DeadlineExceeded, for errors.Is
}

// Error is the sanitized description: safe for logs and the admin API.
func (e *EndpointError) Error() string { return e.msg }

// Unwrap lets errors.Is recognize timeouts and cancellation.
func (e *EndpointError) Unwrap() error { return e.err }

// describeFetchError turns whatever the OAuth2 library returned into text
// that is safe to log and show an operator: never the response body (it
// may echo the request), the token URL (it may carry credentials) or a
// secret.
func describeFetchError(err error, s scrubber) *EndpointError {
	var re *oauth2.RetrieveError
	var ne net.Error
	switch {
	case errors.As(err, &re):
		e := &EndpointError{Code: safeWord(re.ErrorCode)}
		if re.Response != nil {
			e.StatusCode = re.Response.StatusCode
		}
		e.msg = fmt.Sprintf("token endpoint answered HTTP %d", e.StatusCode)
		if e.Code != "" {
			e.msg += " (" + e.Code + ")"
		}
		if d := safeText(s.scrub(re.ErrorDescription)); d != "" {
			e.msg += ": " + d
		}
		return e
	case errors.Is(err, context.Canceled):
		return &EndpointError{msg: "token fetch cancelled", err: context.Canceled}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &EndpointError{msg: "token endpoint did not answer in time", err: context.DeadlineExceeded}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text starts with the method and the token URL
	}
	text := strings.TrimPrefix(err.Error(), "oauth2: ")
	return &EndpointError{msg: "token endpoint request failed: " + safeText(s.scrub(text))}
}

// describeFileError names what went wrong with a token file without its
// content; the path is configuration, not a secret, but is left to the
// caller's log fields.
func describeFileError(op string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return op + ": " + safeText(err.Error())
}
