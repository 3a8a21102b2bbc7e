package cache

import "testing"

// TestIndexKeepsNoDroppedRef: once a URL's refs outgrow the inline array, the copy left there is
// cleared, so a removed key's block (which its key string points into) is not kept alive.
func TestIndexKeepsNoDroppedRef(t *testing.T) {
	var x index
	base := "base"
	a, b := base+"#a", base+"#b"
	x.add("svc", "/u", len(base), keyRef{key: a, seq: 1})
	x.add("svc", "/u", len(base), keyRef{key: b, seq: 2})
	if !x.remove("svc", a, len(base), 1) {
		t.Fatal("a not removed")
	}
	br := x.services["svc"][base]
	if br.one[0].key != "" || br.one[0].tags != nil {
		t.Fatalf("the inline array still holds %q after it was removed", br.one[0].key)
	}
	for _, r := range br.refs[:cap(br.refs)] {
		if r.key == a {
			t.Fatal("a removed ref is still in the refs' backing array")
		}
	}
	if len(br.refs) != 1 || br.refs[0].key != b || !x.contains("svc", b, len(base), 2) {
		t.Fatalf("refs %v, want b only", br.refs)
	}
}
