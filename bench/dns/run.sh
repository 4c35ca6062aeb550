#!/usr/bin/env bash
# Benchmark: trellis-dns against unbound and dnsmasq, in one run of the shared
# anchor harness (../shared/anchors/dns/run.sh: the same 10,000 cluster names
# from each server on one core, dnsperf on another; interleaved rounds,
# medians). trellis-dns takes part as the harness's extra server, fed the way
# it is in a cluster: a real trellis-apiserver (started here, pinned to the
# load generator's CPU) holding those names as Services — svc-<i> in ns-<i%50>
# with ClusterIP 10.96.<i/250>.<i%250+1> — read through informers.
#
# Then the figures the harness does not take (change.py):
#   a Service written → its name answered (ms, median and max of N_CHANGES)
#   RSS of trellis-dns with the NAMES Services loaded
#
# Knobs: everything the harness takes (NAMES, QUERIES, ROUNDS, DURATION, ...),
#        ANCHOR (path of the harness), N_CHANGES (20), THREADS (1),
#        EXTRA_STEPS ("change"; "" skips them)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/default}
ANCHOR=${ANCHOR:-$ROOT/../shared/anchors/dns/run.sh}
export NAMES=${NAMES:-10000}
N_CHANGES=${N_CHANGES:-20}
THREADS=${THREADS:-1}
EXTRA_STEPS=${EXTRA_STEPS-change}
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
PY=/usr/bin/python3
die() { echo "bench/dns: $*" >&2; exit 1; }
[[ -x $BIN/servicelb/dns/trellis-dns && -x $BIN/apiserver-lite/trellis-apiserver ]] || die "build the default preset first"
[[ -f $ANCHOR ]] || die "the anchor harness is not at $ANCHOR (set ANCHOR)"

WORK=$(mktemp -d /tmp/trellis-bench-dns.XXXXXX)
API_PID=
cleanup() {
    [[ -n $API_PID ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
    pkill -f "trellis-dns --kubeconfig $WORK" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The names' addresses lie in 10.96.0.0/16; the range must hold them and leave
# 10.96.0.1 free (the "kubernetes" Service takes the range's first address).
source "$HERE/../lib.sh"
start_apiserver "$WORK" --service-cluster-ip-range 10.64.0.0/10
(cd "$HERE" && taskset -c "$LOADGEN_CPU" $PY populate.py "$WORK/kubeconfig" "$NAMES") || die "creating the Services failed"

DNS="$BIN/servicelb/dns/trellis-dns --kubeconfig $WORK/kubeconfig --threads $THREADS --upstream 127.0.0.1:9 --metrics-port 0"
# --- the anchor run, with trellis-dns as the extra server ---
EXTRA_DNS_CMD="exec $DNS --listen 127.0.0.1:\$PORT" EXTRA_DNS_NAME="trellis-dns" bash "$ANCHOR"
status=$?

# --- figures the harness does not take ---
if [[ -n $EXTRA_STEPS ]]; then
    port=$($PY -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    taskset -c "$SERVER_CPU" $DNS --listen "127.0.0.1:$port" >"$WORK/dns.log" 2>&1 &
    dns_pid=$!
    (cd "$HERE" && taskset -c "$LOADGEN_CPU" $PY change.py "$WORK/kubeconfig" "$port" "$dns_pid" "$N_CHANGES" "$NAMES") || status=1
    kill "$dns_pid" 2>/dev/null; wait "$dns_pid" 2>/dev/null
fi
exit $status
