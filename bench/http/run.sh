#!/usr/bin/env bash
# Benchmark: trellis-http-example vs nginx, each serving a fixed 100-byte body
# with one worker/thread, over TLS h2 and TLS HTTP/1.1, measured with h2load on
# loopback in one run: ROUNDS interleaved rounds (nginx, trellis, nginx, ...),
# the server pinned alone on SERVER_CPU and h2load on LOADGEN_CPU.
#
# Reported per server (medians over rounds): req/s, p50/p99 latency (from
# h2load's per-request log), server CPU time per request (user+sys of the whole
# process over the measured window: robust when h2load is the bottleneck), and
# RSS idle/after. Ratios are trellis / nginx.
#
# Needs (scripts/setup.sh installs them): nginx h2load openssl curl taskset.
# Knobs: ROUNDS (5) DURATION (10 s) WARMUP (1 s) H2_CLIENTS (32) H2_STREAMS (10)
#        H1_CLIENTS (64) LOADGEN_CPU (0) SERVER_CPU (1) OUT_DIR (keep results)
#        TRELLIS_BIN (build/default/common/http/examples/trellis-http-example)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
H2_CLIENTS=${H2_CLIENTS:-32}
H2_STREAMS=${H2_STREAMS:-10}
H1_CLIENTS=${H1_CLIENTS:-64}
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
OUT_DIR=${OUT_DIR:-}
TRELLIS_BIN=${TRELLIS_BIN:-$ROOT/build/default/common/http/examples/trellis-http-example}
declare -A PORT=([nginx]=19443 [trellis]=19444)
declare -A PID=() RSS_IDLE=()
SERVERS="nginx trellis"
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for c in nginx h2load openssl curl taskset awk; do command -v $c >/dev/null || die "missing $c (run scripts/setup.sh)"; done
[[ -x $TRELLIS_BIN ]] || die "no $TRELLIS_BIN (build the default preset first)"
for p in "${PORT[@]}"; do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && die "port $p is in use"; done

