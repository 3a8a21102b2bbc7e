package cache

import (
	"net/http"
	"strconv"

	"github.com/caddy-gateway/caddy-gateway/internal/interim"
)

// recorder is the http.ResponseWriter handed to Fetch on the GET/HEAD path. It streams the answer to
// the client while keeping a copy of up to maxBody bytes for the store, and it can hold an answer back
// (write nothing to the client) when the cache has something better to send: a stale entry instead of
// a 5xx (stale-if-error), or the refreshed entry instead of the 304 to its own conditional request.
//
// Fetch writes headers into the recorder's own map; they reach the client's map only when the status
// is sent and the answer is not held back, so a discarded answer leaves no stray fields behind.
type recorder struct {
	w      http.ResponseWriter
	header http.Header

	ex *fetch // the exchange recorded: it holds, decides, and hears of an abandoned copy

	status      int
	wroteHeader bool
	held        bool // the final answer is swallowed
	record      bool // still keeping a copy of the body
	maxBody     int64
	body        []byte
	snapshot    http.Header // header of the final answer as received, for storing
	written     int64
	failed      bool  // writing to the client failed: the copy may be incomplete
	clientErr   error // why, returned to Fetch once nobody needs the rest of the body
	// orphanable: the copy is wanted by others (the followers of a flight), so a client that went
	// away does not stop it; the rest of the answer is read and recorded, just not sent.
	orphanable bool
	contentLen int64 // -1 when unknown
}

// Header returns the map Fetch fills; after the status is sent (and not held) it is the client's map,
// so trailers set late still arrive.
func (r *recorder) Header() http.Header {
	if r.wroteHeader && !r.held {
		return r.w.Header()
	}
	return r.header
}

// WriteHeader decides, on the first final status, whether to hold the answer back and whether to
// record it, then forwards header and status to the client unless held. 1xx answers pass straight on,
// with the fields Fetch set for them (see writeInterim).
func (r *recorder) WriteHeader(status int) {
	if r.wroteHeader {
		return
	}
	if status < 200 {
		r.writeInterim(status)
		return
	}
	r.status = status
	r.wroteHeader = true
	if r.ex.hold(status) {
		r.held = true
		r.snapshot = r.header
		return
	}
	r.snapshot = r.header
	if cl := r.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			r.contentLen = n
		}
	}
	cs := r.ex.decide(r)
	if r.record && r.contentLen > 0 && r.contentLen <= r.maxBody {
		r.body = make([]byte, 0, r.contentLen)
	}
	dst := r.w.Header()
	for k, vs := range r.header {
		dst[k] = vs
	}
	if cs != "" {
		dst["Cache-Status"] = append(dst["Cache-Status"][:len(dst["Cache-Status"]):len(dst["Cache-Status"])], cs)
	}
	r.w.WriteHeader(status)
}

// writeInterim sends a 1xx answer (103 Early Hints...) with the fields in our map, which is where
// Fetch put them (Caddy's reverse proxy copies the 1xx fields into Header(), writes the status, then
// takes them out again). The client's map gets them only for the 1xx and is then put back as it was:
// left there they would go out again with the final answer, as fields the upstream never sent for it.
// They are never stored, since Fetch removes them from our map.
func (r *recorder) writeInterim(status int) {
	interim.Write(r.w, r.header, status)
}

// Write streams p to the client and appends it to the copy while the copy stays within maxBody; the
// moment it would not, the copy is dropped (never more than maxBody bytes are held). When the client
// is gone, an orphanable recorder goes on recording (and says the write succeeded, so that Fetch keeps
// reading the upstream) for as long as the copy is kept.
func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.held {
		return len(p), nil
	}
	if r.record {
		if int64(len(r.body))+int64(len(p)) > r.maxBody {
			r.abandon()
		} else {
			if len(r.body)+len(p) > cap(r.body) {
				c := min(max(2*cap(r.body), len(r.body)+len(p), 4096), int(r.maxBody))
				nb := make([]byte, len(r.body), c)
				copy(nb, r.body)
				r.body = nb
			}
			r.body = append(r.body, p...)
		}
	}
	if r.failed && r.orphanable {
		if r.record {
			return len(p), nil
		}
		return 0, r.clientErr
	}
	n, err := r.w.Write(p)
	r.written += int64(n)
	if err != nil {
		r.failed, r.clientErr = true, err
		if r.orphanable && r.record {
			return len(p), nil
		}
		r.abandon()
	}
	return n, err
}

// abandon stops recording and tells the waiting followers not to expect a stored answer.
func (r *recorder) abandon() {
	if !r.record {
		return
	}
	r.record = false
	r.body = nil
	r.ex.abandoned()
}

// FlushError flushes the client connection (streaming answers), unless the answer is held back. An
// orphanable recorder whose client is gone reports no error while it records (see Write).
func (r *recorder) FlushError() error {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.held {
		return nil
	}
	if r.failed && r.orphanable && r.record {
		return nil
	}
	err := http.NewResponseController(r.w).Flush()
	if err != nil && r.orphanable && r.record {
		r.failed, r.clientErr = true, err
		return nil
	}
	return err
}

// Flush implements http.Flusher for callers that test for it.
func (r *recorder) Flush() { _ = r.FlushError() }

// Unwrap lets http.ResponseController reach the client's writer (deadlines, hijacking).
func (r *recorder) Unwrap() http.ResponseWriter { return r.w }

// complete reports whether the recorded copy is the whole body the upstream announced. (A client
// write failure drops the copy unless the recorder is orphanable, in which case it does not matter.)
func (r *recorder) complete() bool {
	return r.record && (!r.failed || r.orphanable) && (r.contentLen < 0 || r.contentLen == int64(len(r.body)))
}

// statusWriter passes everything through and remembers the status; it serves unsafe methods, whose
// answers decide whether stored entries are invalidated.
type statusWriter struct {
	http.ResponseWriter
	status   int
	onStatus func(status int) // runs once, before the final status reaches the client
}

func (s *statusWriter) WriteHeader(status int) {
	if s.status == 0 && status >= 200 {
		s.status = status
		if s.onStatus != nil {
			s.onStatus(status)
		}
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

// FlushError flushes the client connection.
func (s *statusWriter) FlushError() error {
	return http.NewResponseController(s.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (s *statusWriter) Flush() { _ = s.FlushError() }

// Unwrap exposes the client's writer to http.ResponseController.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// discardWriter receives background refreshes: the recorder stores the answer, nobody reads it.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header {
	if d.h == nil {
		d.h = make(http.Header)
	}
	return d.h
}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
