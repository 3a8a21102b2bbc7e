package upstream

import (
	"bytes"
	"net/http"

	"github.com/caddy-gateway/caddy-gateway/internal/interim"
)

// maxHeldBody is how much of a retryable error answer (502/503/504) is kept
// while the gateway decides whether to retry; such answers are small.
const maxHeldBody = 64 << 10

// holdWriter passes a response through to the client unless its status is
// one the gateway may retry (502, 503, 504): then it holds status, headers
// and a bounded body back, so a retry can answer instead, or release()
// delivers the held answer when retrying is not possible.
type holdWriter struct {
	http.ResponseWriter
	header   http.Header
	status   int
	held     bool // a retryable answer was captured
	wrote    bool // the answer was committed to the client
	overflow bool // the held body exceeded maxHeldBody
	body     bytes.Buffer
}

// Header is the held answer's header map until the answer is committed,
// then the client's: the reverse proxy sets trailers in it after the body.
func (h *holdWriter) Header() http.Header {
	if h.wrote {
		return h.ResponseWriter.Header()
	}
	if h.header == nil {
		h.header = make(http.Header)
	}
	return h.header
}

func (h *holdWriter) WriteHeader(code int) {
	if h.wrote || h.held {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		h.informational(code)
		return
	}
	h.status = code
	switch code {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		h.held = true
		return
	}
	h.commit()
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if !h.wrote && !h.held {
		h.WriteHeader(http.StatusOK)
	}
	if h.held {
		if h.body.Len()+len(p) > maxHeldBody {
			h.overflow = true
		} else {
			h.body.Write(p)
		}
		return len(p), nil
	}
	return h.ResponseWriter.Write(p)
}

// Flush forwards only once the answer is committed: flushing a held answer
// would send an implicit 200 to the client.
func (h *holdWriter) Flush() {
	if h.wrote {
		_ = http.NewResponseController(h.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the client's writer (hijacking
// for upgrades, deadlines).
func (h *holdWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// informational sends a 1xx (103 Early Hints) with the headers the proxy
// set for it. The server sends the client's header map as the 1xx's
// headers, so they are put there only for the call and taken out again:
// the proxy removes them from the map it sees (this one's), and they must
// not end up in the final answer — nor pile up over several attempts.
func (h *holdWriter) informational(code int) {
	interim.Write(h.ResponseWriter, h.header, code)
}

func (h *holdWriter) copyHeader() {
	dst := h.ResponseWriter.Header()
	for k, v := range h.header {
		dst[k] = v
	}
}

func (h *holdWriter) commit() {
	h.copyHeader()
	h.wrote = true
	h.ResponseWriter.WriteHeader(h.status)
}

// release delivers the held answer. It reports false when the held body
// was too large to keep, so the answer can no longer be delivered intact.
func (h *holdWriter) release() bool {
	if h.overflow {
		return false
	}
	h.held = false
	h.commit()
	_, _ = h.ResponseWriter.Write(h.body.Bytes())
	return true
}
