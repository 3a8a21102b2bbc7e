//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// toFirstSocket is a classic BPF program for a SO_REUSEPORT group: it
// picks the group's first socket for every new connection.
var toFirstSocket = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// steeredSocket replaces a config's listening socket with the group's own:
// one on the same address whose SO_REUSEPORT group steers every new
// connection to it, so that the sockets later configs bind never receive
// one, and stopping them (drain) can lose none. The kernel keeps a group's
// program only when the group is created, and refuses one on a socket
// already listening, so the old socket is emptied and stops listening
// (drain) the instant before the new one listens; it returns what it held.
// On any error the old socket is left listening.
func steeredSocket(old *net.TCPListener) (net.Listener, []net.Conn, error) {
	network, err := sameFamily(old)
	if err != nil {
		return nil, nil, err
	}
	var queued []net.Conn
	drained := false
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			if err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return
			}
			err = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
				&unix.SockFprog{Len: uint16(len(toFirstSocket)), Filter: &toFirstSocket[0]})
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("steering new connections: %w", err)
		}
		queued, drained = drain(old), true
		return nil
	}}
	sock, err := lc.Listen(context.Background(), network, old.Addr().String())
	if err != nil {
		if drained {
			relisten(old)
		}
		for _, c := range queued {
			_ = c.Close()
		}
		return nil, nil, err
	}
	return sock, queued, nil
}

// sameFamily is the network that binds a socket like old: IPv4, IPv6 only,
// or IPv6 taking IPv4 too (Go's "tcp" on a wildcard address).
func sameFamily(old *net.TCPListener) (string, error) {
	rc, err := old.SyscallConn()
	if err != nil {
		return "", err
	}
	network := ""
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(int(fd)); serr != nil {
			return
		}
		if dev, _ := unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE); dev != "" {
			serr = errors.New("socket bound to a device")
			return
		}
		switch sa.(type) {
		case *unix.SockaddrInet4:
			network = "tcp4"
		case *unix.SockaddrInet6:
			var only int
			if only, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); only == 1 {
				network = "tcp6"
			} else {
				network = "tcp"
			}
		default:
			serr = errors.New("not an IP socket")
		}
	}); err != nil {
		return "", err
	}
	return network, serr
}

// relisten puts a socket that drain stopped back to listening.
func relisten(old *net.TCPListener) {
	if rc, err := old.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.Listen(int(fd), unix.SOMAXCONN) })
	}
}

// SteeringSupported reports whether this kernel takes the program that
// steers new connections to a group's own socket. Without it, a new
// connection can still be reset in the instant a later config's socket
// stops listening; tests that count on steering check this first.
func SteeringSupported() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) != nil {
		return false
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: uint16(len(toFirstSocket)), Filter: &toFirstSocket[0]}) == nil
}
