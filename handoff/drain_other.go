//go:build !unix

package handoff

import (
	"net"
	"time"
)

// drain takes what is queued on a socket about to be closed, without
// waiting for more than a moment.
func drain(tcp *net.TCPListener) []net.Conn {
	var conns []net.Conn
	for range 4096 {
		_ = tcp.SetDeadline(time.Now().Add(100 * time.Microsecond))
		c, err := tcp.Accept()
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	return conns
}
