package cache

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// topologyInterval is how often a cluster's nodes or a sentinel's view are read.
const topologyInterval = time.Second

// RedisNode is one server of a cluster or sentinel topology (RedisStats.Nodes).
type RedisNode struct {
	Addr string `json:"addr"`
	Role string `json:"role"` // master or replica
	Up   bool   `json:"up"`
}

// topology is what watchTopology last read.
type topology struct {
	mu           sync.Mutex
	nodes        []RedisNode
	roles        map[string]string // node id (or address) → role, to notice a promotion
	lastFailover time.Time
}

// snapshot adds the topology to s.
func (h *topology) snapshot(s *RedisStats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.Nodes = append([]RedisNode(nil), h.nodes...)
	s.LastFailover = h.lastFailover
}

// watchTopology reads a cluster's nodes (CLUSTER NODES) or a sentinel's view of the primary and its
// replicas every TopologyInterval, for Stats, and notes a failover when a node that was a replica is
// seen as a primary (cluster) or the primary's address changes (sentinel). go-redis follows the
// change by itself; this only reports it.
func (t *redisTier) watchTopology() {
	var sentinels []*redis.SentinelClient
	if t.opts.topology() == TopologySentinel {
		uo, err := t.opts.universalOptions()
		if err != nil {
			return // newRedisTier checked them
		}
		for _, addr := range uo.Addrs {
			sentinels = append(sentinels, redis.NewSentinelClient(&redis.Options{
				Addr: addr, Username: uo.SentinelUsername, Password: uo.SentinelPassword,
				TLSConfig: uo.TLSConfig, DialTimeout: t.opts.DialTimeout, ReadTimeout: t.opts.DialTimeout,
				WriteTimeout: t.opts.DialTimeout, MaxRetries: -1, DisableIdentity: true, PoolSize: 1,
			}))
		}
		defer func() {
			for _, s := range sentinels {
				_ = s.Close()
			}
		}()
	}
	for {
		ctx, cancel := context.WithTimeout(t.ctx, t.opts.DialTimeout+t.opts.ReadTimeout)
		var nodes []RedisNode
		var ids []string
		var err error
		if cc, ok := t.client.(*redis.ClusterClient); ok {
			nodes, ids, err = clusterNodes(ctx, cc)
		} else {
			nodes, err = sentinelNodes(ctx, sentinels, t.opts.SentinelMaster)
		}
		cancel()
		if err == nil {
			t.noteTopology(nodes, ids)
		} else if t.ctx.Err() == nil {
			t.log.Debug("reading the redis topology failed", zap.Error(err))
		}
		if !t.sleep(topologyInterval) {
			return
		}
	}
}

// noteTopology records nodes (ids[i] identifies nodes[i]; nil: the address does) and the time of a
// failover when a known replica became a primary.
func (t *redisTier) noteTopology(nodes []RedisNode, ids []string) {
	h := &t.topo
	h.mu.Lock()
	defer h.mu.Unlock()
	roles := make(map[string]string, len(nodes))
	failover := false
	for i, n := range nodes {
		id := n.Addr
		if ids != nil {
			id = ids[i]
		}
		roles[id] = n.Role
		if old, ok := h.roles[id]; ok && old == "replica" && n.Role == "master" {
			failover = true
		}
	}
	if failover {
		h.lastFailover = time.Now()
		t.log.Info("redis failover seen: a replica was promoted", zap.Any("nodes", nodes))
	}
	h.nodes, h.roles = nodes, roles
}

// clusterNodes parses CLUSTER NODES: "<id> <ip:port@cport[,host]> <flags> <master> <ping> <pong>
// <epoch> <link> <slots>...". A node is up when its link is connected and it is not flagged failing.
func clusterNodes(ctx context.Context, cc *redis.ClusterClient) ([]RedisNode, []string, error) {
	out, err := cc.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, nil, err
	}
	var nodes []RedisNode
	var ids []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		role := "replica"
		if slices.Contains(flags, "master") {
			role = "master"
		}
		up := f[7] == "connected" && !slices.Contains(flags, "fail") && !slices.Contains(flags, "fail?") &&
			!slices.Contains(flags, "noaddr")
		nodes = append(nodes, RedisNode{Addr: addr, Role: role, Up: up})
		ids = append(ids, f[0])
	}
	slices.SortFunc(nodes, func(a, b RedisNode) int { return strings.Compare(a.Addr, b.Addr) })
	return nodes, ids, nil
}

// sentinelNodes asks the first sentinel that answers for the primary and its replicas. A node is up
// unless the sentinel flags it down (s_down, o_down) or disconnected.
func sentinelNodes(ctx context.Context, sentinels []*redis.SentinelClient, master string) ([]RedisNode, error) {
	var err error
	for _, s := range sentinels {
		var m map[string]string
		if m, err = s.Master(ctx, master).Result(); err != nil {
			continue
		}
		var rs []map[string]string
		if rs, err = s.Replicas(ctx, master).Result(); err != nil {
			continue
		}
		nodes := []RedisNode{sentinelNode(m, "master")}
		for _, r := range rs {
			nodes = append(nodes, sentinelNode(r, "replica"))
		}
		return nodes, nil
	}
	return nil, err
}

func sentinelNode(m map[string]string, role string) RedisNode {
	flags := m["flags"]
	up := !strings.Contains(flags, "s_down") && !strings.Contains(flags, "o_down") && !strings.Contains(flags, "disconnected")
	return RedisNode{Addr: net.JoinHostPort(m["ip"], m["port"]), Role: role, Up: up}
}
