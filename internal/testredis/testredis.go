// Package testredis starts a real redis-server for tests, on a free
// loopback port, and can kill and restart it. Tests skip when the binary is
// missing, except in CI (CI=true), where it is a failure: .ci/run installs it.
package testredis

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a real redis-server started by a test on a free loopback port.
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	conf string   // a config file given first (sentinel), or ""
	args []string // extra redis-server arguments
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server, or skips when it is not installed (fails in CI, where it must be).
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, binary(t, "redis-server"))
}

// binary finds a Redis program, or skips the test when it is not installed (fails in CI).
func binary(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found in CI: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install -y redis-server); skipping the Redis tier tests", name)
	}
	return bin
}

func start(t testing.TB, bin string, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, port: freePort(t), dir: t.TempDir(), args: args}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://127.0.0.1:" + strconv.Itoa(s.port) + "/0" }

// Restart starts the server again on the same port after Kill.
func (s *Server) Restart() { s.start() }

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "warning"}, s.args...)
	if s.conf != "" {
		args = append([]string{s.conf, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--loglevel", "warning"}, s.args...)
	}
	cmd := exec.Command(s.bin, args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), time.Second)
		if err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			_ = c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not start on port %d: %v", s.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server abruptly (SIGKILL) and waits for the process to end.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }
