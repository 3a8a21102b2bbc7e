package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCacheReasons: the reason counters of several caches are summed per service and reason, and a
// removed cache stops counting.
func TestCacheReasons(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	rmA := a.SetCacheReasons("a", func() map[string]map[string]int64 {
		return map[string]map[string]int64{"users": {"private": 3, "no-store": 1}}
	})
	b.SetCacheReasons("b", func() map[string]map[string]int64 {
		return map[string]map[string]int64{"users": {"private": 2}, "orders": {"hit-for-miss": 7}}
	})
	const name = "caddy_gateway_cache_miss_reasons_total"
	for _, tt := range []struct {
		service, reason string
		want            float64
	}{
		{"users", "private", 5},
		{"users", "no-store", 1},
		{"orders", "hit-for-miss", 7},
	} {
		if got, _ := sample(t, reg, name, map[string]string{"service": tt.service, "reason": tt.reason}); got != tt.want {
			t.Errorf("%s/%s = %v, want %v", tt.service, tt.reason, got, tt.want)
		}
	}
	rmA()
	if got, _ := sample(t, reg, name, map[string]string{"service": "users", "reason": "private"}); got != 2 {
		t.Errorf("after remove: %v, want 2", got)
	}
	if _, found := sample(t, reg, name, map[string]string{"service": "users", "reason": "no-store"}); found {
		t.Error("a removed cache's series is still exported")
	}
}
