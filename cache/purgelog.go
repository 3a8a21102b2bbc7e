package cache

import (
	"strings"
	"sync/atomic"
)

// purgeLogSize is how many purges and invalidations the log keeps. An exchange that spans more of
// them than this is not stored (the log cannot tell whether one covered it): it costs one later miss,
// never a stale answer.
const purgeLogSize = 1024

// purgeEvent is one purge (service and path prefix; "" = all) or one invalidation (service and the
// base keys it removed).
type purgeEvent struct {
	service string
	prefix  string
	bases   [][]byte // non-nil: an invalidation of these base keys
}

// covers reports whether the event removed, or would have removed, e.
func (ev *purgeEvent) covers(e *Entry) bool {
	if ev.service != "" && ev.service != e.Service {
		return false
	}
	if ev.bases == nil {
		return underPrefix(e.URL, ev.prefix)
	}
	base := e.Key[:e.BaseLen]
	for _, b := range ev.bases {
		if string(b) == base {
			return true
		}
	}
	return false
}

// purgeLog is a ring of the latest purge events, numbered by seq. An answer is stored only if no
// event newer than the position read before its exchange began covers it: without this, an answer
// fetched before a purge (or before a write that invalidated its URL) would be stored after it and
// served as fresh. Writers hold Cache.storeMu exclusively, readers (covers) shared; seq is atomic so
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
