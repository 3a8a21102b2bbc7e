package cfgparse

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyMain(m) }

// dispenser is positioned on the first token of src, as a block's loop
// leaves it on a subdirective.
func dispenser(src string) *caddyfile.Dispenser {
	d := caddyfile.NewTestDispenser(src)
	d.Next()
	return d
}

func TestArgsParseTheirValue(t *testing.T) {
	var s string
	if err := String(dispenser("token abc"), &s); err != nil || s != "abc" {
		t.Errorf("String: %q %v", s, err)
	}
	var n int
	if err := Int(dispenser("retries 3"), &n); err != nil || n != 3 {
		t.Errorf("Int: %d %v", n, err)
	}
	var dur caddy.Duration
	if err := Duration(dispenser("timeout 1d"), &dur); err != nil || time.Duration(dur) != 24*time.Hour {
		t.Errorf("Duration: %v %v", time.Duration(dur), err)
	}
	var size int64
	if err := Size(dispenser("max_size 64MiB"), &size); err != nil || size != 64<<20 {
		t.Errorf("Size: %d %v", size, err)
	}
}

func TestBadArgsNameTheDirectiveAndLine(t *testing.T) {
	var s string
	var n int
	var dur caddy.Duration
	var size int64
	for src, parse := range map[string]func(*caddyfile.Dispenser) error{
		"\ntoken":            func(d *caddyfile.Dispenser) error { return String(d, &s) },
		"\ntoken a b":        func(d *caddyfile.Dispenser) error { return String(d, &s) },
		"\nretries -1":       func(d *caddyfile.Dispenser) error { return Int(d, &n) },
		"\nretries many":     func(d *caddyfile.Dispenser) error { return Int(d, &n) },
		"\ntimeout -5s":      func(d *caddyfile.Dispenser) error { return Duration(d, &dur) },
		"\ntimeout soon":     func(d *caddyfile.Dispenser) error { return Duration(d, &dur) },
		"\nmax_size lots":    func(d *caddyfile.Dispenser) error { return Size(d, &size) },
		"\nmax_size 1000EiB": func(d *caddyfile.Dispenser) error { return Size(d, &size) },
	} {
		err := parse(dispenser(src))
		if err == nil {
			t.Errorf("%q accepted", src)
			continue
		}
		if !strings.Contains(err.Error(), ":2") {
			t.Errorf("%q: error %q does not name line 2", src, err)
		}
	}
}
