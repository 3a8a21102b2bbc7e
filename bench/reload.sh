#!/usr/bin/env bash
# Requests lost across reloads: stock Caddy reverse_proxy vs the gateway.
# For each mode (keep-alive POST, keep-alive GET, a new connection per GET)
# and each build, 16 clients send requests for as long as 20 config reloads
# (POST /load, alternating two configs that differ) take, against an
# upstream in another process. Prints ok / error-status / lost per run.
# Loopback only; every process is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/reload}
mkdir -p "$OUT"
go build -o "$OUT/caddy-gw" ./cmd/caddy
go build -o "$OUT/caddy-stock" ./bench/stockcaddy
go build -o "$OUT/reloadload" ./bench/reloadload
PORT=18088 ADMIN=12999 UP=19011
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

cat >"$OUT/up.Caddyfile" <<CF
{
	admin off
}
http://127.0.0.1:$UP {
	respond \`{"ok":true}\` 200
}
CF
"$OUT/caddy-stock" run --config "$OUT/up.Caddyfile" --adapter caddyfile >"$OUT/up.log" 2>&1 &
pids+=($!)

site() { # kind n
	local handler
	if [ "$1" = gateway ]; then
		handler="gateway /api/* {
		service users http://127.0.0.1:$UP {
			retries $2
		}
	}"
	else
		handler="reverse_proxy /api/* http://127.0.0.1:$UP {
		lb_retries $2
	}"
	fi
	printf '{\n\tadmin 127.0.0.1:%s\n\tgrace_period 5s\n}\nhttp://127.0.0.1:%s {\n\t%s\n}\n' "$ADMIN" "$PORT" "$handler"
}

for mode in ka-post ka-get nk-get; do
	for kind in stock gateway; do
		bin="$OUT/caddy-stock"
		[ "$kind" = gateway ] && bin="$OUT/caddy-gw"
		site "$kind" 0 >"$OUT/$kind-0.Caddyfile"
		site "$kind" 1 >"$OUT/$kind-1.Caddyfile"
		"$bin" run --config "$OUT/$kind-0.Caddyfile" --adapter caddyfile >"$OUT/$kind.log" 2>&1 &
		pid=$!
		pids+=("$pid") # stopped on exit too, should a run abort
		for _ in $(seq 100); do curl -s -m 1 -o /dev/null "http://127.0.0.1:$PORT/api/users/x" && break; sleep 0.1; done
		printf '%-8s %-8s ' "$kind" "$mode"
		timeout 120 "$OUT/reloadload" -url "http://127.0.0.1:$PORT/api/users/x" -admin "http://127.0.0.1:$ADMIN" \
			-config "$OUT/$kind-0.Caddyfile" -config2 "$OUT/$kind-1.Caddyfile" -mode "$mode" | sed -n '1,3p' # summary and the first errors; reads all (no SIGPIPE)
		kill "$pid"
		wait "$pid" 2>/dev/null || true
	done
done
