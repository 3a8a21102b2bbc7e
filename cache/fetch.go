package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// fetchOnce makes one upstream exchange for cl, streaming the answer to w while recording it, and
// stores it when allowed. With a stale candidate that has a validator it sends a conditional request
// and, on 304, refreshes and serves the entry; with a stale-if-error candidate it holds back a 5xx and
// serves the entry instead. fl (may be nil) is finished with the outcome.
func (c *Cache) fetchOnce(w http.ResponseWriter, cl call, fl *flight) (Result, error) {
	// The reverse proxy aborts an answer cut mid-body with
	// panic(http.ErrAbortHandler): the followers must not wait forever (a
	// no-op when an outcome was already published).
	defer c.fl.finish(cl.key, fl, false, nil)
	r := cl.r
	cand := cl.cand
	up := r
	revalidate := cand != nil && cand.hasValidator() && r.Method == http.MethodGet
	if revalidate {
		up = r.Clone(r.Context())
		for _, k := range conditionalFields {
			delete(up.Header, k)
		}
		if cand.etag != "" {
			up.Header["If-None-Match"] = []string{cand.etag}
		}
		if lm := cand.field("Last-Modified"); lm != "" {
			up.Header["If-Modified-Since"] = []string{lm}
		}
	}
	mk := c.marks() // before the request leaves: a removal from now on may predate the answer
	reqTime := c.now()
	sie := c.canStaleIfError(cand, reqTime)
	f := &fetch{c: c, cl: cl, fl: fl, mk: mk, reqTime: reqTime, revalidate: revalidate, sie: sie}
	f.rec = recorder{w: w, header: make(http.Header), contentLen: -1, maxBody: c.opts.MaxItemSize,
		orphanable: cl.lead != nil, ex: f}
	rec := &f.rec
	err := cl.rt.Fetch(rec, up, cl.client)
	respTime := c.now()
	if err == nil && !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK) // the upstream answered with an empty 200
	}
	if err != nil && !rec.wroteHeader {
		if r.Context().Err() != nil {
			c.fl.retry(cl.key, fl) // as in fetch.decide: our own exchange was ended
		} else {
			c.fl.finish(cl.key, fl, false, err)
		}
		if sie {
			c.stale.Add(1)
			c.writeEntry(w, r, cl.rt, cand, cand.age(respTime), "fwd=stale; detail=stale-if-error")
			return ResultStale, nil
		}
		c.misses.Add(1)
		return ResultMiss, err
	}
	if err != nil {
		c.log.Debug("upstream answer failed after its status was sent; not stored",
			zap.String("service", cl.service), zap.String("path", r.URL.Path), zap.Error(err))
	}
	if rec.held {
		if rec.status == http.StatusNotModified {
			ne := c.refreshed(cand, rec.snapshot, reqTime, respTime)
			if ne == nil {
				// The 304 validates some other representation: fetch it whole.
				c.fl.finish(cl.key, fl, false, nil)
				cl.cand = nil
				return c.fetchOnce(w, cl, nil)
			}
			stored, _ := c.storeResponse(r, ne, mk)
			c.fl.finish(cl.key, fl, stored, nil)
			c.revalidated.Add(1)
			c.writeEntry(w, r, cl.rt, ne, ne.age(c.now()), "fwd="+cl.fwd+"; fwd-status=304")
			return ResultRevalidated, nil
		}
		c.fl.finish(cl.key, fl, false, nil)
		c.stale.Add(1)
		c.writeEntry(w, r, cl.rt, cand, cand.age(respTime), "fwd=stale; fwd-status="+strconv.Itoa(rec.status)+"; detail=stale-if-error")
		return ResultStale, nil
	}
	stored := false
	if err == nil && rec.complete() {
		e := c.newEntry(cl, rec, reqTime, respTime)
		why := ReasonNone
		if stored, why = c.storeResponse(r, e, mk); stored || why != ReasonNone {
			c.explain(cl.service, e.URL, rec.status, why)
		}
	} else if f.storable && !rec.held {
		why := ReasonIncomplete // broke off upstream, or the client left
		if err == nil && !rec.failed {
			why = ReasonTooLarge // dropped when it outgrew max_item_size
			if r.Method == http.MethodGet {
				c.pass.remember(cl.key, reqTime) // as one whose length said so (decide)
			}
		}
		c.explain(cl.service, c.urlOf(r, cl.service), rec.status, why)
	}
	if stored {
		c.pass.forget(cl.key)
	}
	c.fl.finish(cl.key, fl, stored, nil)
	c.misses.Add(1)
	return ResultMiss, nil
}

