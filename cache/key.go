package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Keys are byte strings built from length-prefixed parts, so no choice of host, service, path or header
// value can make two different requests share a key (FuzzKey checks this). Layout:
//
//	base    = 'G' len(host) host len(service) service len(url) url       (url = path[?query])
//	primary = base ['A' sha256(credential)[:16]] ['H' fields]            (Authorization; KeyRules.Headers)
//	variant = primary 'V' { len(name) name (1 len(value) value | 0) }       (one per Vary name, sorted)
//
// GET and HEAD share the 'G' method class: HEAD is answered from stored GET responses. The
// query part of url and the 'H' fields follow the service's KeyRules (keyrules.go). The
// Authorization hash in the key means an entry stored for one credential can only ever be found by a
// request carrying the very same credential (credential: every Authorization line, see below).

// keyBufPool recycles key buffers so that computing a key on the hit path does not allocate.
var keyBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func getKeyBuf() *[]byte { return keyBufPool.Get().(*[]byte) }

func putKeyBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		keyBufPool.Put(b)
	}
}

func appendLenString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendBaseKey appends the base key of a request: method class, lower-cased host, service and URL.
func appendBaseKey(dst []byte, host, service, path, rawQuery string) []byte {
	dst = append(dst, 'G')
	dst = binary.AppendUvarint(dst, uint64(len(host)))
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	dst = appendLenString(dst, service)
	n := len(path)
	if rawQuery != "" {
		n += 1 + len(rawQuery)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = append(dst, path...)
	if rawQuery != "" {
		dst = append(dst, '?')
		dst = append(dst, rawQuery...)
	}
	return dst
}

// credential is what identifies the client's credential of a request in keys: its Authorization
// value, or, when the field is repeated, all of its values. Every line is forwarded to a service that
// takes the client's own credential, so each may select the answer: keyed by the first alone, an
// answer to "alice" plus "mallory" would be served to "alice" alone, and one to an empty line plus
// "alice" would be taken for an anonymous request's. Several lines are length-prefixed after a NUL,
// which a single field value cannot contain (HTTP forbids it, net/http rejects it), so they never
// collide with one value. One line, the usual case, costs no allocation.
func credential(h http.Header) string {
	vs := h["Authorization"]
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	b := []byte{0}
	for _, v := range vs {
		b = appendLenString(b, v)
	}
	return string(b)
}

// appendAuthKey appends the credential part of the primary key for a request with Authorization
// (authorization: credential of its header).
func appendAuthKey(dst []byte, authorization string) []byte {
	if authorization == "" {
		return dst
	}
	sum := sha256.Sum256([]byte(authorization))
	dst = append(dst, 'A')
	return append(dst, sum[:16]...)
}

// appendVariantKey appends the selecting header values named by vary (canonical, sorted) to a primary
// key. Absent headers are encoded differently from empty ones (RFC 9111 §4.1).
func appendVariantKey(dst []byte, vary []string, h http.Header) []byte {
	return appendHeaderValues(dst, 'V', vary, h)
}

// appendHeaderValues appends tag and the normalised values of the named header fields.
func appendHeaderValues(dst []byte, tag byte, names []string, h http.Header) []byte {
	dst = append(dst, tag)
	for _, name := range names {
		dst = appendHeaderValue(dst, name, h)
	}
	return dst
}

// appendHeaderValue appends one named field of h, normalised, to a key (see appendHeaderValues).
func appendHeaderValue(dst []byte, name string, h http.Header) []byte {
	dst = appendLenString(dst, name)
	vs, ok := h[name]
	if !ok {
		return append(dst, 0) // absent
	}
	dst = append(dst, 1) // present
	// Reserve one byte for the length; normalised values are nearly always short.
	lenAt := len(dst)
	dst = append(dst, 0)
	dst = appendNormalized(dst, name, vs)
	n := len(dst) - lenAt - 1
	if n >= 0x7f {
		// Rare: re-encode with a proper uvarint prefix.
		val := append([]byte(nil), dst[lenAt+1:]...)
		dst = binary.AppendUvarint(dst[:lenAt], uint64(n))
		dst = append(dst, val...)
	} else {
		dst[lenAt] = byte(n)
	}
	return dst
}

// appendNormalized appends the normalised value of a selecting header: all field lines combined into
// one list, whitespace around members removed, and for the Accept-* family (whose members are
// case-insensitive tokens) lower-cased and sorted, so that equivalent requests share a variant.
func appendNormalized(dst []byte, name string, vs []string) []byte {
	fold := name == "Accept-Language" || name == "Accept-Encoding" || name == "Accept-Charset"
	if fold {
		var members []string
		for _, v := range vs {
			for m := range strings.SplitSeq(v, ",") {
				m = strings.Join(strings.Fields(m), "")
				if m != "" {
					members = append(members, strings.ToLower(m))
				}
			}
		}
		slices.Sort(members)
		for i, m := range members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, m...)
		}
		return dst
	}
	first := true
	for _, v := range vs {
		for v != "" {
			var m string
			m, v, _ = strings.Cut(v, ",")
			m = strings.TrimSpace(m)
			if m == "" {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, m...)
		}
	}
	return dst
}

// varyNames returns the canonical, sorted, de-duplicated header names of the response's Vary fields;
// star reports a `*` member (such responses are never stored).
func varyNames(h http.Header) (names []string, star bool) {
	for _, v := range h["Vary"] {
		for m := range strings.SplitSeq(v, ",") {
			m = strings.TrimSpace(m)
			switch m {
			case "":
				continue
			case "*":
				return nil, true
			}
			names = append(names, http.CanonicalHeaderKey(m))
		}
	}
	slices.Sort(names)
	return slices.Compact(names), false
}
