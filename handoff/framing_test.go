package handoff

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// requestEnds runs the framer over a stream of requests and returns the
// offsets where it saw requests end, up to where it gave up.
func requestEnds(data []byte) []int64 {
	var f framer
	var ends []int64
	var at int64
	for b := data; len(b) > 0 && f.phase != phaseFailed; {
		n, ev := f.step(b)
		b, at = b[n:], at+int64(n)
		switch ev {
		case evHead:
			h, ok := parseRequestHead(f.buf)
			if !ok || h.close {
				return ends
			}
			if f.body(h.chunked, max(h.length, 0)) {
				ends = append(ends, at)
			}
		case evEnd:
			ends = append(ends, at)
		}
	}
	return ends
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// FuzzRequestFraming checks the one property hand-overs rest on: where the
// framer sees a request end, net/http does too. (Where net/http refuses a
// request the framer took, it answers with "Connection: close", and the
// connection is not handed over.)
func FuzzRequestFraming(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nab",
		"GET / HTTP/1.1\nHost: x\n\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countingReader{r: bytes.NewReader(data)}
		br := bufio.NewReader(cr)
		for i, want := range requestEnds(data) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return // refused: answered with "Connection: close"
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				t.Fatalf("request %d: the framer took a body net/http refuses: %v", i, err)
			}
			if got := cr.n - int64(br.Buffered()); got != want {
				t.Fatalf("request %d ends at %d for net/http, at %d for the framer", i, got, want)
			}
		}
	})
}
