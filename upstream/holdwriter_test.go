package upstream

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// recorder1xx is an httptest.ResponseRecorder that also keeps the headers
// each informational answer was sent with (the recorder itself ignores
// 1xx, as the server sends the header map with them).
type recorder1xx struct {
	*httptest.ResponseRecorder
	informational []http.Header
}

func (r *recorder1xx) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		r.informational = append(r.informational, r.Header().Clone())
		return
	}
	r.ResponseRecorder.WriteHeader(code)
}

func TestHoldWriterEarlyHintsDoNotStayInTheAnswer(t *testing.T) {
	tests := []struct {
		name     string
		attempts []int // final status of each attempt; the last one is released if held
		want     int
	}{
		{"answer passed through", []int{http.StatusOK}, http.StatusOK},
		{"held then retried", []int{http.StatusBadGateway, http.StatusBadGateway, http.StatusOK}, http.StatusOK},
		{"held and released", []int{http.StatusBadGateway, http.StatusServiceUnavailable}, http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder1xx{ResponseRecorder: httptest.NewRecorder()}
			rec.Header().Set("Link", "<client>; rel=keep") // set before the exchange: must survive
			var hw *holdWriter
			for _, status := range tc.attempts {
				hw = &holdWriter{ResponseWriter: rec}
				testutil.EarlyHints(hw) // what Caddy's reverse proxy does with an upstream's 103
				hw.Header().Set("Content-Type", "text/plain")
				hw.WriteHeader(status)
			}
			if hw.held && !hw.release() {
				t.Fatal("release failed")
			}
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if v := rec.Header().Values("X-Hint-Secret"); len(v) != 0 {
				t.Errorf("final answer carries the 103's X-Hint-Secret: %q", v)
			}
			if v := rec.Header().Values("Link"); len(v) != 1 || v[0] != "<client>; rel=keep" {
				t.Errorf("final Link %q, want only the one set before the exchange", v)
			}
			if len(rec.informational) != len(tc.attempts) {
				t.Fatalf("%d 103s sent, want %d", len(rec.informational), len(tc.attempts))
			}
			for i, h := range rec.informational {
				if h.Get("X-Hint-Secret") != "from-103" || len(h.Values("Link")) != 1 {
					t.Errorf("103 #%d sent with %v, want the upstream's hints once", i, h)
				}
			}
		})
	}
}

func TestHoldWriterPassesTrailersAfterCommit(t *testing.T) {
	rec := httptest.NewRecorder()
	hw := &holdWriter{ResponseWriter: rec}
	hw.Header().Set("Trailer", "X-T")
	hw.WriteHeader(http.StatusOK)
	_, _ = hw.Write([]byte("body"))
	hw.Header().Set("X-T", "tv") // as the reverse proxy does once the body ended
	if got := rec.Result().Trailer.Get("X-T"); got != "tv" {
		t.Errorf("trailer X-T = %q, want tv", got)
	}
}
