package metrics

import (
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// TestMain fails the run if any test leaves a goroutine behind (the memory
// monitor's sampler in particular).
func TestMain(m *testing.M) {
	testutil.VerifyMain(m)
}
