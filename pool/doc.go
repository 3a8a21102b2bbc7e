// Package pool holds the per-service resource controls of the gateway, all
// built on plain Go and net/http so they can be tested without Caddy:
//
//   - [Limiter]: admission control. A service gets at most maxConns requests
//     in flight; up to maxPending more wait in a FIFO queue for at most
//     queueTimeout, and the rest are refused at once ([ErrQueueFull]) so an
//     overloaded upstream sheds load instead of piling up goroutines.
//   - [Workers]: a bounded pool for background jobs (revalidation, health
//     probes) that never blocks the request path and survives panicking jobs.
//   - [Backoff], [Budget], [IsIdempotent]: the retry policy the upstream layer
//     applies on top of Caddy's own dial retries.
//   - [ConnCounter]: open upstream connections counted from their real life
//     cycle, and how many of them serve an exchange (the exchanges in flight,
//     at most the open ones), for the admin /gateway/pools view.
package pool
