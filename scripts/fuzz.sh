#!/usr/bin/env bash
# Runs each fuzz target briefly (FUZZTIME, default 10s): the route splitter,
# the Cache-Control parser, the cache-key builder, the cache entry decoder
# and the reload hand-over's request framing (against net/http's parser).
# A failing input is written under the package's testdata/fuzz/ and
# replayed by every plain `go test` from then on. FuzzCaddyfile (root
# package) runs its seeds in `go test`; its instrumented build of all of
# Caddy takes minutes, so run it by hand:
#   go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 30s .
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10s}
run() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" "$1"; }
run ./internal/routing FuzzSplitRoute
run ./cache FuzzCacheControl
run ./cache FuzzKey
run ./cache FuzzUnmarshalEntry
run ./handoff FuzzRequestFraming
