package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-gateway/caddy-gateway/cache"
)

// inspect answers GET /gateway/cache?service=S&path=/p[?query]: what each selected gateway's cache
// holds for that URL (every variant with its age, remaining freshness, stale windows, size and
// validators), or, when nothing is stored, the last decision made about it if still remembered.
// The path is the one after /{prefix}/{service}, query included (escape its '?' and '&' as %3F and
// %26). Only the local tier is shown. Nothing of a request (credential, header value) is.
func (adminAPI) inspect(w http.ResponseWriter, r *http.Request, gws []*Gateway) error {
	service, path, err := inspectQuery(r.URL.RawQuery)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	out := map[string]cache.Inspection{}
	known := false
	for _, g := range gws {
		if g.services[service] == nil {
			continue
		}
		known = true
		if g.cache != nil {
			out[displayName(g)] = g.cache.Inspect(service, path)
		}
	}
	if !known {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown service %q", service)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"service": service, "path": path, "gateways": out})
}

// inspectQuery reads service and path, both required, each once, and nothing else (name, which
// selects the gateway, aside).
func inspectQuery(raw string) (service, path string, err error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "", "", fmt.Errorf("invalid query: %w", err)
	}
	for k, vs := range q {
		switch {
		case k != "service" && k != "path" && k != "name":
			return "", "", fmt.Errorf("unknown parameter %q: only service, path and name", k)
		case len(vs) > 1:
			return "", "", fmt.Errorf("%s given %d times", k, len(vs))
		}
	}
	service, path = q.Get("service"), q.Get("path")
	switch {
	case service == "":
		return "", "", fmt.Errorf("service is required")
	case !strings.HasPrefix(path, "/"):
		return "", "", fmt.Errorf("path %q must start with '/'", path)
	}
	return service, path, nil
}
