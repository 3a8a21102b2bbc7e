package handoff

import (
	"bytes"
	"strconv"
)

// Limits past which the framing gives up on a connection (it then closes
// as it would without the wrapper).
const (
	maxHead      = 64 << 10 // a request or answer head, or a trailer section
	maxChunkLine = 1 << 10  // a chunk-size line (net/http allows 4 KiB)
)

// phase is where a framer is within the current message.
type phase uint8

const (
	phaseHead       phase = iota // collecting a head in buf; empty buf: between messages
	phaseBody                    // remain bytes of a body with a known length
	phaseChunkLine               // collecting a chunk-size line in buf
	phaseChunkData               // remain bytes of chunk data
	phaseChunkEnd                // the CRLF after chunk data; remain: its bytes still due
	phaseTrailer                 // collecting the trailer section in buf
	phaseUntilClose              // an answer body that ends with the connection
	phaseFailed                  // not plain HTTP/1.1 framing: gave up
)

// event is what a framer step found.
type event uint8

const (
	evNone event = iota
	evHead       // buf holds a complete head: the caller must call body or fail
	evEnd        // a message ended
)

// framer splits one direction of an HTTP/1.1 connection into messages, to
// know where each one ends. It is deliberately strict: it accepts only
// CRLF line ends, a body framed by one Content-Length or by
// "Transfer-Encoding: chunked" alone, and gives up on anything else. Where
// it gives up, the connection is never handed over; where it does not,
// net/http reads the same boundaries (FuzzRequestFraming checks that).
type framer struct {
	phase  phase
	remain int64
	excess int64  // chunk-line overhead beyond data, counted as net/http does
	buf    []byte // the head, chunk-size line or trailer being collected
}

// between reports whether the framer is between messages.
func (f *framer) between() bool { return f.phase == phaseHead && len(f.buf) == 0 }

func (f *framer) fail() { f.phase, f.buf = phaseFailed, nil }

// step consumes a prefix of p and reports how much and what it found.
func (f *framer) step(p []byte) (int, event) {
	switch f.phase {
	case phaseHead:
		if len(f.buf) == 0 && !isTokenByte(p[0]) {
			// not a request line (TLS, HTTP/2's preface is caught later, a
			// stray empty line) nor a status line
			f.fail()
			return len(p), evNone
		}
		n, done := f.collect(p, maxHead)
		if done {
			return n, evHead
		}
		return n, evNone
	case phaseBody:
		n := int(min(int64(len(p)), f.remain))
		f.remain -= int64(n)
		if f.remain == 0 {
			f.phase = phaseHead
			return n, evEnd
		}
		return n, evNone
	case phaseChunkLine:
		n, done := f.collect(p, maxChunkLine)
		if done {
			f.chunkLine()
		}
		return n, evNone
	case phaseChunkData:
		n := int(min(int64(len(p)), f.remain))
		f.remain -= int64(n)
		if f.remain == 0 {
			f.phase, f.remain = phaseChunkEnd, 2
		}
		return n, evNone
	case phaseChunkEnd:
		n := 0
		for n < len(p) && f.remain > 0 {
			if p[n] != "\r\n"[2-f.remain] {
				f.fail()
				return len(p), evNone
			}
			n++
			f.remain--
		}
		if f.remain == 0 {
			f.phase = phaseChunkLine
		}
		return n, evNone
	case phaseTrailer:
		if len(f.buf) == 0 && p[0] != '\r' && !isTokenByte(p[0]) {
			f.fail()
			return len(p), evNone
		}
		n, done := f.collect(p, maxHead)
		if done {
			if !validTrailer(f.buf) {
				f.fail()
				return len(p), evNone
			}
			f.phase, f.buf = phaseHead, f.buf[:0]
			return n, evEnd
		}
		return n, evNone
	}
	return len(p), evNone // phaseUntilClose, phaseFailed
}

// collect appends p to buf up to the end of what is being collected: a
// head or trailer section ends with an empty line, a chunk-size line with
// its CRLF (a trailer section may be just that empty line). Every LF must
// follow a CR and every CR precede an LF.
func (f *framer) collect(p []byte, limit int) (int, bool) {
	if len(f.buf) == 0 && f.phase == phaseHead {
		// the usual case: a whole head in one read
		if i := bytes.Index(p, []byte("\r\n\r\n")); i >= 0 && i+4 <= limit {
			h := p[:i+4]
			if n := bytes.Count(h, []byte{'\n'}); bytes.Count(h, []byte{'\r'}) != n || bytes.Count(h, []byte("\r\n")) != n {
				f.fail() // a CR or an LF alone
				return len(p), false
			}
			f.buf = append(f.buf, h...)
			return len(h), true
		}
	}
	from := 0
	for {
		i := bytes.IndexByte(p[from:], '\n')
		if i < 0 {
			break
		}
		i += from
		f.buf = append(f.buf, p[from:i+1]...)
		from = i + 1
		k := len(f.buf)
		if k < 2 || f.buf[k-2] != '\r' {
			f.fail()
			return len(p), false
		}
		if f.phase == phaseChunkLine || k == 2 && f.phase == phaseTrailer ||
			k >= 4 && f.buf[k-4] == '\r' && f.buf[k-3] == '\n' {
			if bytes.Count(f.buf, []byte{'\r'}) != bytes.Count(f.buf, []byte{'\n'}) {
				f.fail() // a CR alone
				return len(p), false
			}
			return from, true
		}
		if len(f.buf) > limit {
			f.fail()
			return len(p), false
		}
	}
	f.buf = append(f.buf, p[from:]...)
	if len(f.buf) > limit {
		f.fail()
	}
	return len(p), false
}

