package cache

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"slices"
	"time"
	"unsafe"
)

// The local tier keeps each entry as one block: a []byte holding its fields, header and body, with
// no pointer in it. The garbage collector marks a block without scanning it, so a full cache (a
// quarter of a million small API answers in the default 256 MiB) costs each GC cycle a few pointers
// per entry, not the dozens of objects an http.Header and its strings would be.
//
// An entry read back is a view of its block (Entry.view): its strings, header values and body point
// into the block. Nothing writes a block after encodeBlock built it, so views share it without a
// copy, and the block lives as long as any view of it (or a response header holding one of its
// strings) does.
//
// Layout: a fixed part of blockFixed bytes (little-endian), then uvarint-length-prefixed sections:
//
//	key service url etag vary(n {name}) header(len {name n {value}}) body(the rest)
//
// The header's Cache-Status field, when present, comes last, so that a hit can append its own value
// to the upstream's without copying them (writeEntry).

// Flags of a block (its first byte).
const (
	blockMarker  = 1 << iota // a Vary marker
	blockNoStale             // Entry.noStale
	blockNoCache             // Entry.noCache
)

// Offsets of the fixed part.
const (
	offFlags    = 0  // byte
	offStatus   = 2  // uint16
	offValues   = 4  // uint32: the header's values, all fields together
	offSeq      = 8  // uint64: the local tier's store sequence number (index identity)
	offReqTime  = 16 // int64 Unix nanoseconds, 0 for the zero time (as the three below)
	offRespTime = 24
	offLastMod  = 32
	offInitAge  = 40 // int64 durations from here on
	offLifetime = 48
	offSWR      = 56
	offSIE      = 64
	offBaseLen  = 72 // uint32
	blockFixed  = 80
)

// encodeBlock builds e's block, stamped with seq. e is prepared (its derived fields are set); the
// block's size is exactly what it costs (blockCost), allocator rounding included.
func encodeBlock(e *Entry, seq uint64) []byte {
	n := blockFixed + uvarintLen(len(e.Key)) + len(e.Key) + uvarintLen(len(e.Service)) + len(e.Service) +
		uvarintLen(len(e.URL)) + len(e.URL) + uvarintLen(len(e.etag)) + len(e.etag) +
		uvarintLen(len(e.Vary)) + len(e.Body)
	for _, v := range e.Vary {
		n += uvarintLen(len(v)) + len(v)
	}
	hlen, values := 0, 0
	for k, vs := range e.Header {
		hlen += uvarintLen(len(k)) + len(k) + uvarintLen(len(vs))
		for _, v := range vs {
			hlen += uvarintLen(len(v)) + len(v)
		}
		values += len(vs)
	}
	n += uvarintLen(hlen) + hlen
	// slices.Grow rounds the capacity up to the allocator's size class: the block's real size.
	b := slices.Grow([]byte(nil), n)[:blockFixed]
	var flags byte
	if e.Marker {
		flags |= blockMarker
	}
	if e.noStale {
		flags |= blockNoStale
	}
	if e.noCache {
		flags |= blockNoCache
	}
	b[offFlags] = flags
	le := binary.LittleEndian
	le.PutUint16(b[offStatus:], uint16(e.Status))
	le.PutUint32(b[offValues:], uint32(values))
	le.PutUint64(b[offSeq:], seq)
	le.PutUint64(b[offReqTime:], uint64(unixNano(e.RequestTime)))
	le.PutUint64(b[offRespTime:], uint64(unixNano(e.ResponseTime)))
	le.PutUint64(b[offLastMod:], uint64(unixNano(e.lastModified)))
	le.PutUint64(b[offInitAge:], uint64(e.InitialAge))
	le.PutUint64(b[offLifetime:], uint64(e.lifetime))
	le.PutUint64(b[offSWR:], uint64(e.swr))
	le.PutUint64(b[offSIE:], uint64(e.sie))
	le.PutUint32(b[offBaseLen:], uint32(e.BaseLen))
	b = appendString(b, e.Key)
	b = appendString(b, e.Service)
	b = appendString(b, e.URL)
	b = appendString(b, e.etag)
	b = binary.AppendUvarint(b, uint64(len(e.Vary)))
	for _, v := range e.Vary {
		b = appendString(b, v)
	}
	b = binary.AppendUvarint(b, uint64(hlen))
	for k, vs := range e.Header {
		if k != "Cache-Status" {
			b = appendField(b, k, vs)
		}
	}
	if vs, ok := e.Header["Cache-Status"]; ok {
		b = appendField(b, "Cache-Status", vs)
	}
	return append(b, e.Body...)
}

