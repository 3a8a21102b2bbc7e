package testredis

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sentinel is a primary with one replica, watched by one real Sentinel
// (quorum 1, down after 500 ms), so that killing the primary promotes the
// replica within a few seconds.
type Sentinel struct {
	Primary, Replica, Sentinel *Server
	Master                     string // the name the sentinel monitors
}

// StartSentinel starts the three servers and waits until the sentinel knows
// the replica. It skips (fails in CI) without redis-server.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin := binary(t, "redis-server")
	s := &Sentinel{Master: "gwmaster"}
	s.Primary = start(t, bin)
	s.Replica = start(t, bin, "--replicaof", "127.0.0.1", strconv.Itoa(s.Primary.port))
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 1\nsentinel down-after-milliseconds %[1]s 500\n"+
		"sentinel failover-timeout %[1]s 3000\nsentinel resolve-hostnames no\n", s.Master, s.Primary.port)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Sentinel = &Server{t: t, bin: bin, port: freePort(t), dir: dir, conf: conf, args: []string{"--sentinel"}}
	s.Sentinel.start()
	t.Cleanup(s.Sentinel.Kill)
	cli := binary(t, "redis-cli")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command(cli, "-p", strconv.Itoa(s.Sentinel.port), "sentinel", "replicas", s.Master).Output()
		if strings.Contains(string(out), strconv.Itoa(s.Replica.port)) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel does not see the replica:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// URL is the sentinel's redis:// URL.
func (s *Sentinel) URL() string { return "redis://" + s.Sentinel.Addr() }
