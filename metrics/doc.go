// Package metrics holds the gateway's observability: Prometheus collectors
// (prometheus.go), a bounded-memory latency profiler built on DDSketch
// (profiler.go), cheap per-service counters with an EWMA response time for the
// admin API (stats.go) and a runtime memory monitor with leak detection
// (memory.go).
//
// The package imports no Caddy types so it can be tested on its own; the
// gateway handler creates these objects in Provision, resolves per-service
// handles once, and only calls allocation-free methods on those handles while
// serving requests.
package metrics