// fetch is the state of one exchange of fetchOnce, which its recorder asks when the answer's status
// arrives and tells when the copy is dropped. One allocation holds it all, the recorder
// included.
type fetch struct {
	c          *Cache
	cl         call
	fl         *flight // the flight fetched for, or nil
	mk         marks   // taken before the request left
	reqTime    time.Time
	revalidate bool // a conditional request for cl.cand: a 304 is held back
	sie        bool // cl.cand may stand in for a 5xx (stale-if-error): a 5xx is held back
	storable   bool // the answer's header allowed storing it
	rec        recorder
}

// hold reports whether the final status is held back from the client (the recorder asks first).
func (f *fetch) hold(status int) bool {
	return (f.revalidate && status == http.StatusNotModified) || (f.sie && isServerError(status))
}

// decide runs once, before a final status that is not held back reaches the client: it decides
// whether the answer is recorded for the store (rec.record) and returns its Cache-Status member
// (empty: none).
func (f *fetch) decide(rec *recorder) string {
	c, cl, r := f.c, &f.cl, f.cl.r
	if r.Context().Err() != nil {
		// Our own exchange was ended (its client left, or a leader's exchange was given up), and
		// the status Fetch reports for that (Caddy writes 499) says nothing about the URL: not
		// remembered as uncacheable, and the followers start over.
		rec.record = false
		c.fl.retry(cl.key, f.fl)
		return ""
	}
	d := c.decideStore(r, rec.status, rec.header)
	if d.ok && c.purgedSince(r, cl.service, rec.header, f.mk) {
		// Storable, but a purge or invalidation came while it was fetched: it will not be
		// stored (storeTTL), so neither record it nor claim it. Says nothing about the URL.
		d = storeDecision{reason: ReasonPurged}
	} else if !d.ok && r.Method == http.MethodGet {
		c.pass.remember(cl.key, f.reqTime)
	}
	rec.record = d.ok
	f.storable = d.ok
	if !d.ok {
		c.explain(cl.service, c.urlOf(r, cl.service), rec.status, d.reason)
		c.fl.finish(cl.key, f.fl, false, nil) // followers need not wait for the body
		cl.lead.notNeeded()
	}
	var b strings.Builder
	b.Grow(len(c.opts.Name) + 40)
	b.WriteString(c.opts.Name)
	b.WriteString("; fwd=")
	b.WriteString(cl.fwd)
	if d.ok && (rec.contentLen >= 0 || rec.status == http.StatusNoContent) {
		// Claimed only when the length is announced: an answer of unknown length may outgrow
		// max_item_size after this header has left, and a complete answer must not claim a
		// store that did not happen. (An announced length the upstream then breaks off is a
		// truncated answer the client sees as failed.)
		b.WriteString("; stored")
	} else if d.reason != ReasonNone {
		b.WriteString("; detail=")
		b.WriteString(d.reason.String())
	}
	return b.String()
}

// abandoned: the recorded copy was dropped (too large, or the client left), so nobody but the
// client gets this answer.
func (f *fetch) abandoned() {
	f.c.fl.finish(f.cl.key, f.fl, false, nil)
	f.cl.lead.notNeeded()
}
