package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const dashboardPath = "../grafana/caddy-gateway.json"

var gatewayMetricRE = regexp.MustCompile(`\bcaddy_gateway_[a-zA-Z0-9_]+`)

// collectExprs returns every "expr" string anywhere in a decoded JSON value
// (panel targets, nested row panels).
func collectExprs(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "expr" {
				*out = append(*out, s)
				continue
			}
			collectExprs(x, out)
		}
	case []any:
		for _, x := range v {
			collectExprs(x, out)
		}
	}
}

// TestDashboardMetricsExist keeps the Grafana dashboard and the collectors
// in step: every caddy_gateway_* name a panel queries must be exported, and
// every exported family must appear on the dashboard.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var exprs []string
	collectExprs(dash, &exprs)
	if len(exprs) < 10 {
		t.Fatalf("only %d queries found in %s", len(exprs), dashboardPath)
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range gatewayMetricRE.FindAllString(e, -1) {
			used[name] = true
		}
	}

	reg := prometheus.NewPedanticRegistry()
	c, err := NewCollectors(reg)
	if err != nil {
		t.Fatal(err)
	}
	recordTraffic(c)
	defer c.SetCacheSize("x", func() (int64, int64) { return 1, 1 })()
	defer c.SetCacheReasons("x", func() map[string]map[string]int64 { return map[string]map[string]int64{"s": {"private": 1}} })()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]dto.MetricType{}
	for _, mf := range mfs {
		families[mf.GetName()] = mf.GetType()
	}

	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	usedFamilies := map[string]bool{}
	for _, name := range names {
		if _, ok := families[name]; ok {
			usedFamilies[name] = true
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base, ok := strings.CutSuffix(name, suffix)
			if ok && families[base] == dto.MetricType_HISTOGRAM {
				usedFamilies[base], found = true, true
			}
		}
		if !found {
			t.Errorf("dashboard queries %s, which NewCollectors does not export", name)
		}
	}
	for name := range families {
		if strings.HasPrefix(name, "caddy_gateway_") && !usedFamilies[name] {
			t.Errorf("%s is exported but no dashboard panel shows it", name)
		}
	}
	t.Logf("%d queries, %d caddy_gateway names checked", len(exprs), len(names))
}
