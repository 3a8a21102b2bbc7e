package handoff

import (
	"net"
	"testing"
)

// loopConn serves the same request on every Read and discards writes.
type loopConn struct {
	net.Conn
	req []byte
}

func (l *loopConn) Read(p []byte) (int, error)  { return copy(p, l.req), nil }
func (l *loopConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkConnExchange is what following the framing costs a keep-alive
// exchange: one request read, one answer (head, then a 1 KiB body) written.
func BenchmarkConnExchange(b *testing.B) {
	req := []byte("GET /api/users/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
	head := []byte("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nCache-Status: gateway; hit\r\nContent-Length: 1024\r\nContent-Type: application/json\r\nDate: Wed, 25 Nov 2026 23:59:59 GMT\r\n\r\n")
	body := make([]byte, 1024)
	g := &group{changed: make(chan struct{}), serveClosing: serveClosing}
	l := &listener{group: g, conns: make(chan net.Conn), done: make(chan struct{})}
	c := &conn{Conn: &loopConn{req: req}, listener: l}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		c.Read(buf)
		c.Write(head)
		c.Write(body)
	}
	if c.never || c.final == 0 {
		b.Fatalf("framing lost: never %v, answers %d", c.never, c.final)
	}
}
