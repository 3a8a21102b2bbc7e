#!/usr/bin/env bash
# Runs each fuzz target briefly, for a number of executions (about 10 s
# each here; FUZZTIME overrides all of them, e.g. FUZZTIME=30s): the route
# splitter, the Cache-Control parser, the cache-key builder, the cache entry
# decoder and the reload hand-over's request framing (against net/http's
# parser). Counts, not durations: with a duration, Go 1.26's fuzz
# coordinator can report its own deadline as a failure, "context deadline
# exceeded" with no failing input (go.dev/issue/75804, fixed in Go 1.27).
# A failing input is written under the package's testdata/fuzz/ and
# replayed by every plain `go test` from then on. FuzzCaddyfile (root
# package) runs its seeds in `go test`; its instrumented build of all of
# Caddy takes minutes, so run it by hand:
#   go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 30s .
set -euo pipefail
cd "$(dirname "$0")/.."
run() { go test -run '^$' -fuzz "^$2\$" -fuzztime "${FUZZTIME:-$3}" "$1"; }
run ./internal/routing FuzzSplitRoute 500000x
run ./cache FuzzCacheControl 50000x
run ./cache FuzzKey 120000x
run ./cache FuzzUnmarshalEntry 150000x
run ./handoff FuzzRequestFraming 60000x
