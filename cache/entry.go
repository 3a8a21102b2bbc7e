package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"
)

// entryFormatVersion is the first byte of every encoded Entry. Bump it when the layout changes so a
// shared tier (Redis) holding values written by an older or newer gateway rejects them instead of
// misreading them.
const entryFormatVersion byte = 1

// entryOverhead is the memory a stored entry costs beyond its block (block.go): its slot and map
// entry in the store (store.go), and its record and chain entry in the index (index.go): ~300
// bytes measured. It is part of the cost so that MaxSize bounds real memory, not just
// payload bytes (TestMemoryBounded, TestBlocksAreNotScanned).
const entryOverhead = 320

// ErrCorruptEntry is returned (wrapped) by Entry.UnmarshalBinary for any value that is not a complete
// entry of a known format version, so a foreign or damaged value in a shared tier is a miss, not a panic.
var ErrCorruptEntry = errors.New("cache: corrupt entry")

// Entry is one stored response (header and body together) or, when Marker is set, a Vary marker that
// records which request headers select among the variants stored under the same URL. The local tier
// keeps it encoded as a block (block.go) and hands out views of the block; a view is immutable, so
// the hit path may hand out its header values and body without copying them.
type Entry struct {
	// Key is the full storage key; BaseLen is the length of its URL part (method class, host, service,
	// path and query), which groups an entry with its variants for invalidation.
	Key     string
	BaseLen int
	// Service and URL (upstream-relative path and query) let Purge match entries by service and prefix.
	Service string
	URL     string
	// Marker is true for a Vary marker; Vary then lists the canonical selecting header names.
	Marker bool
	Vary   []string
	// Status, Header and Body are the stored response; hop-by-hop fields are already removed.
	Status int
	Header http.Header
	Body   []byte
	// RequestTime and ResponseTime bracket the upstream exchange; InitialAge is the corrected initial
	// age of RFC 9111 §4.2.3, so the current age is InitialAge + (now - ResponseTime).
	RequestTime  time.Time
	ResponseTime time.Time
	InitialAge   time.Duration

	// Derived by prepare, never encoded by MarshalBinary (the local tier's blocks keep them): the hot
	// path reads these instead of re-parsing headers.
	lifetime     time.Duration
	etag         string
	lastModified time.Time
	swr, sie     time.Duration
	noCache      bool     // response no-cache: never fresh
	noStale      bool     // must-revalidate, proxy-revalidate, s-maxage or no-cache: never serve stale
	tags         []string // from Options.TagHeaders (parseTags); they index the entry
	cost         int64

	// Set for a view of a local block (Entry.view), whose Header is nil: the block, its header
	// section and the number of header values in it.
	block  []byte
	raw    []byte
	values int
}

// MarshalBinary encodes e for a byte-oriented tier: a format-version byte followed by
// length-prefixed fields. Derived fields are not encoded; UnmarshalBinary callers re-derive them.
func (e *Entry) MarshalBinary() ([]byte, error) {
	n := 64 + len(e.Key) + len(e.Service) + len(e.URL) + len(e.Body)
	for k, vs := range e.Header {
		n += len(k) + 8
		for _, v := range vs {
			n += len(v) + 4
		}
	}
	for _, v := range e.Vary {
		n += len(v) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, entryFormatVersion)
	var flags byte
	if e.Marker {
		flags |= 1
	}
	b = append(b, flags)
	b = appendString(b, e.Key)
	b = binary.AppendUvarint(b, uint64(e.BaseLen))
	b = appendString(b, e.Service)
	b = appendString(b, e.URL)
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendVarint(b, unixNano(e.RequestTime))
	b = binary.AppendVarint(b, unixNano(e.ResponseTime))
	b = binary.AppendVarint(b, int64(e.InitialAge))
	b = binary.AppendUvarint(b, uint64(len(e.Vary)))
	for _, v := range e.Vary {
		b = appendString(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Header)))
	for k, vs := range e.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	return append(b, e.Body...), nil
}

// unixNano encodes a time, the zero time as 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// UnmarshalBinary decodes a value written by MarshalBinary. Any truncation, trailing garbage, unknown
// version or out-of-range field yields an error wrapping ErrCorruptEntry; it never panics. The decoded
// entry's derived fields are computed with default options (no DefaultTTL or stale windows); the cache
// re-derives them with its own options before use.
func (e *Entry) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if v := d.byte(); d.err == nil && v != entryFormatVersion {
		return fmt.Errorf("%w: format version %d, want %d", ErrCorruptEntry, v, entryFormatVersion)
	}
	flags := d.byte()
	var out Entry
	out.Marker = flags&1 != 0
	out.Key = d.string()
	out.BaseLen = d.int(uint64(len(out.Key)))
	out.Service = d.string()
	out.URL = d.string()
	out.Status = d.int(999)
	out.RequestTime = fromUnixNano(d.varint())
	out.ResponseTime = fromUnixNano(d.varint())
	out.InitialAge = time.Duration(d.varint())
	if nv := d.count(); nv > 0 {
		out.Vary = make([]string, 0, nv)
		for range nv {
			out.Vary = append(out.Vary, d.string())
		}
	}
	nh := d.count()
	out.Header = make(http.Header, nh)
	for range nh {
		k := d.string()
		nvals := d.count()
		if d.err != nil {
			break
		}
		vs := make([]string, 0, nvals)
		for range nvals {
			vs = append(vs, d.string())
		}
		out.Header[k] = vs[:len(vs):len(vs)]
	}
	body := d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err == nil && !out.Marker && (out.Status < 200 || out.InitialAge < 0) {
		d.err = fmt.Errorf("status %d, initial age %v", out.Status, out.InitialAge)
	}
	if d.err != nil {
		return fmt.Errorf("%w: %w", ErrCorruptEntry, d.err)
	}
	if len(body) > 0 {
		out.Body = append([]byte(nil), body...) // data belongs to the caller (encoding.BinaryUnmarshaler)
	}
	*e = out
	e.prepare(&Options{})
	return nil
}

// decoder reads the fields of an encoded entry, remembering the first error so callers can read a
// whole record and check once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or invalid %s", what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int reads a uvarint no larger than limit.
func (d *decoder) int(limit uint64) int {
	v := d.uvarint()
	if v > limit || v > math.MaxInt32 {
		d.fail("integer")
		return 0
	}
	return int(v)
}

// count reads an element count; every element takes at least one byte, so a count larger than the
// remaining input is corrupt (this also bounds allocations made from it).
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	return string(d.bytes())
}
