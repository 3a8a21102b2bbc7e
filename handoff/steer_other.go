//go:build !linux

package handoff

import (
	"errors"
	"net"
)

// steeredSocket is Linux only (SO_ATTACH_REUSEPORT_CBPF): elsewhere the
// first config's socket serves the group, and a later config's socket is
// drained as it stops listening.
func steeredSocket(*net.TCPListener) (net.Listener, []net.Conn, error) {
	return nil, nil, errors.ErrUnsupported
}

// SteeringSupported reports whether new connections can be steered to a
// group's own socket: never outside Linux.
func SteeringSupported() bool { return false }
