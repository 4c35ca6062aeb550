#!/usr/bin/env bash
# Benchmark: trellis-apiserver (SQLite, synchronous=FULL: every acknowledged
# write is fsynced) measured with h2load over TLS h2 on loopback, 8 clients,
# and etcd (Debian's etcd-server, fsync on) in the same run as the yardstick
# for durable writes (its JSON gateway over HTTP/1.1: /v3/kv/put).
#
#   creates   POST ConfigMap with generateName: req/s, p50/p99 latency
#   etcd puts the same count of puts, same clients: req/s, p50/p99
#   get       GET of one ConfigMap: req/s, p50/p99
#   list5k    LIST of a namespace holding 5,000 ConfigMaps: median and p99 ms
#   watch     event delivery after the write's response (trellis-bench-watch-latency)
#   startup   restart with everything above stored: exec -> kubeconfig written (ready)
#   rss       after start-up with those objects, and after the load
#
# ROUNDS rounds of creates/puts/gets, interleaved, medians reported. The
# server (one event-loop thread) and etcd pinned to SERVER_CPU, h2load to
# LOADGEN_CPU.
# Knobs: ROUNDS (3) CREATES (10000) GETS (100000) CLIENTS (8) STREAMS (1)
#        SERVER_CPU (1) LOADGEN_CPU (0) OUT_DIR (keep results)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}
CREATES=${CREATES:-10000}
GETS=${GETS:-100000}
CLIENTS=${CLIENTS:-8}
STREAMS=${STREAMS:-1}
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
OUT_DIR=${OUT_DIR:-}
BIN=${BIN:-$ROOT/build/default/apiserver-lite/trellis-apiserver}
WATCH_BIN=${WATCH_BIN:-$ROOT/build/default/bench/trellis-bench-watch-latency}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for c in h2load curl etcd taskset awk; do command -v $c >/dev/null || die "missing $c (run scripts/setup.sh)"; done
[[ -x $BIN && -x $WATCH_BIN ]] || die "build the default preset first"

WORK=$(mktemp -d -t trellis-bench-apiserver.XXXXXX)
RES=$WORK/results
mkdir -p "$RES"
declare -A PID=()
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

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
# p50 and p99 in ms from h2load's --log-file (3rd column: microseconds)
pcts() { awk '{print $3 / 1000}' "$1" | sort -g | awk '{a[NR]=$1} END {printf "%.2f %.2f\n", a[int(NR*0.5)+1], a[int(NR*0.99)+1]}'; }
rps() { awk '/^finished in/ {gsub(",", "", $4); print $4}' "$1"; }

start_apiserver() {
    rm -f "$WORK/kubeconfig"
    local t0; t0=$(date +%s%N)
    taskset -c "$SERVER_CPU" "$BIN" --data-dir "$WORK/data" --secure-port 0 --write-kubeconfig "$WORK/kubeconfig" \
        --threads 1 --log-level warn >> "$WORK/apiserver.log" 2>&1 &
    PID[apiserver]=$!
    for _ in $(seq 20000); do [[ -s $WORK/kubeconfig ]] && break; sleep 0.001; done
    [[ -s $WORK/kubeconfig ]] || die "trellis-apiserver did not become ready: $(tail -5 "$WORK/apiserver.log")"
    STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
    SERVER=$(awk '/server:/ {print $2; exit}' "$WORK/kubeconfig")
    TOKEN=$(cat "$WORK/data/admin.token")
    CA=$WORK/data/pki/ca.crt
}
stop_apiserver() { kill -TERM "${PID[apiserver]}"; wait "${PID[apiserver]}" 2>/dev/null; unset 'PID[apiserver]'; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
api() { curl -sS --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$@"; }
h2() { taskset -c "$LOADGEN_CPU" h2load -c "$CLIENTS" -m "$STREAMS" -H "Authorization: Bearer $TOKEN" "$@"; }

start_apiserver
log "trellis-apiserver ready at $SERVER in ${STARTUP_MS} ms (empty store)"
for ns in bench list5k watch; do
    api -X POST -H 'Content-Type: application/json' -d "{\"metadata\":{\"name\":\"$ns\"}}" "$SERVER/api/v1/namespaces" >/dev/null
done
printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"cm-"},"data":{"key":"%s"}}' \
    "$(head -c 256 /dev/zero | tr '\0' v)" > "$WORK/cm.json"

