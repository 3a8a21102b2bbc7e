package cache

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions configure the shared Redis tier (Options.Redis). Zero values select the defaults.
//
// Exactly one topology is used: a standalone server (URL), a Redis Cluster (Cluster, the seed
// nodes) or a primary found through Sentinel (SentinelMaster and Sentinels). Routing, MOVED/ASK
// redirects, topology refresh and failover are go-redis' (ClusterClient, FailoverClient).
type RedisOptions struct {
	// URL is redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path; go-redis'
	// query options (e.g. ?dial_timeout=) are accepted too. Required unless Cluster or Sentinels is set.
	URL string
	// Cluster lists seed nodes of a Redis Cluster, each a redis:// or rediss:// URL (all with the same
	// scheme; credentials and TLS are taken from the first). The other nodes are discovered.
	Cluster []string
	// SentinelMaster is the name of the monitored primary; Sentinels are the sentinels' redis:// or
	// rediss:// URLs (one scheme; the first URL's credentials and database are the data nodes').
	SentinelMaster string
	Sentinels      []string
	// SentinelPassword authenticates to the sentinels themselves, when they require it.
	SentinelPassword string
	// Password, when set, replaces the URLs' (already resolved, e.g. from {env.REDIS_PASSWORD}).
	Password string
	// PoolSize is the number of connections kept per instance (per node on a cluster). Default 10 per
	// GOMAXPROCS.
	PoolSize int
	// Timeout bounds what the tier may add to one request: a lookup (both round trips of a Vary
	// lookup, waiting for a pooled connection and dialing included) or an invalidation after an
	// unsafe method. When it expires the request continues without Redis. Default 50ms.
	Timeout time.Duration
	// DialTimeout bounds one connection attempt off the request path (probes, pub/sub, writes).
	// Default 250ms.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout are the socket deadlines of one command. Default Timeout.
	ReadTimeout, WriteTimeout time.Duration
	// KeyPrefix starts every key and the pub/sub channel; instances sharing entries must use the same
	// one. Default "caddy-gateway".
	KeyPrefix string
	// BackoffMin and BackoffMax bound the time the tier is skipped after an error before a background
	// probe (exponential, jittered; a tier that fails again soon after recovering continues where it
	// left off). Defaults 100ms and 10s.
	BackoffMin, BackoffMax time.Duration
	// WriteQueue is how many stores may wait for the background writers; more are dropped (counted).
	// Default 1024.
	WriteQueue int
}

// Topologies of RedisStats.Topology.
const (
	TopologyStandalone = "standalone"
	TopologyCluster    = "cluster"
	TopologySentinel   = "sentinel"
)

const defaultRedisTimeout = 50 * time.Millisecond

// topology names the configured topology.
func (o *RedisOptions) topology() string {
	switch {
	case len(o.Cluster) > 0:
		return TopologyCluster
	case o.SentinelMaster != "" || len(o.Sentinels) > 0:
		return TopologySentinel
	}
	return TopologyStandalone
}

// withDefaults fills the zero values and checks the result.
func (o RedisOptions) withDefaults() (RedisOptions, error) {
	if o.Timeout == 0 {
		o.Timeout = defaultRedisTimeout
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 250 * time.Millisecond
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = o.Timeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = o.Timeout
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "caddy-gateway"
	}
	if o.BackoffMin == 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = 10 * time.Second
	}
	if o.WriteQueue == 0 {
		o.WriteQueue = 1024
	}
	switch {
	case o.Timeout < 0 || o.DialTimeout < 0 || o.ReadTimeout < 0 || o.WriteTimeout < 0:
		return o, errors.New("cache: redis: timeouts must not be negative")
	case o.PoolSize < 0 || o.WriteQueue < 0:
		return o, errors.New("cache: redis: pool_size and write queue must not be negative")
	case o.BackoffMin <= 0 || o.BackoffMax < o.BackoffMin:
		return o, errors.New("cache: redis: backoff must be positive, min at most max")
	}
	return o, nil
}

