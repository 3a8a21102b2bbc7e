package upstream

import (
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// TestMain fails the package if any test leaves a goroutine behind. The
// Caddy config some tests load (caddyContext) is stopped first.
func TestMain(m *testing.M) {
	testutil.VerifyMain(&stopCaddy{m})
}

// stopCaddy runs the tests, then stops the Caddy config they loaded.
type stopCaddy struct{ m *testing.M }

func (s *stopCaddy) Run() int {
	code := s.m.Run()
	_ = caddy.Stop()
	return code
}
