package cache

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestKeyRulesQuery checks which requests share an entry under a service's query rules, against a
// real upstream that echoes what it got (so a wrongly shared entry shows).
func TestKeyRulesQuery(t *testing.T) {
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte(r.URL.RawQuery))
	})
	c := newTestCache(t, nil, Options{Keys: map[string]*KeyRules{
		"svc": {IgnoreQuery: []string{"utm_*", "fbclid"}, SortQuery: true},
	}})
	steps := []struct {
		target string
		hit    bool
		body   string // the stored answer's body: the query that was fetched
	}{
		{"/p", false, ""},
		{"/p?utm_source=x", true, ""}, // shares the bare URL's entry, and went upstream as sent before
		{"/p?utm_source=x&utm_medium=y&fbclid=1", true, ""},
		{"/p?utm%5Fsource=x", true, ""}, // names are matched decoded
		{"/p?a=1&b=2", false, "a=1&b=2"},
		{"/p?b=2&a=1", true, "a=1&b=2"},         // sorted
		{"/p?b=2&utm_x=1&a=1", true, "a=1&b=2"}, // sorted and dropped
		{"/p?a=1&a=2", false, "a=1&a=2"},        // repeated names keep their order
		{"/p?a=2&a=1", false, "a=2&a=1"},        //
		{"/p?fbclid2=1", false, "fbclid2=1"},    // a name, not a prefix
		{"/p?utm_source=z&fbclid2=1", true, "fbclid2=1"},
	}
	for i, s := range steps {
		w, res, err := do(t, c, o.fetch(), "GET", s.target)
		if err != nil {
			t.Fatal(err)
		}
		if hit := res == ResultHit; hit != s.hit || w.Body.String() != s.body {
			t.Fatalf("step %d %s: hit %v (want %v), body %q (want %q)", i, s.target, hit, s.hit, w.Body.String(), s.body)
		}
	}
	// The upstream got the client's query untouched.
	do(t, c, o.fetch(), "GET", "/q?utm_source=keep&z=1")
	if q := o.lastReq.Load().URL.RawQuery; q != "utm_source=keep&z=1" {
		t.Fatalf("upstream got %q", q)
	}
	// Another service keeps the default key.
	r := httptest.NewRequest("GET", "/p?utm_source=x", nil)
	if res, _ := c.Serve(httptest.NewRecorder(), r, &Route{Service: "other", Fetch: o.fetch()}); res != ResultMiss {
		t.Fatalf("other service: %v", res)
	}
	// A purge of the stored (normalised) URL removes it.
	if n := c.Purge("svc", "/p?a=1&b=2"); n != 1 {
		t.Fatalf("purge removed %d", n)
	}
}

// TestKeyRulesKeep checks KeepQuery: only the listed parameters make the key.
func TestKeyRulesKeep(t *testing.T) {
	o := newOrigin(t, nil, respond(200, "x", "Cache-Control", "max-age=60"))
	c := newTestCache(t, nil, Options{Keys: map[string]*KeyRules{"svc": {KeepQuery: []string{"page", "f_*"}}}})
	for i, s := range []struct {
		target string
		hit    bool
	}{
		{"/k?page=1&junk=2", false},
		{"/k?page=1", true},
		{"/k?junk=3&page=1", true},
		{"/k?page=2", false},
		{"/k?page=1&f_a=1", false},
		{"/k?f_a=1&page=1", false}, // not sorted: order counts
	} {
		if _, res, _ := do(t, c, o.fetch(), "GET", s.target); (res == ResultHit) != s.hit {
			t.Fatalf("step %d %s: %v", i, s.target, res)
		}
	}
}

// TestKeyRulesTenants: with X-Tenant in the key, two tenants never share an entry, even though the
// upstream does not list the field in Vary; invalidation removes every tenant's entry.
func TestKeyRulesTenants(t *testing.T) {
	o := newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("data of " + r.Header.Get("X-Tenant")))
	})
	c := newTestCache(t, nil, Options{Keys: map[string]*KeyRules{"svc": {Headers: []string{"x-tenant"}}}})
	for i, s := range []struct {
		tenant []string // nil: no field
		hit    bool
		body   string
	}{
		{[]string{"X-Tenant", "a"}, false, "data of a"},
		{[]string{"X-Tenant", "b"}, false, "data of b"},
		{[]string{"X-Tenant", "a"}, true, "data of a"},
		{[]string{"X-Tenant", "b"}, true, "data of b"},
		{nil, false, "data of "},
		{[]string{"X-Tenant", ""}, false, "data of "}, // empty is not absent
		{nil, true, "data of "},
	} {
		w, res, _ := do(t, c, o.fetch(), "GET", "/t", s.tenant...)
		if (res == ResultHit) != s.hit || w.Body.String() != s.body {
			t.Fatalf("step %d: %v %q", i, res, w.Body.String())
		}
	}
	if _, _, err := do(t, c, o.fetch(), "POST", "/t"); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"a", "b"} {
		if _, res, _ := do(t, c, o.fetch(), "GET", "/t", "X-Tenant", tenant); res != ResultMiss {
			t.Fatalf("tenant %s after POST: %v", tenant, res)
		}
	}
}

// TestKeyRulesInvalid checks that New refuses malformed rules.
func TestKeyRulesInvalid(t *testing.T) {
	for _, k := range []KeyRules{
		{IgnoreQuery: []string{""}},
		{IgnoreQuery: []string{"a*b"}},
		{KeepQuery: []string{"a=b"}},
		{Headers: []string{"X Tenant"}},
	} {
		if _, err := New(Options{Keys: map[string]*KeyRules{"svc": &k}}); err == nil || !strings.Contains(err.Error(), "svc") {
			t.Errorf("%+v: err %v", k, err)
		}
	}
}

// TestKeyRulesQueryNoAlloc: a query the rules leave as it is costs no allocation.
func TestKeyRulesQueryNoAlloc(t *testing.T) {
	k, _ := compileKeyRules(&KeyRules{IgnoreQuery: []string{"utm_*"}, SortQuery: true})
	if n := testing.AllocsPerRun(100, func() { _ = k.query("a=1&b=2&c=3") }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// BenchmarkKeyRulesQuery measures the query rules on a query they leave as it is and on one they
// change (drop and sort).
func BenchmarkKeyRulesQuery(b *testing.B) {
	k, _ := compileKeyRules(&KeyRules{IgnoreQuery: []string{"utm_*", "fbclid"}, SortQuery: true})
	for _, q := range []string{"a=1&b=2&c=3", "c=3&utm_source=x&b=2&fbclid=9&a=1"} {
		b.Run(q, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = k.query(q)
			}
		})
	}
}
