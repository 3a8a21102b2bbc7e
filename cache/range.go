package cache

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Range requests (RFC 9110 §14) are answered from a stored complete 200: one byte range gets a 206
// with Content-Range, several a 206 multipart/byteranges, a set whose every range starts past the end
// a 416 with `Content-Range: bytes */len`. A request the cache cannot answer from what it holds (no
// entry, a stale one, a stored answer that is not a 200), and a HEAD with Range, are forwarded as they
// are and their answer is not stored. Where RFC 9110 lets a server ignore Range, the whole stored
// answer is sent (200): a ranges-specifier that is not valid, more than maxRanges ranges or
// overlapping ones, and an If-Range that does not match the entry.

// rangeVerdict says how a stored entry answers a request's Range.
type rangeVerdict uint8

const (
	rangeIgnore        rangeVerdict = iota // send the whole entry
	rangePartial                           // send the ranges as a 206
	rangeUnsatisfiable                     // 416
)

// maxRanges bounds the ranges of one request answered as multipart/byteranges; more, or overlapping
// ones, get the whole answer (RFC 9110 §14.2 lets a server ignore such sets, which serve to amplify).
const maxRanges = 16

// byteRange is the first and last byte of a range.
type byteRange struct{ start, end int64 }

// selectRange applies r's Range and If-Range to the stored entry e (RFC 9110 §14.2, §13.1.5) and
// returns the verdict, with the ranges of a partial answer.
func selectRange(r *http.Request, e *Entry) (rangeVerdict, []byteRange) {
	rh := r.Header["Range"]
	if r.Method != http.MethodGet || e.Status != http.StatusOK || len(rh) != 1 || !ifRangeHolds(r.Header["If-Range"], e) {
		return rangeIgnore, nil
	}
	return parseRange(rh[0], int64(len(e.Body)))
}

// parseRange reads a `bytes=` ranges-specifier against a representation of size bytes. Ranges that
// start past the end are left out; when none is left, the set is unsatisfiable.
func parseRange(spec string, size int64) (rangeVerdict, []byteRange) {
	unit, set, ok := strings.Cut(spec, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return rangeIgnore, nil
	}
	var out []byteRange
	n := 0
	for part := range strings.SplitSeq(set, ",") {
		part = strings.Trim(part, " \t")
		if part == "" {
			continue // empty list elements are allowed (RFC 9110 §5.6.1)
		}
		if n++; n > maxRanges {
			return rangeIgnore, nil
		}
		v, br := parseOneRange(part, size)
		switch v {
		case rangeIgnore:
			return rangeIgnore, nil // one invalid range makes the whole set invalid
		case rangePartial:
			for _, o := range out {
				if br.start <= o.end && o.start <= br.end {
					return rangeIgnore, nil
				}
			}
			out = append(out, br)
		}
	}
	switch {
	case n == 0:
		return rangeIgnore, nil
	case len(out) == 0:
		return rangeUnsatisfiable, nil
	}
	return rangePartial, out
}

// parseOneRange reads one range-spec (first-last, first-, -suffix).
func parseOneRange(spec string, size int64) (rangeVerdict, byteRange) {
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return rangeIgnore, byteRange{}
	}
	if first == "" { // suffix-range: the last n bytes
		n, ok := parseDigits(last)
		switch {
		case !ok:
			return rangeIgnore, byteRange{}
		case n == 0 || size == 0:
			return rangeUnsatisfiable, byteRange{}
		}
		return rangePartial, byteRange{size - min(n, size), size - 1}
	}
	start, ok := parseDigits(first)
	if !ok {
		return rangeIgnore, byteRange{}
	}
	end := size - 1
	if last != "" {
		if end, ok = parseDigits(last); !ok || end < start {
			return rangeIgnore, byteRange{}
		}
		end = min(end, size-1)
	}
	if start >= size {
		return rangeUnsatisfiable, byteRange{}
	}
	return rangePartial, byteRange{start, end}
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
	date, err := http.ParseTime(e.field("Date"))
	return err == nil && date.Sub(e.lastModified) >= time.Second
}

// writePartial sends the ranges of e's body as a 206: one range as it is, several as
// multipart/byteranges (RFC 9110 §14.6); the entry's fields are already in w's header.
func writePartial(w http.ResponseWriter, e *Entry, rs []byteRange) {
	h := w.Header()
	size := strconv.FormatInt(int64(len(e.Body)), 10)
	contentRange := func(br byteRange) string {
		return "bytes " + strconv.FormatInt(br.start, 10) + "-" + strconv.FormatInt(br.end, 10) + "/" + size
	}
	if len(rs) == 1 {
		br := rs[0]
		h["Content-Range"] = []string{contentRange(br)}
		h["Content-Length"] = []string{strconv.FormatInt(br.end-br.start+1, 10)}
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(e.Body[br.start : br.end+1])
		return
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	ct := e.field("Content-Type")
	for _, br := range rs {
		ph := textproto.MIMEHeader{"Content-Range": {contentRange(br)}}
		if ct != "" {
			ph["Content-Type"] = []string{ct}
		}
		pw, _ := mw.CreatePart(ph)
		_, _ = pw.Write(e.Body[br.start : br.end+1])
	}
	_ = mw.Close()
	h["Content-Type"] = []string{"multipart/byteranges; boundary=" + mw.Boundary()}
	h["Content-Length"] = []string{strconv.Itoa(body.Len())}
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(body.Bytes())
}

// rangeNotSatisfiable answers a Range that starts past the end of the stored entry: 416 with the
// entry's length in Content-Range, and the server's JSON error body.
func (c *Cache) rangeNotSatisfiable(w http.ResponseWriter, r *http.Request, rt *Route, e *Entry, cacheStatus string) {
	h := w.Header()
	h["Content-Range"] = []string{"bytes */" + strconv.Itoa(len(e.Body))}
	h["Cache-Status"] = []string{c.opts.Name + "; " + cacheStatus}
	rt.writeError(w, r, http.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
}
