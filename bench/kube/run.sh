#!/usr/bin/env bash
# Benchmark: common/kube against trellis-apiserver on loopback (TLS, HTTP/2).
#   informer sync of 10,000 ConfigMaps (target <= 1 s)
#   an update by one client reaching another client's informer handler (target p99 <= 10 ms)
#   200 concurrent watches over one HTTP/2 connection (target: one connection, every watch sees the event)
#   idle RSS of a process with 5 informers and 10,000 cached objects (target <= 50 MB)
# No peer runs here (client-go is not packaged in Debian); the figures stand alone.
# Knobs: OBJECTS (10000) UPDATES (1000) WATCHES (200) SERVER_CPU (1) CLIENT_CPU (0)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OBJECTS=${OBJECTS:-10000}
UPDATES=${UPDATES:-1000}
WATCHES=${WATCHES:-200}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BIN=${BIN:-$ROOT/build/default/apiserver-lite/trellis-apiserver}
TOOL=${TOOL:-$ROOT/build/default/bench/trellis-bench-kube}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for c in h2load curl taskset; do command -v $c >/dev/null || die "missing $c (run scripts/setup.sh)"; done
[[ -x $BIN && -x $TOOL ]] || die "build the default preset first"
WORK=$(mktemp -d -t trellis-bench-kube.XXXXXX)
PID=
cleanup() {
    [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taskset -c "$SERVER_CPU" "$BIN" --data-dir "$WORK/data" --secure-port 0 --write-kubeconfig "$WORK/kubeconfig" \
    --threads 1 --log-level warn > "$WORK/apiserver.log" 2>&1 &
PID=$!
for _ in $(seq 500); do [[ -s $WORK/kubeconfig ]] && break; sleep 0.01; done
[[ -s $WORK/kubeconfig ]] || die "trellis-apiserver did not start: $(tail -5 "$WORK/apiserver.log")"
SERVER=$(awk '/server:/ {print $2; exit}' "$WORK/kubeconfig")
TOKEN=$(cat "$WORK/data/admin.token")
api() { curl -sS --cacert "$WORK/data/pki/ca.crt" -H "Authorization: Bearer $TOKEN" "$@"; }
for ns in bench lat w; do
    api -X POST -H 'Content-Type: application/json' -d "{\"metadata\":{\"name\":\"$ns\"}}" "$SERVER/api/v1/namespaces" >/dev/null
done
printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"cm-","labels":{"app":"bench"}},"data":{"key":"%s"}}' \
    "$(head -c 256 /dev/zero | tr '\0' v)" > "$WORK/cm.json"
log "storing $OBJECTS ConfigMaps"
taskset -c "$CLIENT_CPU" h2load -c 8 -n "$OBJECTS" -d "$WORK/cm.json" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' "$SERVER/api/v1/namespaces/bench/configmaps" > "$WORK/fill.out" 2>&1
grep -q "$OBJECTS succeeded" "$WORK/fill.out" || die "filling failed: $(tail -3 "$WORK/fill.out")"

log "informer sync"
sync=$(taskset -c "$CLIENT_CPU" "$TOOL" sync "$WORK/kubeconfig" bench) || die "sync: $sync"
log "update latency"
lat=$(taskset -c "$CLIENT_CPU" "$TOOL" latency "$WORK/kubeconfig" lat "$UPDATES") || die "latency: $lat"
log "$WATCHES watches"
wat=$(taskset -c "$CLIENT_CPU" "$TOOL" watches "$WORK/kubeconfig" w "$WATCHES") || die "watches: $wat"
log "memory"
mem=$(taskset -c "$CLIENT_CPU" "$TOOL" memory "$WORK/kubeconfig" bench) || die "memory: $mem"

val() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
echo
echo "common/kube against trellis-apiserver (TLS h2, loopback), server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU"
printf '%-44s %-28s %s\n' metric figure target
printf '%-44s %-28s %s\n' "informer sync, $(val objects "$sync") ConfigMaps" "$(val median_ms "$sync") ms (median of 3)" "<= 1000 ms"
printf '%-44s %-28s %s\n' "update -> other client's handler (after the response)" \
    "p50 $(val after_response_p50_ms "$lat") / p99 $(sed -n 's/.*after_response_p50_ms=[^ ]* p99_ms=\([^ ]*\).*/\1/p' <<<"$lat") ms" "p99 <= 10 ms"
printf '%-44s %-28s\n' "update -> handler (after the request was sent)" \
    "p50 $(val after_send_p50_ms "$lat") / p99 $(sed -n 's/.*after_send_p50_ms=[^ ]* p99_ms=\([^ ]*\).*/\1/p' <<<"$lat") ms"
printf '%-44s %-28s %s\n' "$(val open "$wat") concurrent watches" \
    "$(val connections "$wat") connection(s), $(val saw_event "$wat") saw the event in $(val all_within_ms "$wat") ms" "1 connection"
printf '%-44s %-28s %s\n' "RSS, 5 informers, $(val cached_objects "$mem") cached objects" "$(val rss_mib "$mem") MiB" "<= 50 MB"
