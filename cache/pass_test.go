package cache

import (
	"strconv"
	"testing"
	"time"
)

func TestPassKeys(t *testing.T) {
	p := newPassKeys()
	now := time.Unix(1_800_000_000, 0)
	if p.known("a", now) {
		t.Fatal("an empty table knows a key")
	}
	p.remember("a", now)
	if !p.known("a", now.Add(passTTL-time.Second)) {
		t.Fatal("a remembered key is not known within passTTL")
	}
	if p.known("a", now.Add(passTTL)) {
		t.Fatal("a remembered key is still known after passTTL")
	}
	if p.known("b", now) {
		t.Fatal("a key never remembered is known")
	}
	p.forget("b") // another key's forget leaves "a" alone
	if !p.known("a", now) {
		t.Fatal("forgetting another key forgot this one")
	}
	p.forget("a")
	if p.known("a", now) {
		t.Fatal("a forgotten key is still known")
	}

	// Many keys: each is known right after it is remembered, whatever it pushed out.
	for i := range 4 * passSlots {
		k := "/k/" + strconv.Itoa(i)
		p.remember(k, now)
		if !p.known(k, now) {
			t.Fatalf("key %d not known right after remember", i)
		}
	}
}

func TestPassKeysAllocateNothing(t *testing.T) {
	p := newPassKeys()
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() {
		p.remember("example.com/svc/k", now)
		_ = p.known("example.com/svc/k", now)
		p.forget("example.com/svc/k")
	}); n != 0 {
		t.Fatalf("hit-for-miss bookkeeping allocates %.0f times, want 0", n)
	}
}