mkdir -p "$WORK/etcd"
taskset -c "$SERVER_CPU" etcd --data-dir "$WORK/etcd/data" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster default=http://127.0.0.1:23800 \
    --log-level error > "$WORK/etcd/log" 2>&1 &
PID[etcd]=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:23790/health >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:23790/health >/dev/null || die "etcd did not start: $(tail -5 "$WORK/etcd/log")"
# the same value size as the ConfigMap body, under one key per client round
printf '{"key":"%s","value":"%s"}' "$(printf /registry/configmaps/bench/x | base64 -w0)" \
    "$(base64 -w0 < "$WORK/cm.json")" > "$WORK/put.json"

for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: creates"
    h2 -n "$CREATES" -d "$WORK/cm.json" -H 'Content-Type: application/json' --log-file "$RES/create.$r.log" \
        "$SERVER/api/v1/namespaces/bench/configmaps" > "$RES/create.$r.out" 2>&1
    grep -q "$CREATES succeeded" "$RES/create.$r.out" || die "creates failed: $(tail -5 "$RES/create.$r.out")"
    log "round $r/$ROUNDS: etcd puts"
    taskset -c "$LOADGEN_CPU" h2load --h1 -c "$CLIENTS" -n "$CREATES" -d "$WORK/put.json" --log-file "$RES/etcd.$r.log" \
        http://127.0.0.1:23790/v3/kv/put > "$RES/etcd.$r.out" 2>&1
    grep -q "$CREATES succeeded" "$RES/etcd.$r.out" || die "etcd puts failed: $(tail -5 "$RES/etcd.$r.out")"
    log "round $r/$ROUNDS: gets"
    name=$(api "$SERVER/api/v1/namespaces/bench/configmaps?limit=1" | sed -n 's/.*"name":"\(cm-[a-z0-9]*\)".*/\1/p' | head -1)
    h2 -n "$GETS" --log-file "$RES/get.$r.log" "$SERVER/api/v1/namespaces/bench/configmaps/$name" > "$RES/get.$r.out" 2>&1
    grep -q "$GETS succeeded" "$RES/get.$r.out" || die "gets failed: $(tail -5 "$RES/get.$r.out")"
    if [[ $r == 1 ]]; then
        # start-up and memory with the first round's objects stored
        stop_apiserver
        start_apiserver
        STARTUP_FIRST_MS=$STARTUP_MS
        FIRST_OBJECTS=$(api "$SERVER/api/v1/namespaces/bench/configmaps" | grep -o '"generateName"' | wc -l)
        sleep 0.5
        RSS_FIRST=$(rss_kb "${PID[apiserver]}")
        log "restarted with $FIRST_OBJECTS ConfigMaps in $STARTUP_FIRST_MS ms"
    fi
done

log "list5k: storing 5,000 ConfigMaps"
h2 -n 5000 -d "$WORK/cm.json" -H 'Content-Type: application/json' "$SERVER/api/v1/namespaces/list5k/configmaps" \
    > "$RES/list5k-fill.out" 2>&1
count=$(api "$SERVER/api/v1/namespaces/list5k/configmaps" | grep -o '"generateName"' | wc -l)
[[ $count == 5000 ]] || die "list5k holds $count ConfigMaps, not 5000"
taskset -c "$LOADGEN_CPU" h2load -c 1 -n 50 -H "Authorization: Bearer $TOKEN" -H 'Accept: application/json' \
    --log-file "$RES/list5k.log" "$SERVER/api/v1/namespaces/list5k/configmaps" > "$RES/list5k.out" 2>&1
