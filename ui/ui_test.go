package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyMain(m) }

func TestServesThePageAndItsAssetsWithStrictHeaders(t *testing.T) {
	for path, ctype := range map[string]string{
		Prefix:                "text/html",
		Prefix + "/":          "text/html",
		Prefix + "/app.js":    "text/javascript",
		Prefix + "/style.css": "text/css",
	} {
		w := httptest.NewRecorder()
		Handler().ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		h := w.Header()
		if w.Code != 200 || !strings.HasPrefix(h.Get("Content-Type"), ctype) || w.Body.Len() == 0 {
			t.Errorf("%s: %d %q, %d bytes", path, w.Code, h.Get("Content-Type"), w.Body.Len())
		}
		if h.Get("Content-Security-Policy") != CSP || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", path, h)
		}
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, httptest.NewRequest("GET", Prefix+"/secret.txt", nil))
	if w.Code != http.StatusNotFound || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("unknown asset: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	w = httptest.NewRecorder()
	Handler().ServeHTTP(w, httptest.NewRequest("HEAD", Prefix, nil))
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d with %d bytes", w.Code, w.Body.Len())
	}
}

// The page loads nothing from anywhere else: no absolute URL in any file
// (the SVG namespace is a name, not a request), no inline script or style.
func TestThePageLoadsNothingExternal(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+`)
	err := fs.WalkDir(static, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := static.ReadFile(path)
		for _, m := range url.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s refers to %s", path, m)
			}
		}
		if strings.HasSuffix(path, ".html") && (strings.Contains(string(b), "<script>") || strings.Contains(string(b), "style=")) {
			t.Errorf("%s has an inline script or style (the CSP forbids them)", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
