#!/usr/bin/env bash
# Fails when go.mod's go line asks for a newer Go than the Caddy it builds
# against: a user who can build that Caddy must be able to build this module.
set -euo pipefail
cd "$(dirname "$0")/.."
ours=$(go list -m -f '{{.GoVersion}}')
caddy=$(go list -m -f '{{.GoVersion}}' github.com/caddyserver/caddy/v2)
if [ "$(printf '%s\n%s\n' "$ours" "$caddy" | sort -V | tail -1)" != "$caddy" ]; then
	echo "go.mod asks for go $ours, more than Caddy's go.mod ($caddy): lower the go line" >&2
	exit 1
fi
echo "go line: $ours (Caddy asks for $caddy)"
