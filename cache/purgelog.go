package cache

import (
	"strings"
	"sync/atomic"
)

// purgeLogSize is how many purges and invalidations the log keeps. An exchange that spans more of
// them than this is not stored (the log cannot tell whether one covered it): it costs one later miss,
// never a stale answer.
const purgeLogSize = 1024

// purgeEvent is one purge (service and path prefix; "" = all), one purge by tag (service and tags)
// or one invalidation (service and the base keys it removed).
type purgeEvent struct {
	service string
	prefix  string
	tags    []string  // non-nil: a purge of the entries with one of these tags
	refs    []baseRef // non-nil: an invalidation of these URLs (base keys)
}

// baseRef names one URL's entries for invalidation.
type baseRef struct {
	url  string // path?query, as in Entry.URL
	base []byte // base key
}

// covers reports whether the event removed, or would have removed, e.
func (ev *purgeEvent) covers(e *Entry) bool {
	if ev.service != "" && ev.service != e.Service {
		return false
	}
	if ev.tags != nil {
		return e.hasTag(ev.tags)
	}
	if ev.refs == nil {
		return underPrefix(e.URL, ev.prefix)
	}
	base := e.Key[:e.BaseLen]
	for _, ref := range ev.refs {
		if string(ref.base) == base {
			return true
		}
	}
	return false
}

// purgeLog is a ring of the latest purge events, numbered by seq. An answer is stored only if no
// event newer than the position read before its exchange began covers it: without this, an answer
// fetched before a purge (or before a write that invalidated its URL) would be stored after it and
// served as fresh. Writers hold localTier.mu exclusively, readers (covers) shared; seq is atomic so
// that an exchange can note its position without the lock.
type purgeLog struct {
	seq    atomic.Uint64
	events [purgeLogSize]purgeEvent
}

func (l *purgeLog) add(ev purgeEvent) {
	n := l.seq.Load() + 1
	l.events[n%purgeLogSize] = ev
	l.seq.Store(n)
}

// covers reports whether an event after position since covers e; when events since then have already
// left the ring it answers true.
func (l *purgeLog) covers(e *Entry, since uint64) bool {
	now := l.seq.Load()
	if now-since >= purgeLogSize {
		return true
	}
	for n := since + 1; n <= now; n++ {
		if l.events[n%purgeLogSize].covers(e) {
			return true
		}
	}
	return false
}

// matchForm is the form in which entry URLs (path[?query]) and purge prefixes are compared: every
// percent-escape decoded, except those of '%', '/', '?' and NUL, which stay escaped (in upper case).
// Keys keep the URL exactly as the client sent it, escapes and all (the upstream gets it so), but a
// purge names a resource, not a spelling of it: /caf%C3%A9, /caf%c3%a9 and /café are one path, and
// the admin API's path parameter arrives decoded once already (a query value). Comparing decoded
// forms makes either spelling of the purge find the entry. What stays escaped keeps the structure:
// '/' and '?' are the segment boundaries underPrefix stops at, '%' keeps decoding one level deep (so
// the form of a form is itself), and NUL separates the URL in Redis index members. An invalid escape
// is left as it is. A URL without '%' is returned as is, without allocating.
func matchForm(u string) string {
	i := strings.IndexByte(u, '%')
	if i < 0 {
		return u
	}
	b := make([]byte, 0, len(u))
	b = append(b, u[:i]...)
	for ; i < len(u); i++ {
		c := u[i]
		if c != '%' || i+2 >= len(u) || !isHex(u[i+1]) || !isHex(u[i+2]) {
			b = append(b, c)
			continue
		}
		d := unhex(u[i+1])<<4 | unhex(u[i+2])
		switch d {
		case '%', '/', '?', 0:
			const upperHex = "0123456789ABCDEF"
			b = append(b, '%', upperHex[d>>4], upperHex[d&15])
		default:
			b = append(b, d)
		}
		i += 2
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// underPrefix reports whether an entry URL (path[?query]) is under a purge prefix: equal to it, or
// continuing it at a segment boundary ('/' or '?'), or starting with it when it ends in '/' or '?'.
// "" matches everything. So /x matches /x, /x?a=1 and /x/y, never /x2.
func underPrefix(url, prefix string) bool {
	if !strings.HasPrefix(url, prefix) {
		return false
	}
	if len(url) == len(prefix) || prefix == "" {
		return true
	}
	if last := prefix[len(prefix)-1]; last == '/' || last == '?' {
		return true
	}
	next := url[len(prefix)]
	return next == '/' || next == '?'
}
