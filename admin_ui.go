package gateway

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-gateway/caddy-gateway/ui"
)

// uiRoutes serve the dashboard (package ui) at GET /gateway/ui, with its
// script and stylesheet under /gateway/ui/. The page reads the JSON routes
// above; it holds no state and no secret of its own.
func uiRoutes() []caddy.AdminRoute {
	page := ui.Handler()
	h := caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use GET", r.Method)}
		}
		page.ServeHTTP(w, r)
		return nil
	})
	return []caddy.AdminRoute{{Pattern: ui.Prefix, Handler: h}, {Pattern: ui.Prefix + "/", Handler: h}}
}
