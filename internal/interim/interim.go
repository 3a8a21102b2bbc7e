// Package interim sends 1xx answers through a ResponseWriter whose header
// map is someone else's. Caddy's reverse proxy copies an upstream's 1xx
// fields into the header map it sees, calls WriteHeader(1xx), then deletes
// them from that map; a writer that keeps a private map (the cache's
// recorder, the retry writer) must put them in the real one for the 1xx and
// take them out again, or they stay in the final answer — and pile up over
// several attempts.
package interim

import "net/http"

// Write sends a 1xx status through w with the fields of header, then
// restores w's header map as it was.
func Write(w http.ResponseWriter, header http.Header, status int) {
	dst := w.Header()
	var saved http.Header
	for k, vs := range header {
		if old, ok := dst[k]; ok {
			if saved == nil {
				saved = make(http.Header)
			}
			saved[k] = old
		}
		dst[k] = vs
	}
	w.WriteHeader(status)
	for k := range header {
		if old, ok := saved[k]; ok {
			dst[k] = old
		} else {
			delete(dst, k)
		}
	}
}