grep -q "50 succeeded" "$RES/list5k.out" || die "lists failed"

log "watch latency"
taskset -c "$LOADGEN_CPU" "$WATCH_BIN" "$SERVER" "$CA" "$TOKEN" watch 2000 > "$RES/watch.out" 2>&1 ||
    die "watch latency: $(cat "$RES/watch.out")"
RSS_LOADED=$(rss_kb "${PID[apiserver]}")

objects=$(( ROUNDS * CREATES + 5000 + 2000 ))
stop_apiserver
start_apiserver
sleep 0.5
RSS_RESTARTED=$(rss_kb "${PID[apiserver]}")
log "restarted with ~$objects ConfigMaps stored"

echo
echo "trellis-apiserver vs etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $CLIENTS clients x $STREAMS streams, median of $ROUNDS rounds"
c_rps=$(for r in $(seq "$ROUNDS"); do rps "$RES/create.$r.out"; done | median)
e_rps=$(for r in $(seq "$ROUNDS"); do rps "$RES/etcd.$r.out"; done | median)
g_rps=$(for r in $(seq "$ROUNDS"); do rps "$RES/get.$r.out"; done | median)
c_p=$(for r in $(seq "$ROUNDS"); do pcts "$RES/create.$r.log"; done | sort -k2 -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
e_p=$(for r in $(seq "$ROUNDS"); do pcts "$RES/etcd.$r.log"; done | sort -k2 -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
g_p=$(for r in $(seq "$ROUNDS"); do pcts "$RES/get.$r.log"; done | sort -k2 -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
printf '%-34s %12s %10s %10s %s\n' metric value p50_ms p99_ms target
printf '%-34s %12.0f %10s %10s %s\n' "creates/s (TLS h2, fsync)" "$c_rps" $c_p ">= 5000/s, p99 <= 20 ms"
printf '%-34s %12.0f %10s %10s %s\n' "etcd puts/s (h1 cleartext, fsync)" "$e_rps" $e_p "(yardstick)"
printf '%-34s %12.2f\n' "creates / etcd puts" "$(awk -v a="$c_rps" -v b="$e_rps" 'BEGIN {print a / b}')"
printf '%-34s %12.0f %10s %10s %s\n' "gets/s (one ConfigMap)" "$g_rps" $g_p ">= 30000/s"
read -r l50 l99 < <(pcts "$RES/list5k.log")
printf '%-34s %12s %10s %10s %s\n' "list of 5,000 ConfigMaps" "" "$l50" "$l99" "<= 50 ms"
read -r w50 w99 < <(sed -n 's/.*p50=\([0-9.]*\) p99=\([0-9.]*\).*/\1 \2/p' "$RES/watch.out")
printf '%-34s %12s %10s %10s %s\n' "watch event after response" "" "$w50" "$w99" "p99 <= 5 ms"
read -r s50 s99 < <(sed -n 's/^event_after_request_sent_ms p50=\([0-9.]*\) p99=\([0-9.]*\).*/\1 \2/p' "$RES/watch.out")
printf '%-34s %12s %10s %10s\n' "watch event after request sent" "" "$s50" "$s99"
printf '%-34s %12s %s\n' "startup to ready ($FIRST_OBJECTS objects)" "${STARTUP_FIRST_MS} ms" "<= 200 ms (10,000 objects)"
printf '%-34s %12s %s\n' "RSS after restart ($FIRST_OBJECTS obj.)" "$((RSS_FIRST / 1024)) MiB" "<= 60 MB (10,000 objects)"
printf '%-34s %12s\n' "startup to ready ($objects objects)" "${STARTUP_MS} ms"
printf '%-34s %12s\n' "RSS after restart ($objects obj.)" "$((RSS_RESTARTED / 1024)) MiB"
printf '%-34s %12s\n' "RSS after the load" "$((RSS_LOADED / 1024)) MiB"
