//go:build unix

package handoff

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// drain takes what is queued on a socket about to be closed and stops it
// listening in the same breath: the kernel spreads new connections over
// every socket on the port, and resets those still queued on one that
// closes, so the time between the last accept and the end of listening is
// all the time a connection has to be lost in (a few microseconds).
func drain(tcp *net.TCPListener) []net.Conn {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	var fds []int
	_ = rc.Control(func(fd uintptr) {
		for len(fds) < 4096 {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			switch {
			case err == nil:
				fds = append(fds, nfd)
				continue
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
				continue
			}
			break // EAGAIN: nothing queued
		}
		// a listening socket shut down for reading stops listening at once
		_ = unix.Shutdown(int(fd), unix.SHUT_RD)
	})
	conns := make([]net.Conn, 0, len(fds))
	for _, nfd := range fds {
		f := os.NewFile(uintptr(nfd), "")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err == nil {
			conns = append(conns, c)
		}
	}
	return conns
}