// newClient builds the go-redis client of the configured topology: a Client for a standalone server
// (every URL form go-redis parses, unix:// included), a ClusterClient or a FailoverClient. For the
// last two, the first URL gives credentials, TLS and database; the others only their address.
func (o *RedisOptions) newClient() (redis.UniversalClient, error) {
	if o.topology() == TopologyStandalone {
		if o.URL == "" {
			return nil, errors.New("cache: redis: URL is required")
		}
		ro, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("cache: redis: invalid URL: %w", redactURLError(err, o.URL))
		}
		if o.Password != "" {
			ro.Password = o.Password
		}
		if o.PoolSize > 0 {
			ro.PoolSize = o.PoolSize
		}
		ro.DialTimeout = o.DialTimeout
		ro.ReadTimeout = o.ReadTimeout
		ro.WriteTimeout = o.WriteTimeout
		ro.PoolTimeout = o.Timeout
		ro.ContextTimeoutEnabled = true // request contexts carry the Timeout deadline
		ro.MaxRetries = -1              // a retry would exceed the budget; the next request tries again
		ro.DialerRetries = 1
		ro.DisableIdentity = true // no CLIENT SETINFO round trip on each new connection
		ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClient(ro), nil
	}
	uo, err := o.universalOptions()
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(uo), nil
}

// universalOptions translates a cluster or sentinel configuration into go-redis options.
func (o *RedisOptions) universalOptions() (*redis.UniversalOptions, error) {
	var urls []string
	topo := o.topology()
	switch topo {
	case TopologyCluster:
		if o.URL != "" || o.SentinelMaster != "" || len(o.Sentinels) > 0 {
			return nil, errors.New("cache: redis: cluster excludes a URL and sentinels")
		}
		urls = o.Cluster
	case TopologySentinel:
		switch {
		case o.URL != "":
			return nil, errors.New("cache: redis: sentinel excludes a URL")
		case o.SentinelMaster == "":
			return nil, errors.New("cache: redis: sentinel needs the master name")
		case len(o.Sentinels) == 0:
			return nil, errors.New("cache: redis: sentinel needs at least one sentinel address")
		}
		urls = o.Sentinels
	}
	var first *redis.Options
	addrs := make([]string, 0, len(urls))
	scheme := ""
	for _, u := range urls {
		s, _, _ := strings.Cut(u, "://")
		if s != "redis" && s != "rediss" {
			return nil, fmt.Errorf("cache: redis: %s address %q must be a redis:// or rediss:// URL", topo, redactURL(u))
		}
		if scheme != "" && s != scheme {
			return nil, fmt.Errorf("cache: redis: %s addresses mix %s:// and %s:// (one scheme for all)", topo, scheme, s)
		}
		scheme = s
		ro, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("cache: redis: invalid URL: %w", redactURLError(err, u))
		}
		if first == nil {
			first = ro
		}
		addrs = append(addrs, ro.Addr)
	}
	if topo == TopologyCluster && first.DB != 0 {
		return nil, errors.New("cache: redis: a cluster has only database 0")
	}
	uo := &redis.UniversalOptions{
		Addrs:            addrs,
		Username:         first.Username,
		Password:         first.Password,
		DB:               first.DB,
		TLSConfig:        first.TLSConfig,
		Dialer:           first.Dialer,
		Protocol:         first.Protocol,
		IsClusterMode:    topo == TopologyCluster,
		MasterName:       o.SentinelMaster,
		SentinelPassword: o.SentinelPassword,
		PoolSize:         first.PoolSize,
		DialTimeout:      o.DialTimeout,
		ReadTimeout:      o.ReadTimeout,
		WriteTimeout:     o.WriteTimeout,
		PoolTimeout:      o.Timeout,
		// Request contexts carry the Timeout deadline.
		ContextTimeoutEnabled: true,
		// A retry would exceed the budget; the next request tries again. Redirects (MOVED, ASK) of a
		// cluster are followed: they are how a slot migration is served.
		MaxRetries:    -1,
		MaxRedirects:  3,
		DialerRetries: 1,
		// No CLIENT SETINFO round trip on each new connection.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if o.Password != "" {
		uo.Password = o.Password
	}
	if o.PoolSize > 0 {
		uo.PoolSize = o.PoolSize
	}
	return uo, nil
}

// redactURL hides a password in a URL.
func redactURL(u string) string {
	if i := strings.Index(u, "@"); i > 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "…" + u[i:]
		}
		return "…" + u[i:]
	}
	return u
}

// redactURLError keeps a password in the URL out of an error message.
func redactURLError(err error, url string) error {
	msg := err.Error()
	if i := strings.Index(url, "@"); i > 0 && strings.Contains(msg, url[:i]) {
		msg = strings.ReplaceAll(msg, url[:i], "…")
	}
	return errors.New(msg)
}
