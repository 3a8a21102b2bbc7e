package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestAdminRoutesAnswerJSON(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			token admin-test-secret-token
		}
		cache
	}`, up.URL))
	for range 5 {
		in.get("/api/users/1")
	}
	for _, path := range []string{"/gateway/stats", "/gateway/profile", "/gateway/memory", "/gateway/memory?top=3",
		"/gateway/health", "/gateway/pools"} {
		t.Run(path, func(t *testing.T) {
			resp, body := in.adminDo("GET", path)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			decodeJSON(t, body)
			if strings.Contains(string(body), "admin-test-secret-token") {
				t.Errorf("token in admin answer: %s", body)
			}
		})
	}

	_, body := in.adminDo("GET", "/gateway/profile")
	var prof struct {
		Gateways map[string]map[string]struct {
			Count uint64  `json:"count"`
			P95   float64 `json:"p95_ms"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(body, &prof); err != nil {
		t.Fatal(err)
	}
	users := prof.Gateways["gateway"]["users"]
	if users.Count != 5 || users.P95 <= 0 {
		t.Errorf("profile of users: %+v in %s", users, body)
	}

	_, body = in.adminDo("GET", "/gateway/stats")
	var stats struct {
		Gateways map[string]struct {
			Total struct {
				Requests uint64 `json:"requests"`
			} `json:"total"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(body, &stats); err != nil {
		t.Fatal(err)
	}
	if got := stats.Gateways["gateway"].Total.Requests; got != 5 {
		t.Errorf("stats total requests %d, want 5: %s", got, body)
	}

	// wrong method → 405 JSON
	resp, body := in.adminDo("POST", "/gateway/stats")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /gateway/stats: %d", resp.StatusCode)
	}
	decodeJSON(t, body)
	resp, body = in.adminDo("PUT", "/gateway/cache")
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "DELETE, GET" {
		t.Errorf("PUT /gateway/cache: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	decodeJSON(t, body)
}

// scrape returns the admin /metrics lines starting with caddy_gateway_.
func scrape(t *testing.T, in *instance) map[string]float64 {
	t.Helper()
	resp, err := in.client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", in.admin))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_gateway_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsScrapeMatchesTraffic(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s
		cache
	}`, up.URL))
	for range 3 {
		in.get("/api/users/cached")
	}
	in.get("/api/users/fail")
	in.get("/api/nobody/x")

	m := scrape(t, in)
	want := map[string]float64{
		`caddy_gateway_requests_total{code="2xx",service="users"}`:          3,
		`caddy_gateway_requests_total{code="5xx",service="users"}`:          1,
		`caddy_gateway_requests_total{code="4xx",service="_unknown"}`:       1,
		`caddy_gateway_cache_requests_total{result="hit",service="users"}`:  2,
		`caddy_gateway_cache_requests_total{result="miss",service="users"}`: 2,
		`caddy_gateway_request_duration_seconds_count{service="users"}`:     4,
		`caddy_gateway_upstream_duration_seconds_count{service="users"}`:    2,
		`caddy_gateway_inflight{service="users"}`:                           0,
		`caddy_gateway_cache_entries`:                                       1,
	}
	for series, v := range want {
		if got, ok := m[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	if m[`caddy_gateway_cache_bytes`] <= 0 {
		t.Errorf("cache bytes %v", m[`caddy_gateway_cache_bytes`])
	}
	target := fmt.Sprintf(`caddy_gateway_upstream_healthy{service="users",target="%s"}`, strings.TrimPrefix(up.URL, "http://"))
	testutil.Eventually(t, target+" = 1", func() bool { return scrape(t, in)[target] == 1 })
	if _, ok := m[`caddy_gateway_queued{service="users"}`]; !ok {
		t.Error("no queued gauge")
	}
	for series := range m {
		if strings.Contains(series, "/cached") || strings.Contains(series, "/fail") {
			t.Errorf("a path reached a label: %s", series)
		}
	}
}

func TestSlowRequestLogsOneLineWithRequestID(t *testing.T) {
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(60 * time.Millisecond) // the behaviour under test: a slow upstream
		}
		echoHandler(w, r)
	})
	in := startCaddy(t, fmt.Sprintf(`gateway /api/* {
		service users %s {
			token slow-test-secret-token
		}
		slow_request 40ms
	}`, up.URL))
	in.get("/api/users/fast")
	in.get("/api/users/slow?secret=qvalue")

	var slow []map[string]any
	for line := range strings.SplitSeq(in.logs(), "\n") {
		if strings.Contains(line, `"slow request"`) {
			slow = append(slow, decodeJSON(t, []byte(line)))
		}
	}
	if len(slow) != 1 {
		t.Fatalf("%d slow-request lines, want 1:\n%s", len(slow), in.logs())
	}
	l := slow[0]
	if l["service"] != "users" || l["path"] != "/slow" || l["status"] != float64(200) || l["request_id"] == "" || l["request_id"] == nil {
		t.Errorf("slow line: %v", l)
	}
	for _, secret := range []string{"slow-test-secret-token", "qvalue"} {
		if strings.Contains(fmt.Sprint(l), secret) {
			t.Errorf("slow line carries %q: %v", secret, l)
		}
	}
	// the request ID is the one the access log carries for that request
	id := l["request_id"].(string)
	if !strings.Contains(in.logs(), `"uuid":"`+id+`"`) {
		t.Errorf("access log has no entry with uuid %s", id)
	}
}

func TestSeveralGatewaysAnswerPerHandlerAndInTotal(t *testing.T) {
	up := upstreamServer(t, echoHandler)
	in := startCaddy(t, fmt.Sprintf(`gateway /a/* {
		name alpha
		service users %s
	}
	gateway /b/* {
		name beta
		service users %s
	}`, up.URL, up.URL))
	in.get("/a/users/1")
	in.get("/b/users/1")
	in.get("/b/users/2")
	_, body := in.adminDo("GET", "/gateway/stats")
	var st struct {
		Total    struct{ Requests int } `json:"total"`
		Gateways map[string]struct {
			Total struct{ Requests int } `json:"total"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.Total.Requests != 3 || st.Gateways["alpha"].Total.Requests != 1 || st.Gateways["beta"].Total.Requests != 2 {
		t.Errorf("stats: %s", body)
	}
	_, body = in.adminDo("GET", "/gateway/stats?name=beta")
	if strings.Contains(string(body), "alpha") {
		t.Errorf("?name=beta shows alpha: %s", body)
	}
	resp, body := in.adminDo("GET", "/gateway/stats?name=gamma")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown name: %d %s", resp.StatusCode, body)
	}
	decodeJSON(t, body)
}
