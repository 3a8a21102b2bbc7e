package cache

import (
	"net/http"
	"strings"
)

// conditionalFields are the client's precondition fields; the cache replaces them with its own
// validators when it revalidates an entry, and answers them itself from the entry.
var conditionalFields = []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"}

// notModifiedFields are the stored fields repeated in a 304 sent from the cache (RFC 9110 §15.4.5).
var notModifiedFields = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Last-Modified", "Vary"}

// notModified evaluates the client's If-None-Match / If-Modified-Since against a stored entry
// (RFC 9110 §13.2.2: If-None-Match, compared weakly, takes precedence; If-Modified-Since only counts
// without it and compares with Last-Modified, or Date when there is none).
func notModified(r *http.Request, e *Entry) bool {
	if inm, ok := r.Header["If-None-Match"]; ok {
		for _, line := range inm {
			if etagListMatches(line, e.etag) {
				return true
			}
		}
		return false
	}
	ims := r.Header["If-Modified-Since"]
	if len(ims) == 0 {
		return false
	}
	since, err := http.ParseTime(ims[0])
	if err != nil {
		return false
	}
	lm := e.lastModified
	if lm.IsZero() {
		if lm, err = http.ParseTime(e.field("Date")); err != nil {
			return false
		}
	}
	return !lm.After(since)
}

// etagListMatches reports whether the If-None-Match list contains "*" or an entity-tag weakly equal to
// etag. Commas inside quoted tags are respected.
func etagListMatches(list, etag string) bool {
	for list != "" {
		list = strings.TrimLeft(list, " \t,")
		if list == "" {
			break
		}
		if list[0] == '*' {
			return true
		}
		end := 0
		if strings.HasPrefix(list, "W/") {
			end = 2
		}
		if end < len(list) && list[end] == '"' {
			if q := strings.IndexByte(list[end+1:], '"'); q >= 0 {
				end += q + 2
			} else {
				end = len(list)
			}
		} else if c := strings.IndexByte(list, ','); c >= 0 {
			end = c
		} else {
			end = len(list)
		}
		if etag != "" && weakEqual(list[:end], etag) {
			return true
		}
		list = list[end:]
	}
	return false
}

// weakEqual compares two entity-tags ignoring the weakness indicator (RFC 9110 §8.8.3.2).
func weakEqual(a, b string) bool {
	return strings.TrimPrefix(strings.TrimSpace(a), "W/") == strings.TrimPrefix(strings.TrimSpace(b), "W/")
}
