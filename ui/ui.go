// Package ui is the gateway's dashboard: one HTML page, one script and one
// stylesheet, embedded in the binary, that read the admin API's JSON routes
// (/gateway/stats, /gateway/profile, /gateway/health, /gateway/pools,
// /gateway/memory) every two seconds and purge with DELETE /gateway/cache.
//
// The page keeps its own short history (sparklines) in the browser: the
// server stores nothing for it and serves only these three constant files.
// It loads nothing from anywhere else, which its Content-Security-Policy
// enforces.
//
// The package imports no Caddy: the admin module mounts Handler under
// /gateway/ui.
package ui

import (
	"embed"
	"net/http"
	"strconv"
)

//go:embed static/index.html static/app.js static/style.css
var static embed.FS

// Prefix is the path the page is served at; its assets are under Prefix+"/".
const Prefix = "/gateway/ui"

// CSP is the page's Content-Security-Policy: scripts, styles and fetches
// from the admin endpoint itself only, no inline script or style, no
// frames, no forms.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, read once.
type asset struct {
	body        []byte
	contentType string
}

var assets = func() map[string]asset {
	read := func(name, ct string) asset {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			panic(err) // embedded above: cannot happen
		}
		return asset{body: b, contentType: ct}
	}
	return map[string]asset{
		Prefix:                read("index.html", "text/html; charset=utf-8"),
		Prefix + "/":          read("index.html", "text/html; charset=utf-8"),
		Prefix + "/app.js":    read("app.js", "text/javascript; charset=utf-8"),
		Prefix + "/style.css": read("style.css", "text/css; charset=utf-8"),
	}
}()

// Handler serves the page at Prefix and its script and stylesheet under
// Prefix+"/"; any other path under Prefix+"/" is a 404 with a JSON body,
// like the admin API's errors. The caller allows only GET and HEAD. Every
// answer carries the CSP, nosniff, no framing, and a referrer policy that
// keeps the Referer on the page's own requests (Caddy's admin endpoint
// checks it as the origin of a same-origin GET).
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-cache")
	a, ok := assets[r.URL.Path]
	if !ok {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"not found: the dashboard is at ` + Prefix + `"}` + "\n"))
		return
	}
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}
