package outcome

import (
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyMain(m) }

func TestEveryValueHasItsName(t *testing.T) {
	seen := map[string]bool{}
	for c := range NumCache {
		if n := c.String(); n == "invalid" || seen[n] {
			t.Errorf("Cache(%d) named %q", c, n)
		}
		seen[c.String()] = true
	}
	for e := range NumErrors {
		if n := e.String(); n == "invalid" || seen[n] {
			t.Errorf("Error(%d) named %q", e, n)
		}
		seen[e.String()] = true
	}
	if NumCache.String() != "invalid" || NumErrors.String() != "invalid" {
		t.Error("out-of-range values must be invalid")
	}
}

func TestServedFetchedAndCounted(t *testing.T) {
	served := map[Cache]bool{CacheHit: true, CacheCollapsed: true, CacheStale: true}
	fetched := map[Cache]bool{CacheMiss: true, CacheRevalidated: true}
	for c := range NumCache {
		if c.Served() != served[c] || c.Fetched() != fetched[c] {
			t.Errorf("%v: served %v fetched %v", c, c.Served(), c.Fetched())
		}
	}
	for e := range NumErrors {
		if want := e != ErrorNone && e != ErrorClient; e.Counted() != want {
			t.Errorf("%v: counted %v", e, e.Counted())
		}
	}
}
