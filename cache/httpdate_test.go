package cache

import (
	"net/http"
	"testing"
	"time"
)

// parseDate agrees with http.ParseTime on every input: valid dates in each of the three forms, and
// near-misses of the fast path's form.
func TestParseDateAgreesWithHTTPParseTime(t *testing.T) {
	inputs := []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Thu, 29 Feb 2024 23:59:59 GMT", "Thu, 29 Feb 2023 23:59:59 GMT", "Mon, 31 Apr 2026 00:00:00 GMT",
		"Mon, 00 Jan 2026 00:00:00 GMT", "Mon, 01 Jan 2026 24:00:00 GMT", "Mon, 01 Jan 2026 00:60:00 GMT",
		"Mon, 01 Jan 2026 00:00:60 GMT", "Mon, 01 Jan 2026 00:00:00 UTC", "Xyz, 01 Jan 2026 00:00:00 GMT",
		"Mon, 01 Foo 2026 00:00:00 GMT", "Mon, 1 Jan 2026 00:00:00 GMT", "Mon, 01 Jan 2026 0:00:00 GMT",
		"Mon, 0a Jan 2026 00:00:00 GMT", "Mon,  01 Jan 2026 00:00:00 GMT", "", "garbage",
		"Mon, 01 jan 2026 00:00:00 GMT", "mon, 01 Jan 2026 00:00:00 GMT",
	}
	for ts := time.Date(1999, 12, 25, 13, 7, 9, 0, time.UTC); ts.Year() < 2031; ts = ts.Add(97*24*time.Hour + 3*time.Hour + 17*time.Second) {
		inputs = append(inputs, ts.Format(http.TimeFormat))
	}
	for _, s := range inputs {
		want, werr := http.ParseTime(s)
		got, ok := parseDate(s)
		if ok != (werr == nil) || !got.Equal(want) {
			t.Errorf("parseDate(%q) = %v, %v; http.ParseTime: %v, %v", s, got, ok, want, werr)
		}
	}
}

func BenchmarkParseDate(b *testing.B) {
	const s = "Sun, 06 Nov 1994 08:49:37 GMT"
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			_, _ = parseDate(s)
		}
	})
	b.Run("http.ParseTime", func(b *testing.B) {
		for b.Loop() {
			_, _ = http.ParseTime(s)
		}
	})
}
