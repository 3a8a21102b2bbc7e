package upstream

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
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
	auth    []string // {"Bearer <token>"}; nil: forward the client's Authorization
	setHost bool     // send the upstream's own host:port as Host
}

func newGatewayTransport(t *reverseproxy.HTTPTransport, token string) *gatewayTransport {
	gt := &gatewayTransport{HTTPTransport: t}
	if token != "" {
		gt.auth = []string{"Bearer " + token}
	}
	return gt
}

// RoundTrip implements http.RoundTripper.
func (t *gatewayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.setHost {
		req.Host = req.URL.Host
	}
	// TE is hop-by-hop; Caddy keeps "TE: trailers" for gRPC, which an API
	// gateway speaking HTTP/1.1 to its services does not need.
	delete(req.Header, "Te")
	if t.auth == nil {
		return t.HTTPTransport.RoundTrip(req)
	}
	out := new(http.Request)
	*out = *req
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header, 1)
	}
	out.Header["Authorization"] = t.auth
	resp, err := t.HTTPTransport.RoundTrip(out)
	if resp != nil {
		resp.Request = req
	}
	return resp, err
}