func appendField(b []byte, name string, vs []string) []byte {
	b = appendString(b, name)
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for _, v := range vs {
		b = appendString(b, v)
	}
	return b
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// blockCost is what a block costs in the local tier: its allocation, the fixed overhead of its index
// and store entries, and its tags in the index.
func blockCost(b []byte, tags []string) int64 {
	n := int64(cap(b)) + entryOverhead
	for _, t := range tags {
		n += int64(len(t)) + tagCost
	}
	return n
}

// blockReader reads the sections of a block. Blocks are built by encodeBlock only, so it does not
// check their shape.
type blockReader struct{ b []byte }

func (r *blockReader) uvarint() int {
	v, n := binary.Uvarint(r.b)
	r.b = r.b[n:]
	return int(v)
}

// bytes returns the next section, capacity clipped.
func (r *blockReader) bytes() []byte {
	n := r.uvarint()
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// string returns the next section as a string sharing the block's memory (see the top of this file).
func (r *blockReader) string() string {
	v := r.bytes()
	if len(v) == 0 {
		return ""
	}
	return unsafe.String(&v[0], len(v))
}

// blockKey returns the key of a block (no copy).
func blockKey(b []byte) []byte {
	r := blockReader{b: b[blockFixed:]}
	return r.bytes()
}

// blockIsMarker reports whether a block is a Vary marker.
func blockIsMarker(b []byte) bool { return b[offFlags]&blockMarker != 0 }

// blockSeq is the store sequence number of a block.
func blockSeq(b []byte) uint64 { return binary.LittleEndian.Uint64(b[offSeq:]) }

// blockURL is the URL (Entry.URL) of a block, sharing its memory.
func blockURL(b []byte) string {
	r := blockReader{b: b[blockFixed:]}
	r.bytes() // key
	r.bytes() // service
	return r.string()
}

// blockBase is the base part of a block's key (no copy).
func blockBase(b []byte) []byte {
	return blockKey(b)[:binary.LittleEndian.Uint32(b[offBaseLen:])]
}

// blockVary returns the Vary section of a marker's block: a count, then the names.
func blockVary(b []byte) blockReader {
	r := blockReader{b: b[blockFixed:]}
	for range 4 { // key, service, url, etag
		r.bytes()
	}
	return r
}

// matchesKey reports whether b is the block stored under key (a block found by key's hash may be
// another key's: the store keeps 64-bit hashes, not keys).
func matchesKey(b, key []byte) bool { return bytes.Equal(blockKey(b), key) }

// view makes e a view of block b: every field the policy reads, Header left nil (the header is
// read from raw, see field and header). It does not allocate.
func (e *Entry) view(b []byte) {
	le := binary.LittleEndian
	flags := b[offFlags]
	r := blockReader{b: b[blockFixed:]}
	*e = Entry{
		Marker:       flags&blockMarker != 0,
		noStale:      flags&blockNoStale != 0,
		noCache:      flags&blockNoCache != 0,
		Status:       int(le.Uint16(b[offStatus:])),
		values:       int(le.Uint32(b[offValues:])),
		RequestTime:  fromUnixNano(int64(le.Uint64(b[offReqTime:]))),
		ResponseTime: fromUnixNano(int64(le.Uint64(b[offRespTime:]))),
		lastModified: fromUnixNano(int64(le.Uint64(b[offLastMod:]))),
		InitialAge:   time.Duration(le.Uint64(b[offInitAge:])),
		lifetime:     time.Duration(le.Uint64(b[offLifetime:])),
		swr:          time.Duration(le.Uint64(b[offSWR:])),
		sie:          time.Duration(le.Uint64(b[offSIE:])),
		BaseLen:      int(le.Uint32(b[offBaseLen:])),
		Key:          r.string(),
		Service:      r.string(),
		URL:          r.string(),
		etag:         r.string(),
		block:        b,
	}
	for range r.uvarint() {
		r.bytes() // Vary names: see varyNames
	}
	e.raw = r.bytes()
	e.Body = r.b[:len(r.b):len(r.b)]
	if len(e.Body) == 0 {
		e.Body = nil
	}
}

// headerReader walks the fields of a block's header section.
type headerReader struct{ r blockReader }

// next returns the next field's name and its number of values, which the caller reads with value.
func (h *headerReader) next() (name string, n int, ok bool) {
	if len(h.r.b) == 0 {
		return "", 0, false
	}
	name = h.r.string()
	return name, h.r.uvarint(), true
}

func (h *headerReader) value() string { return h.r.string() }

// field returns the first value of a header field of the stored answer ("" when absent), from the
// header or, for a view, from its block.
func (e *Entry) field(name string) string {
	if e.Header != nil || e.raw == nil {
		return e.Header.Get(name)
	}
	h := headerReader{r: blockReader{b: e.raw}}
	for {
		k, n, ok := h.next()
		if !ok {
			return ""
		}
		for i := range n {
			if v := h.value(); k == name && i == 0 {
				return v
			}
		}
	}
}

// header returns the stored answer's header: Header, or for a view a new map built from its block
// (values shared with the block, slices clipped). For the paths that change a header (a 304's
// refresh), never for a hit.
func (e *Entry) header() http.Header {
	if e.Header != nil || e.raw == nil {
		return e.Header
	}
	out := make(http.Header)
	vals := make([]string, e.values)
	h := headerReader{r: blockReader{b: e.raw}}
	i := 0
	for {
		k, n, ok := h.next()
		if !ok {
			return out
		}
		start := i
		for range n {
			vals[i] = h.value()
			i++
		}
		out[k] = vals[start:i:i]
	}
}

// varyNames returns the Vary names of a marker (a view's from its block). For Inspect.
func (e *Entry) varyNames() []string {
	if e.block == nil {
		return e.Vary
	}
	r := blockVary(e.block)
	out := make([]string, r.uvarint())
	for i := range out {
		out[i] = r.string()
	}
	return out
}

// own returns e as an entry that may outlive the request: a view on the caller's stack is copied to
// the heap (its block is shared, not copied). nil stays nil.
func (e *Entry) own() *Entry {
	if e == nil {
		return nil
	}
	c := *e
	return &c
}

// sameAs reports whether e and o are the same stored entry (views of one block, or one entry).
func (e *Entry) sameAs(o *Entry) bool {
	if o == nil {
		return false
	}
	if e.block != nil && o.block != nil {
		return &e.block[0] == &o.block[0]
	}
	return e == o
}
