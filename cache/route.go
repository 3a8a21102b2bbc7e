package cache

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Route is what the cache is handed for one service of the server that embeds it. The server builds
// it once, when it is configured, so that nothing about the service is looked up on the request path.
type Route struct {
	// Service names the service: part of every key, of purges and of the counters.
	Service string
	// BasePath is the path the service's upstream URLs put in front of the request path, escaped and
	// without a trailing slash ("" for none). Entries are keyed by the path without it, while an
	// upstream's Location / Content-Location carries it: the cache strips it to find the entries an
	// unsafe method's answer names.
	BasePath string
	// Fetch forwards a request to the service. Background refreshes keep it beyond the request that
	// handed the route in.
	Fetch Fetch
	// WriteError writes an error answer in the server's own format, for the answers the cache makes
	// itself (504 to only-if-cached, 416 to an unsatisfiable Range), so that they look like every
	// other error of the server. Nil: {"error", "service", "status"} as JSON.
	WriteError func(w http.ResponseWriter, r *http.Request, status int, service, msg string)
}

// writeError answers r with status and msg through rt.WriteError, or as plain JSON without one.
func (rt *Route) writeError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if rt.WriteError != nil {
		rt.WriteError(w, r, status, rt.Service, msg)
		return
	}
	body, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Service string `json:"service"`
		Status  int    `json:"status"`
	}{msg, rt.Service, status})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
