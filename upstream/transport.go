package upstream

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-gateway/caddy-gateway/auth"
)

// gatewayTransport is Caddy's HTTP transport with the gateway's last touches
// to the outgoing request. Embedding keeps every optional interface the
// reverse proxy looks for (TLS, h2c, proxy protocol, health-check scheme)
// visible.
//
// The request it gets is the reverse proxy's private clone, so Host and TE
// are set in place at no cost. The token, though, is set on a copy of the
// headers: the reverse proxy logs this request after the round trip (with
// its headers when log_credentials is on), and the token must never reach a
// log line, a response, or the client's request that the access log reads.
type gatewayTransport struct {
	*reverseproxy.HTTPTransport
	cred    auth.Source // nil: forward the client's Authorization
	setHost bool        // send the upstream's own host:port as Host
	// record, when set, books each exchange's outcome per target (the
	// service's circuit breakers).
	record func(host string, resp *http.Response, err error)
}

// RoundTrip implements http.RoundTripper.
func (t *gatewayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	resp, err := t.roundTrip(req)
	if err == nil {
		if msg := invalidAnswer(req, resp); msg != "" {
			_ = resp.Body.Close()
			resp, err = nil, errors.New(msg)
		}
	}
	// A client that stalled its body makes the exchange fail, but says
	// nothing about the upstream: no verdict for its breaker.
	if t.record != nil && (err == nil || !guardFrom(req.Context()).stalledBody()) {
		t.record(host, resp, err)
	}
	return resp, err
}

// invalidAnswer says why an upstream's final answer must not reach the
// client ("" when it may): the exchange then fails as a 502, as with any
// other broken answer, and counts against the upstream's breaker.
//
//   - A status outside 100–599 (RFC 9110 §15: three digits, the first 1–5).
//     600–999 are library-internal codes; 000–099 would even make
//     net/http's WriteHeader panic ("invalid WriteHeader code").
//   - 101 Switching Protocols to a request that asked for no upgrade (no
//     Upgrade field; Caddy's proxy keeps it only when the client's request
//     upgrades): RFC 9110 §15.2.2 allows it only in answer to one, and the
//     proxy would turn it into an empty 200.
func invalidAnswer(req *http.Request, resp *http.Response) string {
	switch {
	case resp.StatusCode < 100 || resp.StatusCode > 599:
		return fmt.Sprintf("upstream answered with invalid status %d", resp.StatusCode)
	case resp.StatusCode == http.StatusSwitchingProtocols && req.Header.Get("Upgrade") == "":
		return "upstream switched protocols without an upgrade request"
	}
	return ""
}

// roundTrip sends req. With a credential, an upstream 401 invalidates the
// token and a request without a body is sent once more with a fresh one —
// once, never in a loop.
func (t *gatewayTransport) roundTrip(req *http.Request) (*http.Response, error) {
	if t.setHost {
		req.Host = req.URL.Host
	}
	// TE is hop-by-hop; Caddy keeps "TE: trailers" for gRPC, which an API
	// gateway speaking HTTP/1.1 to its services does not need.
	delete(req.Header, "Te")
	if t.cred == nil {
		return t.HTTPTransport.RoundTrip(req)
	}
	resp, tok, err := t.withToken(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	t.cred.Invalidate(tok)
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil // the body is gone: the client gets the 401
	}
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		req.Body = body
	}
	retry, _, err := t.withToken(req)
	if err != nil {
		return resp, nil // keep the upstream's 401 rather than a token error
	}
	_ = resp.Body.Close()
	return retry, nil
}

// withToken sends req with the credential's current token on a private copy
// of its headers.
func (t *gatewayTransport) withToken(req *http.Request) (*http.Response, string, error) {
	tok, err := t.cred.Token(req.Context())
	if err != nil {
		return nil, "", err
	}
	out := new(http.Request)
	*out = *req
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header, 1)
	}
	out.Header["Authorization"] = []string{"Bearer " + tok}
	if req.Trailer != nil && req.Body != nil && req.Body != http.NoBody {
		// Request trailers arrive with the body's end and are sent after
		// it: the client's Authorization must not ride in them.
		tr := make(http.Header, len(req.Trailer))
		for k, v := range req.Trailer {
			if !credentialField(k) {
				tr[k] = v
			}
		}
		out.Trailer = tr
		out.Body = &trailerFilter{ReadCloser: req.Body, src: req.Trailer, dst: tr}
	}
	resp, err := t.HTTPTransport.RoundTrip(out)
	if resp != nil {
		resp.Request = req
	}
	return resp, tok, err
}

// credentialField: request fields that carry the client's own credential.
func credentialField(k string) bool {
	k = http.CanonicalHeaderKey(k)
	return k == "Authorization" || k == "Proxy-Authorization"
}

// trailerFilter copies the request's trailers, minus credentials, into the
// outgoing request's trailers when the body ends.
type trailerFilter struct {
	io.ReadCloser
	src, dst http.Header
}

func (b *trailerFilter) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		clear(b.dst)
		for k, v := range b.src {
			if !credentialField(k) {
				b.dst[k] = v
			}
		}
	}
	return n, err
}
