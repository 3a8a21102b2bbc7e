package testredis

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a real Redis Cluster of loopback redis-server nodes, joined
// with redis-cli --cluster create.
type Cluster struct {
	Nodes []*Server // masters first, then replicas (as redis-cli assigns them)
}

// StartCluster starts masters × (1 + replicas) cluster-enabled nodes, joins
// them into a cluster and waits until every node reports cluster_state:ok.
// It skips (fails in CI) without redis-server or redis-cli. The nodes stop
// when the test ends.
func StartCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	server := binary(t, "redis-server")
	cli := binary(t, "redis-cli")
	c := &Cluster{}
	args := []string{"create"}
	for range masters * (1 + replicas) {
		n := start(t, server, "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
			"--cluster-config-file", "nodes.conf")
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, append([]string{"--cluster"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		for {
			out, _ := exec.Command(cli, "-p", strconv.Itoa(n.port), "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok:\n%s", n.Addr(), out)
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
	}
	return c
}

// URLs are the redis:// URLs of every node, for seeds.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = "redis://" + n.Addr()
	}
	return out
}

// Reshard moves n slots from the master at from to the master at to (indexes into Nodes) with
// redis-cli --cluster reshard, while the cluster serves.
func (c *Cluster) Reshard(t testing.TB, from, to, n int) {
	t.Helper()
	cli := binary(t, "redis-cli")
	id := func(s *Server) string {
		out, err := exec.Command(cli, "-p", strconv.Itoa(s.port), "cluster", "myid").Output()
		if err != nil {
			t.Fatalf("cluster myid: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	args := []string{"--cluster", "reshard", c.Nodes[0].Addr(), "--cluster-from", id(c.Nodes[from]),
		"--cluster-to", id(c.Nodes[to]), "--cluster-slots", strconv.Itoa(n), "--cluster-yes"}
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
