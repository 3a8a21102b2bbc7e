package cache

import (
	"context"
	"net/http"
	"strings"
)

// Bounds of the tags one answer may carry (Options.TagHeaders). Tags past MaxTagsPerAnswer are
// ignored, and so is a tag longer than MaxTagLen: the entry is stored with the tags within bounds,
// so that a purge never needs more than a bounded index to find it.
const (
	MaxTagsPerAnswer = 64
	MaxTagLen        = 256
)

// DefaultTagHeaders are the answer fields whose tags index an entry when Options.TagHeaders is nil:
// Surrogate-Key (space-separated, as Fastly, Varnish xkey and Souin read it) and Cache-Tag
// (comma-separated, as Cloudflare reads it).
var DefaultTagHeaders = []string{"Surrogate-Key", "Cache-Tag"}

// tagHeaders are the fields tags are read from (Options.TagHeaders, or the default).
func (c *Cache) tagHeaders() []string {
	if c.opts.TagHeaders == nil {
		return DefaultTagHeaders
	}
	return c.opts.TagHeaders
}

// tagCost is what one tag of an entry costs in the index beyond its bytes: the map entries of the
// tag → entries set and the entry's own slice element.
const tagCost = 96

// parseTags returns the tags an answer's header carries in fields: separated by commas or white
// space, duplicates once, within the bounds above. It returns nil without any.
func parseTags(h http.Header, fields []string) []string {
	var tags []string
	for _, f := range fields {
		for _, v := range h[f] {
			for _, t := range strings.FieldsFunc(v, isTagSeparator) {
				if len(tags) == MaxTagsPerAnswer {
					return tags
				}
				if len(t) <= MaxTagLen && ValidTag(t) && !containsString(tags, t) {
					tags = append(tags, t)
				}
			}
		}
	}
	return tags
}

func isTagSeparator(r rune) bool { return r == ',' || r == ' ' || r == '\t' }

// ValidTag reports whether t can be a tag: not empty, at most MaxTagLen bytes, printable ASCII
// without separators (comma, space).
func ValidTag(t string) bool {
	if t == "" || len(t) > MaxTagLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c == ',' || c >= 0x7f {
			return false
		}
	}
	return true
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// hasTag reports whether e carries one of tags.
func (e *Entry) hasTag(tags []string) bool {
	for _, t := range e.tags {
		if containsString(tags, t) {
			return true
		}
	}
	return false
}

// PurgeTags removes every stored answer carrying one of tags (every Vary variant, fresh or stale),
// of service only when it is not "", and returns how many it removed. Answers whose fetch was in
// flight when it ran are not stored afterwards. With a Redis tier it also removes them from Redis
// and, through pub/sub, from every other instance's local tier; it returns the larger count.
func (c *Cache) PurgeTags(service string, tags []string) int {
	if len(tags) == 0 {
		return 0 // never "everything"
	}
	return c.remove(context.Background(), purgeEvent{service: service, tags: tags})
}