WORK=$(mktemp -d -t trellis-bench-http.XXXXXX)
chmod 755 "$WORK"
RES=$WORK/results
mkdir -p "$RES" "$WORK/nginx"
cleanup() {
    trap - EXIT INT TERM
    for n in "${!PID[@]}"; do kill -TERM "${PID[$n]}" 2>/dev/null; done
    sleep 0.3
    for n in "${!PID[@]}"; do kill -KILL "${PID[$n]}" 2>/dev/null; done
    [[ -n $OUT_DIR ]] && mkdir -p "$OUT_DIR" && cp -r "$RES"/. "$OUT_DIR"/
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
    -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

sed -e "s|@DIR@|$WORK/nginx|g" -e "s|@PORT@|${PORT[nginx]}|g" -e "s|@CERT@|$WORK/cert.pem|g" \
    -e "s|@KEY@|$WORK/key.pem|g" "$HERE/nginx.conf.tmpl" > "$WORK/nginx/nginx.conf"

# ticks (user+sys, all threads) and RSS of a process and its children (nginx: master + worker)
tree_pids() { echo "$1"; pgrep -P "$1" 2>/dev/null; }
ticks() { local t=0 p; for p in $(tree_pids "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
rss_kb() { local r=0 p; for p in $(tree_pids "$1"); do r=$((r + $(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $r; }

taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
PID[nginx]=$!
taskset -c "$SERVER_CPU" "$TRELLIS_BIN" --listen "127.0.0.1:${PORT[trellis]}" --threads 1 \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" --log-level warn > "$WORK/trellis.out" 2>&1 &
PID[trellis]=$!
for n in $SERVERS; do
    ok=0
    for _ in $(seq 100); do
        body=$(curl -sk --max-time 1 "https://127.0.0.1:${PORT[$n]}/" 2>/dev/null) && [[ ${#body} == 100 ]] && { ok=1; break; }
        sleep 0.05
    done
    ((ok)) || die "$n did not answer with a 100-byte body"
    for proto in --http2 --http1.1; do curl -sk "$proto" -o /dev/null "https://127.0.0.1:${PORT[$n]}/"; done
    RSS_IDLE[$n]=$(rss_kb "${PID[$n]}")
done
NGINX_VERSION=$(nginx -v 2>&1 | sed 's|.*/||')
H2LOAD_VERSION=$(h2load --version | awk '{print $2}')

printf 'round\tserver\ttest\treqs\trate\tp50_ms\tp99_ms\tcpu_us_per_req\tfailed\n' > "$RES/results.tsv"
run_one() {  # round server test
    local round=$1 n=$2 test=$3 args base t0 t1 out rate reqs failed p50 p99 cpu
    base="$RES/$n.$test.$round"
    if [[ $test == h2 ]]; then args="-c $H2_CLIENTS -m $H2_STREAMS"; else args="--h1 -c $H1_CLIENTS -m 1"; fi
    taskset -c "$LOADGEN_CPU" h2load -t 1 -D "$DURATION" --warm-up-time="$WARMUP" --log-file="$base.log" $args \
        "https://127.0.0.1:${PORT[$n]}/" > "$base.txt" 2>&1 &
    local lg=$!
    sleep "$WARMUP"
    t0=$(ticks "${PID[$n]}")
    wait $lg
    t1=$(ticks "${PID[$n]}")
    rate=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$base.txt")
    reqs=$(awk '/^requests:/{print $8}' "$base.txt")
    failed=$(awk '/^requests:/{print $10}' "$base.txt")
    read -r p50 p99 < <(cut -f3 "$base.log" | sort -n | awk '{v[NR]=$1} END{if(NR==0){print "nan nan"; exit}
        i50=int(NR*.5+.999999); i99=int(NR*.99+.999999); printf "%.3f %.3f\n", v[i50]/1000, v[i99]/1000}')
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{ if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "nan"}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$n" "$test" "$reqs" "$rate" "$p50" "$p99" "$cpu" "$failed" >> "$RES/results.tsv"
    log "round $round $n $test: $rate req/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/req, failed $failed"
    rm -f "$base.log"
}

log "h2load $H2LOAD_VERSION on CPU $LOADGEN_CPU; servers on CPU $SERVER_CPU; $ROUNDS rounds x ${DURATION}s; h2 -c $H2_CLIENTS -m $H2_STREAMS, h1 -c $H1_CLIENTS"
for round in $(seq "$ROUNDS"); do
    for test in h2 h1; do
        for n in $SERVERS; do run_one "$round" "$n" "$test"; sleep 1; done
    done
done
declare -A RSS_AFTER=()
for n in $SERVERS; do RSS_AFTER[$n]=$(rss_kb "${PID[$n]}"); done

awk -F'\t' -v rounds="$ROUNDS" -v ngv="$NGINX_VERSION" -v ri_n="${RSS_IDLE[nginx]}" -v ri_t="${RSS_IDLE[trellis]}" \
    -v ra_n="${RSS_AFTER[nginx]}" -v ra_t="${RSS_AFTER[trellis]}" '
function med(k,   n, a, i, j, t) { n = split(v[k], a, " "); if (!n) return "nan"
    for (i = 2; i <= n; i++) { t = a[i] + 0; j = i - 1; while (j >= 1 && a[j] + 0 > t) { a[j+1] = a[j]; j-- } a[j+1] = t }
    return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
NR > 1 { k = $2 SUBSEP $3; v[k SUBSEP "rate"] = v[k SUBSEP "rate"] " " $5; v[k SUBSEP "p50"] = v[k SUBSEP "p50"] " " $6
         v[k SUBSEP "p99"] = v[k SUBSEP "p99"] " " $7; v[k SUBSEP "cpu"] = v[k SUBSEP "cpu"] " " $8; bad[$2] += $9 }
END {
    printf "Medians of %d interleaved rounds (trellis-http-example vs nginx %s, one worker each, TLS, 100-byte body)\n\n", rounds, ngv
    print "| server | test | req/s | p50 ms | p99 ms | CPU us/req | failed |"
    print "|---|---|---|---|---|---|---|"
    split("nginx trellis", S, " "); split("h2 h1", T, " ")
    for (t = 1; t <= 2; t++) for (s = 1; s <= 2; s++) { k = S[s] SUBSEP T[t]
        printf "| %s | %s | %.0f | %.2f | %.2f | %.2f | %d |\n", S[s], T[t], med(k SUBSEP "rate"), med(k SUBSEP "p50"), med(k SUBSEP "p99"), med(k SUBSEP "cpu"), bad[S[s]] }
    print ""
    for (t = 1; t <= 2; t++) { n = "nginx" SUBSEP T[t]; m = "trellis" SUBSEP T[t]
        printf "ratio %s (trellis/nginx): req/s %.2f   CPU/req %.2f   p99 %.2f\n", T[t],
            med(m SUBSEP "rate") / med(n SUBSEP "rate"), med(m SUBSEP "cpu") / med(n SUBSEP "cpu"), med(m SUBSEP "p99") / med(n SUBSEP "p99") }
    printf "RSS idle / after (MiB): nginx %.1f / %.1f (master+worker), trellis %.1f / %.1f\n", ri_n/1024, ra_n/1024, ri_t/1024, ra_t/1024
    print "targets: h2 req/s >= 1.5x or CPU/req <= 0.67x; h1 req/s >= 1.2x or CPU/req <= 0.8x; p99 <= nginx; trellis idle RSS < 10 MiB"
}' "$RES/results.tsv" | tee "$RES/summary.md"
