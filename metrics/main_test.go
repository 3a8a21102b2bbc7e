package metrics

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind (the memory
// monitor's sampler in particular).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
