// Package cfgparse holds the argument parsers every Caddyfile block of the
// gateway shares, so that each config type's UnmarshalCaddyfile reads a
// string, a count, a duration or a size the same way and reports a bad one
// with the file and line of its token.
package cfgparse

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// String reads the one argument of the current subdirective into dst.
func String(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: missing value", name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: too many arguments", name)
	}
	return nil
}

// Int reads one non-negative integer argument into dst.
func Int(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var s string
	if err := String(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return d.Errf("%s: %q is not a non-negative integer", name, s)
	}
	*dst = n
	return nil
}

// Duration reads one duration argument (Caddy's syntax: 500ms, 30s, 1d)
// into dst.
func Duration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := String(d, &s); err != nil {
		return err
	}
	return DurationArg(d, s, dst)
}

// DurationArg parses s, an argument already read from d, into dst.
func DurationArg(d *caddyfile.Dispenser, s string, dst *caddy.Duration) error {
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur < 0 {
		return d.Errf("bad duration %q: want e.g. 500ms, 30s, 5m", s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// Size reads one byte size argument (512KiB, 64MiB, 1GB) into dst.
func Size(d *caddyfile.Dispenser, dst *int64) error {
	var s string
	if err := String(d, &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return d.Errf("bad size %q: want e.g. 512KiB, 64MiB", s)
	}
	*dst = int64(n)
	return nil
}
