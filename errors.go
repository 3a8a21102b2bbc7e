package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/reqbody"
	"github.com/caddyserver/caddy/v2"
)

// errorBody is the JSON every gateway-made error carries.
type errorBody struct {
	Error     string `json:"error"`
	Service   string `json:"service"`
	Status    int    `json:"status"`
	RequestID string `json:"request_id,omitempty"`
}

// writeError answers a request the gateway could not forward. It returns
// nil: the answer is complete, and Caddy's error routes must not replace it.
//
// An HTTP/1 request body not read to its end (never, when answered before
// the exchange began) closes the connection (reqbody.CloseIfUnread).
func writeError(w http.ResponseWriter, r *http.Request, status int, service, msg string, retryAfter time.Duration) error {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	reqbody.CloseIfUnread(r, w.Header())
	return writeJSON(w, status, errorBody{Error: msg, Service: service, Status: status, RequestID: requestID(r)})
}

// writeCacheError is writeError for the answers the cache makes itself
// (cache.Route.WriteError).
func writeCacheError(w http.ResponseWriter, r *http.Request, status int, service, msg string) {
	_ = writeError(w, r, status, service, msg, 0)
}

// writeJSON writes v as a JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// requestID is Caddy's request UUID ({http.request.uuid}), the same one the
// access log carries, generated on first use.
func requestID(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	id, _ := repl.GetString("http.request.uuid")
	return id
}
