package cache

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Range requests (RFC 9110 §14) are answered from a stored complete 200: one byte range gets a 206
// with Content-Range, a range that starts past the end gets a 416 with `Content-Range: bytes */len`.
// A request the cache cannot answer from what it holds (no entry, a stale one, a stored answer that is
// not a 200), and a HEAD with Range, are forwarded as they are and its answer is not stored. Where RFC 9110 lets a server ignore
// Range, the whole stored answer is sent (200): a ranges-specifier that is not valid, several ranges
// (no multipart/byteranges), and an If-Range that does not match the entry.

// rangeVerdict says how a stored entry answers a request's Range.
type rangeVerdict uint8

const (
	rangeIgnore        rangeVerdict = iota // send the whole entry
	rangePartial                           // send bytes [start, end] as a 206
	rangeUnsatisfiable                     // 416
)

// selectRange applies r's Range and If-Range to the stored entry e (RFC 9110 §14.2, §13.1.5) and
// returns the verdict, with the first and last byte of a partial answer.
func selectRange(r *http.Request, e *Entry) (v rangeVerdict, start, end int64) {
	rh := r.Header["Range"]
	if r.Method != http.MethodGet || e.Status != http.StatusOK || len(rh) != 1 || !ifRangeHolds(r.Header["If-Range"], e) {
		return rangeIgnore, 0, 0
	}
	return parseRange(rh[0], int64(len(e.Body)))
}

// parseRange reads a `bytes=` ranges-specifier of one range against a representation of size bytes.
func parseRange(spec string, size int64) (v rangeVerdict, start, end int64) {
	unit, set, ok := strings.Cut(spec, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return rangeIgnore, 0, 0
	}
	set = strings.Trim(set, " \t")
	if set == "" || strings.ContainsRune(set, ',') {
		return rangeIgnore, 0, 0 // not valid, or several ranges: the whole answer
	}
	first, last, ok := strings.Cut(set, "-")
	if !ok {
		return rangeIgnore, 0, 0
	}
	if first == "" { // suffix-range: the last n bytes
		n, ok := parseDigits(last)
		switch {
		case !ok:
			return rangeIgnore, 0, 0
		case n == 0 || size == 0:
			return rangeUnsatisfiable, 0, 0
		}
		return rangePartial, size - min(n, size), size - 1
	}
	start, ok = parseDigits(first)
	if !ok {
		return rangeIgnore, 0, 0
	}
	end = size - 1
	if last != "" {
		if end, ok = parseDigits(last); !ok || end < start {
			return rangeIgnore, 0, 0
		}
		end = min(end, size-1)
	}
	if start >= size {
		return rangeUnsatisfiable, 0, 0
	}
	return rangePartial, start, end
}

// parseDigits parses a non-empty run of decimal digits that fits an int64.
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// ifRangeHolds evaluates If-Range against the entry (RFC 9110 §13.1.5): an entity-tag must be strong
// and strongly equal to the entry's ETag; a date must equal the entry's Last-Modified, which must be a
// strong validator (at least one second older than its Date). Absent, it holds.
func ifRangeHolds(vs []string, e *Entry) bool {
	if len(vs) == 0 {
		return true
	}
	if len(vs) > 1 {
		return false
	}
	v := strings.TrimSpace(vs[0])
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "W/") {
		return !strings.HasPrefix(v, "W/") && e.etag != "" && !strings.HasPrefix(e.etag, "W/") && v == strings.TrimSpace(e.etag)
	}
	t, err := http.ParseTime(v)
	if err != nil || e.lastModified.IsZero() || !t.Equal(e.lastModified) {
		return false
	}
	date, err := http.ParseTime(e.Header.Get("Date"))
	return err == nil && date.Sub(e.lastModified) >= time.Second
}

// writePartial sends bytes [start, end] of e's body as a 206; the entry's fields are already in w's
// header.
func writePartial(w http.ResponseWriter, e *Entry, start, end int64) {
	h := w.Header()
	size := int64(len(e.Body))
	h["Content-Range"] = []string{"bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10) + "/" + strconv.FormatInt(size, 10)}
	h["Content-Length"] = []string{strconv.FormatInt(end-start+1, 10)}
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(e.Body[start : end+1])
}

// rangeNotSatisfiable answers a Range that starts past the end of the stored entry: 416 with the
// entry's length in Content-Range, and the server's JSON error body.
func (c *Cache) rangeNotSatisfiable(w http.ResponseWriter, r *http.Request, e *Entry, cacheStatus string) {
	h := w.Header()
	h["Content-Range"] = []string{"bytes */" + strconv.Itoa(len(e.Body))}
	h["Cache-Status"] = []string{c.opts.Name + "; " + cacheStatus}
	const msg = "range not satisfiable"
	if ew, ok := w.(ErrorWriter); ok {
		ew.WriteError(r, http.StatusRequestedRangeNotSatisfiable, e.Service, msg)
		return
	}
	body, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Service string `json:"service"`
		Status  int    `json:"status"`
	}{msg, e.Service, http.StatusRequestedRangeNotSatisfiable})
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
	_, _ = w.Write(append(body, '\n'))
}
