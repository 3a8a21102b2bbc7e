#!/usr/bin/env bash
# bench/run.sh — load benchmark of caddy-gateway against stock Caddy (issue #8).
#
# What it does (loopback only, no network beyond `apt-get` when wrk/nginx/redis-server are missing):
#   1. Builds, from this checkout's go.mod (so at the same Caddy version):
#        $OUT/caddy-gw     = go build ./cmd/caddy           (Caddy + standard modules + gateway)
#        $OUT/caddy-stock  = go build ./bench/stockcaddy    (Caddy + standard modules only)
#        $OUT/upstream     = go build ./bench/upstream      (1024-byte JSON answers)
#      xcaddy is not used: the module proxy answers 403 for this module's path.
#   2. Installs wrk and nginx with apt-get when they are missing.
#   3. Starts the upstream and four servers, each in its own process:
#        A  stock Caddy  `respond` of the same 1024-byte body (+ Content-Type)  /item
#        B  stock Caddy  `reverse_proxy` to the upstream, uncacheable path, with the gateway's   /item
#           idle pool (keepalive_idle_conns_per_host 128; stock keeps 32 and re-dials under load)
#        C  gateway, 10 services, cache on, uncacheable path (pass-through)   /api/bench/item
#        H  gateway, 10 services, no cache block, own process                /api/bench/item
#        J  as G on a Redis Cluster of 3 masters (redis-cli --cluster create)  /api/bench/cacheable/item
#        I  gateway, 10 services, cache on, a new cacheable URL per request   /api/bench/cacheable/fill-N
#           (fetch + store: a first fetch, what most API traffic is)
#        D  gateway, 10 services, cache on, cacheable path (cache hit)          /api/bench/cacheable/item
#        E  nginx proxy_cache hit of the cacheable path                         /cacheable/item
#        F  gateway, 10,000 services, cache on, cacheable path (cache hit)      /api/bench/cacheable/item
#        G  gateway, Redis tier: a local tier too small to keep the entry, so     /api/bench/cacheable/item
#           every hit is a Redis-tier hit (redis-server on loopback)
#      C and D are the same process (one site). E stands in for Caddy with
#      github.com/caddyserver/cache-handler, which the module proxy does not serve here.
#   4. Checks every endpoint answers 200 with the 1024-byte body (and that D/E/F are cache hits),
#      fills the caches of C/D/I and of F past their max_size with unique cacheable URLs (so every
#      gateway scenario runs at a full cache's steady state; BENCH_PREFILL=0 skips it),
#      warms each up for 1 s, then drives them with wrk in interleaved rounds
#      (A B C D E F, A B C D E F, ...) and prints the median RPS, p50/p99 latency and the server
#      process's CPU microseconds per request of each, and the ratios D/A, C/B, H/B, I/B (RPS and
#      p99), D/E, F/D against the issue's targets.
#   5. Writes the markdown report to stdout and to bench/out/report-<timestamp>.md, with the
#      raw wrk outputs in bench/out/raw/ (bench/out/ is gitignored).
#
# CPU pinning: with >= 4 CPUs wrk gets CPU 0, the upstream CPU 1 and the server under test
# CPUs 2..n-1; with 2-3 CPUs wrk gets CPU 0 and every server and the upstream CPUs 1..n-1
# (so proxy and upstream share them: the same for B and C); with 1 CPU nothing is pinned and
# the report says so. Go sets GOMAXPROCS from the affinity mask; nginx runs one worker per
# server CPU, so both sides use the same CPUs.
#
# Usage:   bench/run.sh                      (from anywhere; ~3 minutes with the defaults)
# Env:     BENCH_ROUNDS=3        rounds of A..F (at least 3 recommended)
#          BENCH_DURATION=5s     wrk duration of each run
#          BENCH_CONNS=32        wrk connections (-c); BENCH_THREADS=1 wrk threads (-t)
#          BENCH_WARMUP=1s       warm-up per configuration before the rounds
#          BENCH_CONFIGS="A B C D E F G H I J" subset to run (ratios need their pairs)
#          BENCH_MAX_SIZE=256MiB the max_size of the gateways' caches (C, D, I and F; G keeps its tiny one)
#          BENCH_PREFILL=1       fill the gateway's cache past max_size before the rounds (0: don't)
#          BENCH_PORT_BASE=18100 first of the loopback ports used (upstream, servers, admins)
#          BENCH_PROFILE=1       after the rounds, record CPU and allocation profiles of the
#                                servers (pprof on their admin endpoints) under B, C, D, F, H and I load into
#                                bench/out/ (go tool pprof -top bench/out/cpu-D.prof)
#          BENCH_SKIP_BUILD=1    reuse the binaries already in bench/out/bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
MAX_SIZE=${BENCH_MAX_SIZE:-256MiB}
CONFIGS=${BENCH_CONFIGS:-"A B C D E F G H I J"}
BASE=${BENCH_PORT_BASE:-18100}
OUTDIR=$ROOT/bench/out
OUT=$OUTDIR/bin
RUN=$OUTDIR/run
RAW=$OUTDIR/raw
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" "$RUN" "$RAW"
rm -rf "${RUN:?}"/* "${RAW:?}"/*

P_UP=$BASE            # upstream
P_A=$((BASE + 1))     # stock respond
P_B=$((BASE + 2))     # stock reverse_proxy
P_GW=$((BASE + 3))    # gateway, 10 services (C and D)
P_E=$((BASE + 5))     # nginx
P_F=$((BASE + 6))     # gateway, 10,000 services
ADM_STOCK=$((BASE + 11))
ADM_GW=$((BASE + 12))
ADM_F=$((BASE + 13))
P_G=$((BASE + 7))     # gateway, Redis-tier hit (local tier too small to keep the entry)
ADM_G=$((BASE + 14))
P_REDIS=$((BASE + 15))
P_H=$((BASE + 8))     # gateway without a cache
ADM_H=$((BASE + 16))
P_J=$((BASE + 9))     # gateway, Redis Cluster-tier hit
ADM_J=$((BASE + 17))
P_RC=$((BASE + 20))   # first of the 3 cluster nodes (BASE+20..22)

log() { echo "[bench] $*" >&2; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
	log "installing ${need_apt[*]}"
	SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
	$SUDO apt-get install -y "${need_apt[@]}" >/dev/null 2>&1 ||
		{ $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "${need_apt[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- build
if [ "${BENCH_SKIP_BUILD:-}" != 1 ] || [ ! -x "$OUT/caddy-gw" ]; then
	log "building caddy-gw, caddy-stock, upstream"
	go build -o "$OUT/caddy-gw" ./cmd/caddy
	go build -o "$OUT/caddy-stock" ./bench/stockcaddy
	go build -o "$OUT/upstream" ./bench/upstream
fi
CADDY_VERSION=$("$OUT/caddy-stock" version | awk '{print $1}')
GW_VERSION=$("$OUT/caddy-gw" version | awk '{print $1}')
"$OUT/caddy-gw" list-modules | grep -qx http.handlers.gateway || { log "caddy-gw lacks the gateway module"; exit 1; }
"$OUT/caddy-stock" list-modules | grep -q gateway && { log "caddy-stock has the gateway module"; exit 1; }

# ---------------------------------------------------------------- CPUs
NCPU=$(nproc)
if [ "$NCPU" -ge 4 ]; then
	CPU_WRK=0; CPU_UP=1; CPU_SRV="2-$((NCPU - 1))"; SRV_N=$((NCPU - 2))
	PIN="wrk on CPU 0, upstream on CPU 1, server under test on CPUs $CPU_SRV"
elif [ "$NCPU" -ge 2 ]; then
	CPU_WRK=0; CPU_UP="1-$((NCPU - 1))"; [ "$NCPU" -eq 2 ] && CPU_UP=1; CPU_SRV=$CPU_UP; SRV_N=$((NCPU - 1))
	PIN="wrk on CPU 0; server under test and upstream share CPU(s) $CPU_SRV (only $NCPU CPUs: not enough to separate them)"
else
	CPU_WRK=""; SRV_N=1
	PIN="NOT pinned: only 1 CPU, wrk and servers share it (numbers are not meaningful)"
fi
pin() { # pin CPUS cmd...
	local cpus=$1; shift
	if [ -n "$CPU_WRK" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- configs
BODY_FILE=$RUN/body.json
"$OUT/upstream" -print-body >"$BODY_FILE"
BODY=$(tr -d '\n' <"$BODY_FILE")
BODY_LEN=$(wc -c <"$BODY_FILE")

cat >"$RUN/stock.Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADM_STOCK
	persist_config off
	auto_https off
}
http://127.0.0.1:$P_A {
	header Content-Type application/json
	respond \`$BODY
\` 200
}
http://127.0.0.1:$P_B {
	reverse_proxy 127.0.0.1:$P_UP {
		transport http {
			keepalive_idle_conns_per_host 128
		}
	}
}
EOF

gw_caddyfile() { # gw_caddyfile ADMIN PORT NSERVICES [nocache]
	local adm=$1 port=$2 n=$3 nocache=${4:-}
	{
		printf '{\n\tadmin 127.0.0.1:%s\n\tpersist_config off\n\tauto_https off\n}\n' "$adm"
		printf 'http://127.0.0.1:%s {\n\tgateway /api/* {\n' "$port"
		# n-1 other services on the same upstream, then the one the load uses
		local i
		for ((i = 1; i < n; i++)); do printf '\t\tservice s%05d http://127.0.0.1:%s\n' "$i" "$P_UP"; done
		printf '\t\tservice bench http://127.0.0.1:%s\n' "$P_UP"
		[ -n "$nocache" ] || printf '\t\tcache {\n\t\t\tmax_size %s\n\t\t}\n' "$MAX_SIZE"
		printf '\t}\n}\n'
	}
}
gw_caddyfile "$ADM_GW" "$P_GW" 10 >"$RUN/gw10.Caddyfile"
gw_caddyfile "$ADM_F" "$P_F" 10000 >"$RUN/gw10000.Caddyfile"
gw_caddyfile "$ADM_H" "$P_H" 10 nocache >"$RUN/gwnocache.Caddyfile"
# I: a new cacheable URL per request (a counter per wrk thread, and a random part per run)
cat >"$RUN/fill.lua" <<'EOF'
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local counter, run = 0, math.random(1e9)
function request()
	counter = counter + 1
	return wrk.format(nil, string.format("/api/bench/cacheable/fill-%d-%d", run, counter))
end
EOF
# G: every hit comes from Redis: a local tier of 1500 bytes cannot hold the
# ~2 KB entry (the Redis tier is written even when the local one refuses it)
cat >"$RUN/gwredis.Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADM_G
	persist_config off
	auto_https off
}
http://127.0.0.1:$P_G {
	gateway /api/* {
		service bench http://127.0.0.1:$P_UP
		cache {
			max_size 1500B
			max_item_size 1500B
			redis redis://127.0.0.1:$P_REDIS/0 {
				timeout 100ms
			}
		}
	}
}
EOF

# J: G on a 3-master Redis Cluster
cat >"$RUN/gwcluster.Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADM_J
	persist_config off
	auto_https off
}
http://127.0.0.1:$P_J {
	gateway /api/* {
		service bench http://127.0.0.1:$P_UP
		cache {
			max_size 1500B
			max_item_size 1500B
			redis {
				cluster redis://127.0.0.1:$P_RC redis://127.0.0.1:$((P_RC + 1))
				timeout 100ms
			}
		}
	}
}
EOF

NGINX_USER=""; [ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"
mkdir -p "$RUN/nginx-cache" "$RUN/nginx-tmp"
cat >"$RUN/nginx.conf" <<EOF
$NGINX_USER
worker_processes $SRV_N;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $RUN/nginx-tmp/body;
	proxy_temp_path $RUN/nginx-tmp/proxy;
	fastcgi_temp_path $RUN/nginx-tmp/fastcgi;
	uwsgi_temp_path $RUN/nginx-tmp/uwsgi;
	scgi_temp_path $RUN/nginx-tmp/scgi;
	proxy_cache_path $RUN/nginx-cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=60m use_temp_path=off;
	upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
	server {
		listen 127.0.0.1:$P_E;
		location / {
			proxy_pass http://up;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_cache bench;
			add_header X-Cache-Status \$upstream_cache_status;
		}
	}
}
EOF

# ---------------------------------------------------------------- processes
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

start() { # start NAME CPUS cmd...  ($! must be the server itself: taskset execs it)
	local name=$1 cpus=$2; shift 2
	if [ -n "$CPU_WRK" ]; then
		taskset -c "$cpus" "$@" >"$RUN/$name.log" 2>&1 &
	else
		"$@" >"$RUN/$name.log" 2>&1 &
	fi
	PIDS+=($!)
}
wait_url() { # wait_url URL [seconds]
	local i
	for ((i = 0; i < ${2:-30} * 10; i++)); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.1
	done
	log "timed out waiting for $1"; return 1
}

for p in $P_UP $P_A $P_B $P_GW $P_E $P_F $P_G $P_H $P_J $ADM_STOCK $ADM_GW $ADM_F $ADM_G $ADM_H $ADM_J $P_REDIS $P_RC $((P_RC + 1)) $((P_RC + 2)); do
	if curl -s -o /dev/null "http://127.0.0.1:$p/"; then log "port $p is busy (set BENCH_PORT_BASE)"; exit 1; fi
done

start upstream "$CPU_UP" "$OUT/upstream" -addr "127.0.0.1:$P_UP"
declare -A SRVPID # the server process of each configuration, for its CPU time
start stock "$CPU_SRV" "$OUT/caddy-stock" run --config "$RUN/stock.Caddyfile"
SRVPID[A]=$!; SRVPID[B]=$!
start gw10 "$CPU_SRV" "$OUT/caddy-gw" run --config "$RUN/gw10.Caddyfile"
SRVPID[C]=$!; SRVPID[D]=$!; SRVPID[I]=$!
start gw10000 "$CPU_SRV" "$OUT/caddy-gw" run --config "$RUN/gw10000.Caddyfile"
SRVPID[F]=$!
start nginx "$CPU_SRV" "$NGINX" -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log"
SRVPID[E]=$!
start redis "$CPU_UP" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN"
start gwredis "$CPU_SRV" "$OUT/caddy-gw" run --config "$RUN/gwredis.Caddyfile"
SRVPID[G]=$!
start gwnocache "$CPU_SRV" "$OUT/caddy-gw" run --config "$RUN/gwnocache.Caddyfile"
SRVPID[H]=$!
if [[ " $CONFIGS " == *" J "* ]]; then
	for i in 0 1 2; do
		mkdir -p "$RUN/cluster$i"
		start "cluster$i" "$CPU_UP" redis-server --port $((P_RC + i)) --bind 127.0.0.1 --save '' --appendonly no \
			--cluster-enabled yes --cluster-config-file nodes.conf --dir "$RUN/cluster$i"
	done
	for i in 0 1 2; do
		for ((k = 0; k < 100; k++)); do redis-cli -p $((P_RC + i)) ping >/dev/null 2>&1 && break; sleep 0.1; done
	done
	redis-cli --cluster create 127.0.0.1:$P_RC 127.0.0.1:$((P_RC + 1)) 127.0.0.1:$((P_RC + 2)) --cluster-yes >"$RUN/cluster-create.log" 2>&1
	for ((k = 0; k < 100; k++)); do redis-cli -p $P_RC cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
	start gwcluster "$CPU_SRV" "$OUT/caddy-gw" run --config "$RUN/gwcluster.Caddyfile"
	SRVPID[J]=$!
	wait_url "http://127.0.0.1:$P_J/api/bench/"
fi
wait_url "http://127.0.0.1:$P_UP/"
wait_url "http://127.0.0.1:$P_A/"
wait_url "http://127.0.0.1:$P_B/"
wait_url "http://127.0.0.1:$P_GW/api/bench/"
wait_url "http://127.0.0.1:$P_E/"
wait_url "http://127.0.0.1:$P_F/api/bench/" 120
wait_url "http://127.0.0.1:$P_G/api/bench/"
wait_url "http://127.0.0.1:$P_H/api/bench/"

declare -A URL NAME SCRIPT
URL[A]="http://127.0.0.1:$P_A/item";                     NAME[A]="stock respond (1 KiB static)"
URL[B]="http://127.0.0.1:$P_B/item";                     NAME[B]="stock reverse_proxy (no-store)"
URL[C]="http://127.0.0.1:$P_GW/api/bench/item";           NAME[C]="gateway miss (no-store, cache on)"
URL[D]="http://127.0.0.1:$P_GW/api/bench/cacheable/item"; NAME[D]="gateway cache hit, 10 services"
URL[E]="http://127.0.0.1:$P_E/cacheable/item";           NAME[E]="nginx proxy_cache hit"
URL[F]="http://127.0.0.1:$P_F/api/bench/cacheable/item";  NAME[F]="gateway cache hit, 10,000 services"
URL[G]="http://127.0.0.1:$P_G/api/bench/cacheable/item";  NAME[G]="gateway Redis-tier hit (local tier empty)"
URL[J]="http://127.0.0.1:$P_J/api/bench/cacheable/item";  NAME[J]="gateway Redis Cluster-tier hit (3 masters, local tier empty)"
URL[H]="http://127.0.0.1:$P_H/api/bench/item";           NAME[H]="gateway without a cache (no-store)"
URL[I]="http://127.0.0.1:$P_GW/api/bench/cacheable/";    NAME[I]="gateway fill: a new cacheable URL each (fetch + store)"
SCRIPT[I]=$RUN/fill.lua
# not a scenario: fills F's cache (the prefill)
URL[FILLF]="http://127.0.0.1:$P_F/api/bench/cacheable/"
SCRIPT[FILLF]=$RUN/fill.lua

# ---------------------------------------------------------------- sanity checks
check() { # check CFG [header-regex-that-must-match-on-2nd-request]
	local cfg=$1 want=${2:-} h
	curl -s -o /dev/null "${URL[$cfg]}"
	h=$(curl -s -D - -o "$RUN/check-$cfg.body" "${URL[$cfg]}")
	if ! head -1 <<<"$h" | grep -q ' 200'; then log "$cfg: not 200: $(head -1 <<<"$h")"; exit 1; fi
	if [ "$(wc -c <"$RUN/check-$cfg.body")" -ne "$BODY_LEN" ]; then log "$cfg: body is not $BODY_LEN bytes"; exit 1; fi
	if [ -n "$want" ] && ! grep -qiE "$want" <<<"$h"; then log "$cfg: want header /$want/ in:"; echo "$h" >&2; exit 1; fi
	tr -d '\r' <<<"$h" >"$RUN/check-$cfg.headers"
}
for c in $CONFIGS; do
	case $c in
	C) check C 'Cache-Status: .*fwd=' ;;
	I) ;; # a new URL per request: its wrk errors column checks it
	D | F) check "$c" 'Cache-Status: .*; hit' ;;
	G | J)
		curl -s -o /dev/null "${URL[$c]}"
		sleep 1 # the Redis write is asynchronous
		check "$c" 'Cache-Status: .*hit; detail=redis' ;;
	E) check E 'X-Cache-Status: HIT' ;;
	*) check "$c" ;;
	esac
done

# ---------------------------------------------------------------- load
# to_ms converts wrk's latency (e.g. 812.00us, 1.23ms, 1.02s) to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /m$/) n*=60000; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }

run_wrk() { # run_wrk CFG DURATION OUTFILE
	local script=()
	[ -n "${SCRIPT[$1]:-}" ] && script=(-s "${SCRIPT[$1]}")
	pin "${CPU_WRK:-0}" wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency "${script[@]}" "${URL[$1]}" >"$3" 2>&1 || true
}

# cpu_ticks PID: user + system CPU time of a process and of its child processes (nginx's workers),
# in clock ticks.
cpu_ticks() {
	local p t=0
	for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
TICK=$(getconf CLK_TCK)

# Prefill: the gateways' caches (C, D, I share one; F has its own) past their max_size, so that
# every gateway scenario runs at a full cache's steady state (evictions, a full index, the heap a
# full cache makes), not on an empty one.
prefill() { # prefill FILL-CFG ADMIN-PORT HIT-CFG
	log "prefill: filling the cache of $3 past max_size"
	local i stats bytes max
	for ((i = 0; i < 60; i++)); do
		run_wrk "$1" 2s "$RAW/prefill-$3.txt"
		stats=$(curl -s "http://127.0.0.1:$2/gateway/stats")
		bytes=$(grep -o '"bytes":[0-9]*' <<<"$stats" | head -1 | cut -d: -f2)
		max=$(grep -o '"max_bytes":[0-9]*' <<<"$stats" | head -1 | cut -d: -f2)
		log "prefill: ${bytes:-?} of ${max:-?} bytes"
		[ -n "$bytes" ] && [ -n "$max" ] && [ "$bytes" -ge $((max * 9 / 10)) ] && break
	done
	curl -s -o /dev/null "${URL[$3]}" # the hit's entry may have been evicted: store it again
}
if [ "${BENCH_PREFILL:-1}" = 1 ]; then
	if [[ " $CONFIGS " == *" C "* || " $CONFIGS " == *" D "* || " $CONFIGS " == *" I "* ]]; then
		prefill I "$ADM_GW" D
	fi
	if [[ " $CONFIGS " == *" F "* ]]; then
		prefill FILLF "$ADM_F" F
	fi
fi

declare -A RPS P50 P99 ERRS CPU
for c in $CONFIGS; do log "warm-up $c"; run_wrk "$c" "$WARMUP" "$RAW/warmup-$c.txt"; done
for ((r = 1; r <= ROUNDS; r++)); do
	for c in $CONFIGS; do
		f=$RAW/round$r-$c.txt
		pid=${SRVPID[$c]:-}
		t0=0; [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
		run_wrk "$c" "$DURATION" "$f"
		t1=0; [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
		nreq=$(awk '/ requests in /{print $1}' "$f")
		cpu=$(awk -v d="$((t1 - t0))" -v n="${nreq:-0}" -v hz="$TICK" 'BEGIN{ if (n+0 == 0) print "nan"; else printf "%.1f", d / hz * 1e6 / n }')
		CPU[$c]+="$cpu "
		rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
		p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$f")")
		p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$f")")
		bad=$(awk '/Non-2xx or 3xx responses:/{n+=$NF} /Socket errors:/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' "$f")
		RPS[$c]+="$rps "; P50[$c]+="$p50 "; P99[$c]+="$p99 "; ERRS[$c]=$((${ERRS[$c]:-0} + bad))
		log "round $r $c: ${rps:-?} req/s p50 ${p50}ms p99 ${p99}ms ${cpu} µs CPU/req errors $bad"
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
declare -A MRPS MP50 MP99 MCPU
for c in $CONFIGS; do
	MCPU[$c]=$(median <<<"${CPU[$c]}")
	MRPS[$c]=$(median <<<"${RPS[$c]}")
	MP50[$c]=$(median <<<"${P50[$c]}")
	MP99[$c]=$(median <<<"${P99[$c]}")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0 || a == "" || b == "") print "n/a"; else printf "%.3f", a/b }'; }
verdict() { # verdict VALUE OP TARGET
	awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN{ if (v == "n/a") {print "n/a"; exit} ok = (op == ">=") ? (v+0 >= t+0) : (v+0 <= t+0); print ok ? "met" : "**not met**" }'
}
has() { [[ " $CONFIGS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- report
REPORT=$OUTDIR/report-$STAMP.md
{
	echo "## caddy-gateway load benchmark ($(date -u +%Y-%m-%d))"
	echo
	echo "- machine: $NCPU CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)), $(go version | awk '{print $3}'), Caddy $CADDY_VERSION (stock) / $GW_VERSION (gateway build)"
	echo "- load: wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS interleaved rounds of [$CONFIGS], ${WARMUP} warm-up each; loopback only"
	echo "- pinning: $PIN"
	echo "- upstream: bench/upstream, $BODY_LEN-byte JSON; /cacheable/* \`Cache-Control: public, max-age=3600\`, else \`no-store\`"
	echo "- B (stock reverse_proxy) gets the gateway's idle pool (keepalive_idle_conns_per_host 128): stock's default keeps 32 and re-dials under load; the gateway's larger default is itself an advantage over stock that B does not show"
	echo "- prefill: ${BENCH_PREFILL:-1} (1: the caches of C/D/I and of F filled past max_size before the rounds); server CPU µs/req: user + system time of the server process over each run ÷ its requests"
	echo "- E is nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') \`proxy_cache\` (1 worker per server CPU): github.com/caddyserver/cache-handler is not served by the module proxy here, so it stands in for \"Caddy with cache-handler\""
	echo "- reproduce: \`BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION bench/run.sh\`"
	echo
	echo "| | configuration | median req/s | median p50 ms | median p99 ms | server CPU µs/req | req/s per round | non-2xx/socket errors |"
	echo "|---|---|---:|---:|---:|---:|---|---:|"
	for c in $CONFIGS; do
		echo "| $c | ${NAME[$c]} | ${MRPS[$c]} | ${MP50[$c]} | ${MP99[$c]} | ${MCPU[$c]} | ${RPS[$c]% } | ${ERRS[$c]:-0} |"
	done
	echo
	echo "| ratio | value | target | |"
	echo "|---|---:|---:|---|"
	# targets: issue #15 (hit ≥ 0.95 × respond; pass and no cache ≥ 1.0 and fill ≥ 0.95 × reverse_proxy;
	# p99 ≤ 1.1 × stock; 10,000 services ≥ 0.97 × 10)
	if has D && has A; then v=$(ratio "${MRPS[D]}" "${MRPS[A]}"); echo "| D/A gateway hit ÷ stock respond, req/s | $v | ≥ 0.95 | $(verdict "$v" ">=" 0.95) |"; fi
	if has D && has A; then v=$(ratio "${MP99[D]}" "${MP99[A]}"); echo "| D/A, p99 | $v | ≤ 1.10 | $(verdict "$v" "<=" 1.10) |"; fi
	if has C && has B; then
		v=$(ratio "${MRPS[C]}" "${MRPS[B]}"); echo "| C/B gateway miss ÷ stock reverse_proxy, req/s | $v | ≥ 1.00 | $(verdict "$v" ">=" 1.00) |"
		v=$(ratio "${MP99[C]}" "${MP99[B]}"); echo "| C/B gateway miss ÷ stock reverse_proxy, p99 | $v | ≤ 1.10 | $(verdict "$v" "<=" 1.10) |"
	fi
	for x in H I; do
		goal=1.00; [ $x = I ] && goal=0.95
		if has $x && has B; then
			v=$(ratio "${MRPS[$x]}" "${MRPS[B]}"); echo "| $x/B ${NAME[$x]} ÷ stock reverse_proxy, req/s | $v | ≥ $goal | $(verdict "$v" ">=" $goal) |"
			v=$(ratio "${MP99[$x]}" "${MP99[B]}"); echo "| $x/B, p99 | $v | ≤ 1.10 | $(verdict "$v" "<=" 1.10) |"
		fi
	done
	if has D && has E; then v=$(ratio "${MRPS[D]}" "${MRPS[E]}"); echo "| D/E gateway hit ÷ nginx proxy_cache hit, req/s | $v | ≥ 1.50 | $(verdict "$v" ">=" 1.50) |"; fi
	if has F && has D; then v=$(ratio "${MRPS[F]}" "${MRPS[D]}"); echo "| F/D 10,000 ÷ 10 services (hit), req/s | $v | ≥ 0.97 | $(verdict "$v" ">=" 0.97) |"; fi
	if has D && has B; then v=$(ratio "${MRPS[D]}" "${MRPS[B]}"); echo "| D/B gateway local hit ÷ stock reverse_proxy, req/s | $v | | |"; fi
	if has G && has B; then v=$(ratio "${MRPS[G]}" "${MRPS[B]}"); echo "| G/B gateway Redis hit ÷ stock reverse_proxy, req/s | $v | | |"; fi
	if has J && has G; then
		v=$(ratio "${MRPS[J]}" "${MRPS[G]}"); echo "| J/G Redis Cluster hit ÷ standalone Redis hit, req/s | $v | | |"
		v=$(awk -v a="${MP99[J]}" -v b="${MP99[G]}" 'BEGIN{ printf "%+.2f ms", a - b }'); echo "| J − G p99 a cluster hit adds over standalone | $v | | |"
	fi
	echo
	echo "Raw wrk outputs: bench/out/raw/. Answer headers of each configuration: bench/out/run/check-*.headers."
} | tee "$REPORT"

# ---------------------------------------------------------------- profiles
if [ "${BENCH_PROFILE:-}" = 1 ]; then
	PROF_SECS=${BENCH_PROFILE_SECONDS:-8}
	for c in B C D F H I; do
		[[ " $CONFIGS " == *" $c "* ]] || continue
		case $c in
		B) adm=$ADM_STOCK ;; # stock reverse_proxy: the baseline a differential profile subtracts
		F) adm=$ADM_F ;;     # the gateway with 10,000 services
		H) adm=$ADM_H ;;     # the gateway without a cache
		*) adm=$ADM_GW ;;
		esac
		log "profiling the server under $c (${PROF_SECS}s CPU, then allocs)"
		run_wrk "$c" "$((PROF_SECS + 3))s" "$RAW/profile-$c.txt" &
		wp=$!
		sleep 1
		curl -s -o "$OUTDIR/cpu-$c.prof" "http://127.0.0.1:$adm/debug/pprof/profile?seconds=$PROF_SECS"
		wait "$wp"
		# allocs: the difference over a short load window (sample_index=alloc_space / alloc_objects)
		curl -s -o "$RUN/allocs-before-$c.prof" "http://127.0.0.1:$adm/debug/pprof/allocs"
		run_wrk "$c" 3s "$RAW/profile-allocs-$c.txt"
		curl -s -o "$OUTDIR/allocs-$c.prof" "http://127.0.0.1:$adm/debug/pprof/allocs"
		go tool pprof -base "$RUN/allocs-before-$c.prof" -proto "$OUTDIR/allocs-$c.prof" >"$OUTDIR/allocs-delta-$c.prof" 2>/dev/null || true
	done
	log "profiles: bench/out/cpu-{B,C,D,F,H,I}.prof, bench/out/allocs-delta-{B,C,D,F,H,I}.prof (go tool pprof -top -sample_index=alloc_objects ...)"
fi
