//go:build race

package metrics

// raceEnabled shrinks the largest sample counts: the race detector slows
// Record by an order of magnitude.
const raceEnabled = true
