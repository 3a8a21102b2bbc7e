//go:build race

package cache

// raceEnabled: the race detector makes sync.Pool drop items at random, so allocation counts are not
// meaningful (TestHitAllocs skips).
const raceEnabled = true
