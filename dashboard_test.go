package gateway

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds a headless browser for the dashboard tests: skipped with a
// message when there is none, failed in CI (CI=true), as the Redis tests.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH: .ci/run installs Debian's chromium")
	}
	t.Skip("no chromium on PATH (apt-get install chromium): dashboard browser test skipped")
	return ""
}

// dashboardOrigins lets a browser open the page by its address: Caddy's
// admin endpoint checks the origin of every request a browser makes, and a
// navigation typed into the address bar has none (docs/dashboard.md).
const dashboardOrigins = `origins 127.0.0.1:%[1]d ""`

// browser starts a headless Chromium and returns a tab's context, cancelled
// (and the browser stopped and waited for) when the test ends.
func browser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		tcancel()
		cancel()
		acancel()
	})
	return ctx
}

// waitJS polls a JavaScript expression in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('status').textContent + ' scripts:' + document.scripts.length + ' typeof refresh: ' + typeof refresh + '\n' + document.querySelector('main').innerText`))
		t.Fatalf("waiting for %s (%s): %v\n%s", what, expr, err, html)
	}
}

// TestDashboardInABrowser opens GET /gateway/ui in headless Chromium on a
// gateway with traffic and checks what a person would see: a row per
// service with its requests, an upstream that goes down shown as unhealthy,
// and a purge that removes entries; no token anywhere on the page.
func TestDashboardInABrowser(t *testing.T) {
	ctx := browser(t)
	const secret = "dashboard-secret-token"
	var orderCalls atomic.Int64
	users := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "user")
		_, _ = w.Write([]byte(`{"user":true}`))
	})
	orders := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		orderCalls.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = w.Write([]byte(`{"order":true}`))
	})
	in := startCaddyAdmin(t, dashboardOrigins, fmt.Sprintf(`gateway /api/* {
		service users %s {
			token %s
		}
		service orders %s {
			health /health 100ms 100ms
		}
		cache
	}`, users.URL, secret, orders.URL))
	for i := range 12 {
		in.get(fmt.Sprintf("/api/users/%d", i%4))
		in.get(fmt.Sprintf("/api/orders/%d", i%3))
	}

	page := fmt.Sprintf("http://127.0.0.1:%d/gateway/ui", in.admin)
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatal(err)
	}
	row := func(svc string) string { return `document.querySelector('#services tr[data-service="` + svc + `"]')` }
	waitJS(t, ctx, "a row per service with its requests",
		`document.querySelectorAll('#services tbody tr').length === 2 && `+
			row("users")+`.querySelector('.requests').textContent === '12' && `+
			row("orders")+`.querySelector('.requests').textContent === '12'`)
	waitJS(t, ctx, "healthy targets", row("orders")+`.textContent.includes('healthy') && !`+row("orders")+`.textContent.includes('UNHEALTHY')`)
	waitJS(t, ctx, "the cache's entries", `document.querySelector('#cache').textContent.includes('Entries7')`)
	waitJS(t, ctx, "two points of the sparkline", `document.querySelector('#spark-rps polyline') !== null`)

	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		// traffic over a few refreshes, so that the picture has sparklines
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
					in.get(fmt.Sprintf("/api/users/%d", i%50))
					in.get(fmt.Sprintf("/api/orders/%d", i%3))
				}
			}
		}()
		waitJS(t, ctx, "a few points of traffic", `document.querySelector('#spark-rps polyline').getAttribute('points').split(' ').length >= 5`)
		close(stop)
		<-done
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("docs/dashboard.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The upstream of orders goes away: its active health check fails and
	// the row says so, in colour and in text.
	orders.Close()
	waitJS(t, ctx, "orders marked unhealthy",
		row("orders")+`.textContent.includes('UNHEALTHY') && `+row("orders")+`.className === 'bad'`)

	// Purge everything through the form: it asks first, then shows the count.
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`window.confirm = (m) => { window.asked = m; return true; }`),
		chromedp.SetValue(chromedp.ID("purge-kind"), "all"),
		chromedp.Click(chromedp.CSS("#purge button")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the purge's count", `/^removed [1-9][0-9]*$/.test(document.querySelector('#purge-result').textContent)`)
	if asked, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.asked`)); err != nil || !strings.Contains(asked, "everything") {
		t.Fatalf("the purge did not ask first: %q %v", asked, err)
	}
	if _, body := in.adminDo("GET", "/gateway/stats"); !strings.Contains(string(body), `"entries":0`) {
		t.Fatalf("entries left after the purge: %s", body)
	}

	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, secret) {
		t.Fatal("the service's token is on the page")
	}
}

// TestDashboardWithTenThousandServices: with 10,000 services the page draws
// the 50 busiest and finds the others by search, without hanging the tab.
// The data is generated in the page, in the shape of the admin routes.
func TestDashboardWithTenThousandServices(t *testing.T) {
	ctx := browser(t)
	up := upstreamServer(t, echoHandler)
	in := startCaddyAdmin(t, dashboardOrigins, fmt.Sprintf("gateway /api/* {\n\t\tservice one %s\n\t}", up.URL))
	if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("http://127.0.0.1:%d/gateway/ui", in.admin))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the first refresh", `state.last !== null`)
	// One evaluation draws and reads back, so that no refresh comes between.
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
		const services = {}, rates = {};
		for (let i = 0; i < 10000; i++) {
			const n = "svc" + String(i).padStart(5, "0");
			services[n] = {requests: i, cache_hit_ratio: 0.5, error_rate: 0};
			rates[n] = i % 997;
		}
		const t0 = performance.now();
		state.gateway = "g";
		state.last = {t: Date.now(), rates: {g: rates},
			stats: {gateways: {g: {services, total: {requests: 1}}}},
			profile: {gateways: {g: {}}}, health: {gateways: {g: {services: {}}}},
			pools: {gateways: {g: {services: {}}}}, memory: {monitor: null}};
		draw();
		const took = performance.now() - t0;
		const rows = document.querySelectorAll('#services tbody tr');
		const out = [String(Math.round(took)), String(rows.length), rows[0].dataset.service, document.querySelector('#shown').textContent];
		document.querySelector('#search').value = "svc0000";
		draw();
		out.push(String(document.querySelectorAll('#services tbody tr').length));
		return out;
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("drawing 10,000 services took %s ms in the page", got[0])
	if got[1] != "50" || got[2] != "svc09969" || !strings.Contains(got[3], "50 of 10000") || got[4] != "10" {
		t.Fatalf("rows %s, first %s, %q; %s rows matching the search (want 50, svc09969 (the busiest: 9,969 mod 997 = 996), 50 of 10000, 10)", got[1], got[2], got[3], got[4])
	}
}