// chunkLine reads the chunk-size line in buf: hex digits, then optionally
// an extension after ";" (which net/http ignores).
func (f *framer) chunkLine() {
	line := f.buf[:len(f.buf)-2]
	f.buf = f.buf[:0]
	digits := line
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		digits = line[:i]
	}
	if len(digits) == 0 || len(digits) > 16 {
		f.fail()
		return
	}
	var size uint64
	for _, b := range digits {
		v, ok := hexValue(b)
		if !ok {
			f.fail()
			return
		}
		size = size<<4 | uint64(v)
	}
	if size > 1<<62 {
		f.fail()
		return
	}
	// net/http refuses a chunked body with too much overhead; so does this
	f.excess += int64(len(line)) + 2 - 16 - 2*int64(size)
	f.excess = max(f.excess, 0)
	if f.excess > 16<<10 {
		f.fail()
		return
	}
	if size == 0 {
		f.phase = phaseTrailer
		return
	}
	f.phase, f.remain = phaseChunkData, int64(size)
}

// body starts the body of the message whose head was just collected.
// It reports whether the message ended with its head.
func (f *framer) body(chunked bool, length int64) bool {
	f.buf = f.buf[:0]
	f.excess = 0
	switch {
	case chunked:
		f.phase = phaseChunkLine
	case length > 0:
		f.phase, f.remain = phaseBody, length
	case length < 0:
		f.phase = phaseUntilClose
	default:
		f.phase = phaseHead
		return true
	}
	return false
}

// head is what a request or answer head says about framing.
type head struct {
	status    int // answers: the status code
	isHEAD    bool
	http10    bool // HTTP/1.0: the connection ends unless "keep-alive" is said
	chunked   bool
	length    int64 // -1: none given
	close     bool  // "Connection: close"
	keepAlive bool  // "Connection: keep-alive"
}

// parseRequestHead reads a request head (ending in an empty line). It
// fails on anything but an HTTP/1.1 or HTTP/1.0 request with unambiguous
// framing.
func parseRequestHead(b []byte) (h head, ok bool) {
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || !allToken(method) ||
		string(method) == "CONNECT" || string(method) == "PRI" {
		return h, false
	}
	switch string(proto) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.http10 = true
	default:
		return h, false
	}
	h.isHEAD = string(method) == "HEAD"
	if !h.headers(rest) || h.http10 && h.chunked { // net/http ignores chunked in HTTP/1.0
		return h, false
	}
	return h, true
}

// parseAnswerHead reads an answer head as net/http writes it: with an
// HTTP/1.0 status line to an HTTP/1.0 request.
func parseAnswerHead(b []byte) (h head, ok bool) {
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	if len(line) < 12 || (string(line[:9]) != "HTTP/1.1 " && string(line[:9]) != "HTTP/1.0 ") ||
		(len(line) > 12 && line[12] != ' ') {
		return h, false
	}
	h.http10 = line[7] == '0'
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil || status < 100 {
		return h, false
	}
	h.status = status
	if !h.headers(rest) {
		return h, false
	}
	return h, true
}

// headers reads the header lines that follow a start line, noting the
// ones that frame the message. Repeated or conflicting framing fails, and
// so does a folded line. (A header name net/http refuses, such as
// "Content-Length " with a space, draws a 400 that closes the connection.)
func (h *head) headers(b []byte) bool {
	h.length = -1
	var sawLength, sawTE bool
	for len(b) > 2 { // the last 2 bytes end the head
		i := bytes.IndexByte(b, '\n') // every line ends in CRLF (collect)
		line := b[:i-1]
		b = b[i+1:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			return false
		}
		name := line[:colon]
		switch {
		case len(name) == len("Content-Length") && bytes.EqualFold(name, []byte("Content-Length")):
			value := trimOWS(line[colon+1:])
			if sawLength || len(value) == 0 || len(value) > 18 {
				return false
			}
			sawLength = true
			h.length = 0
			for _, c := range value {
				if c < '0' || c > '9' {
					return false
				}
				h.length = h.length*10 + int64(c-'0')
			}
		case len(name) == len("Transfer-Encoding") && bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if sawTE || !bytes.EqualFold(trimOWS(line[colon+1:]), []byte("chunked")) {
				return false
			}
			sawTE, h.chunked = true, true
		case len(name) == len("Connection") && bytes.EqualFold(name, []byte("Connection")):
			for tok := range bytes.SplitSeq(line[colon+1:], []byte(",")) {
				switch tok = trimOWS(tok); {
				case bytes.EqualFold(tok, []byte("close")):
					h.close = true
				case bytes.EqualFold(tok, []byte("keep-alive")):
					h.keepAlive = true
				}
			}
		}
	}
	return !(sawLength && sawTE)
}

// trimOWS trims the optional white space around a header value.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// validTrailer reports whether a trailer section (ending in an empty line)
// is lines of "name: value" that net/http's MIME reader takes as they are.
func validTrailer(b []byte) bool {
	for len(b) > 2 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || !allToken(name) {
			return false
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

func allToken(b []byte) bool {
	for _, c := range b {
		if !isTokenByte(c) {
			return false
		}
	}
	return true
}

// isTokenByte reports whether c may appear in an RFC 9110 token.
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c < 0x80 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
