package routing

import (
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { testutil.VerifyMain(m) }
