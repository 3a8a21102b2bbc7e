package cache

import (
	"slices"
	"strings"
	"time"
)

// Inspection is what the local tier holds for one URL of a service (Cache.Inspect).
type Inspection struct {
	Service string `json:"service"`
	// URL is the upstream-relative path and query as the entries are keyed (the service's key rules
	// applied, percent-escapes decoded).
	URL string `json:"url"`
	// Variants are the stored answers: one per Vary variant, credential and key header value.
	Variants []Variant `json:"variants"`
	// Vary lists the selecting request fields when the URL's answers vary.
	Vary []string `json:"vary,omitempty"`
	// LastDecision is the cache's last decision for the URL when it is still remembered (a bounded
	// memory of the latest few thousand URLs); it says why nothing is stored.
	LastDecision *Decision `json:"last_decision,omitempty"`
}

// Variant describes one stored answer. No field of it comes from the request (no credential, no
// header value): only the answer's status, times, size and validators.
type Variant struct {
	Status int `json:"status"`
	// AgeSeconds is the current age (RFC 9111 §4.2.3); FreshSeconds what remains of its freshness
	// (negative: stale for that long).
	AgeSeconds   int64 `json:"age_seconds"`
	FreshSeconds int64 `json:"fresh_seconds"`
	// StaleWhileRevalidateSeconds and StaleIfErrorSeconds are its stale windows (directives and
	// config, the longer wins).
	StaleWhileRevalidateSeconds int64 `json:"stale_while_revalidate_seconds"`
	StaleIfErrorSeconds         int64 `json:"stale_if_error_seconds"`
	// Size is the entry's cost in the store (header, body, key and overhead); BodySize its body.
	Size     int64  `json:"size"`
	BodySize int    `json:"body_size"`
	ETag     string `json:"etag,omitempty"`
	// LastModified is the answer's Last-Modified field, as sent.
	LastModified string    `json:"last_modified,omitempty"`
	Stored       time.Time `json:"stored"`
	// Private is set for an entry stored for a request with Authorization: only the same credential
	// reaches it.
	Private bool `json:"private,omitempty"`
	// Tags are the tags that index the entry (Options.TagHeaders).
	Tags []string `json:"tags,omitempty"`
}

// Inspect reports what the local tier holds for target (an upstream-relative path with an optional
// query) of service, and the last decision made for it when remembered. It walks the service's
// entries, so it is for the admin API, not the request path.
func (c *Cache) Inspect(service, target string) Inspection {
	path, query, _ := strings.Cut(target, "?")
	url := keyURL(path, c.keyQuery(service, query))
	out := Inspection{Service: service, URL: url, Variants: []Variant{}}
	now := c.now()
	views, tags := c.local.find(service, url)
	for i := range views {
		e := &views[i]
		if e.Marker {
			out.Vary = e.varyNames()
			continue
		}
		age := e.age(now)
		out.Variants = append(out.Variants, Variant{
			Status:                      e.Status,
			AgeSeconds:                  int64(age / time.Second),
			FreshSeconds:                int64((e.lifetime - age) / time.Second),
			StaleWhileRevalidateSeconds: int64(e.swr / time.Second),
			StaleIfErrorSeconds:         int64(e.sie / time.Second),
			Size:                        e.cost,
			BodySize:                    len(e.Body),
			ETag:                        e.etag,
			LastModified:                e.field("Last-Modified"),
			Stored:                      e.ResponseTime.UTC(),
			Private:                     hasAuthPart(e),
			Tags:                        tags[i],
		})
	}
	slices.SortFunc(out.Variants, func(a, b Variant) int { return a.Stored.Compare(b.Stored) })
	if d, ok := c.decided.last(service, url); ok {
		out.LastDecision = &d
	}
	return out
}

// hasAuthPart reports whether e's key has the credential part right after its base.
func hasAuthPart(e *Entry) bool {
	return len(e.Key) > e.BaseLen && e.Key[e.BaseLen] == 'A'
}
