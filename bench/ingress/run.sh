#!/usr/bin/env bash
# Benchmark: trellis-ingress against nginx, HAProxy, nghttpx and Caddy as TLS
# reverse proxies, in one run of the shared anchor harness
# (../shared/anchors/ingress/run.sh: one nginx backend, every proxy pinned to
# the same CPU with one worker, h2load on another; interleaved rounds,
# medians). trellis-ingress takes part as the harness's extra proxy,
# configured the way users configure it: a real trellis-apiserver (started
# here, pinned to the load generator's CPU, outside the measured process
# group) holding an IngressClass, a Service + EndpointSlice for the backend,
# a kubernetes.io/tls Secret with the harness's certificate and an Ingress
# for host app.example.test, Prefix /api (see proxy.sh).
#
# Then the extra figures the harness does not take:
#   route change → visible to requests (ms, median of N_CHANGES edits)
#   RSS idle, and with 1,000 Ingresses loaded
#
# Knobs: everything the harness takes (ROUNDS, DURATION, PROXIES, TESTS, ...),
#        ANCHOR (path of the harness), N_CHANGES (20), N_INGRESSES (1000),
#        EXTRA_STEPS ("change scale"; "" skips them)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/default}
ANCHOR=${ANCHOR:-$ROOT/../shared/anchors/ingress/run.sh}
N_CHANGES=${N_CHANGES:-20}
N_INGRESSES=${N_INGRESSES:-1000}
EXTRA_STEPS=${EXTRA_STEPS-change scale}
LOADGEN_CPU=${LOADGEN_CPU:-0}
die() { echo "bench/ingress: $*" >&2; exit 1; }
[[ -x $BIN/ingress/trellis-ingress && -x $BIN/apiserver-lite/trellis-apiserver ]] || die "build the default preset first"
[[ -f $ANCHOR ]] || die "the anchor harness is not at $ANCHOR (set ANCHOR)"
command -v kubectl >/dev/null || die "kubectl is needed"

WORK=$(mktemp -d /tmp/trellis-bench-ingress.XXXXXX)
API_PID=
cleanup() {
    [[ -n $API_PID ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
    pkill -f "trellis-ingress --kubeconfig $WORK" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

source "$HERE/../lib.sh"

mkdir -p "$WORK/api"
start_apiserver "$WORK/api"
export KUBECONFIG=$WORK/api/kubeconfig
export TRELLIS_INGRESS_BIN=$BIN/ingress/trellis-ingress

# --- the anchor run, with trellis-ingress as the extra proxy ---
EXTRA_PROXY_CMD="exec bash '$HERE/proxy.sh'" EXTRA_PROXY_PORT=${EXTRA_PROXY_PORT:-18450} \
EXTRA_PROXY_NAME=trellis EXTRA_PROXY_VERSION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo dev)" \
    bash "$ANCHOR"
status=$?

# --- figures the harness does not take ---
if [[ -n $EXTRA_STEPS ]]; then
    bash "$HERE/extra.sh" "$WORK" || status=1
fi
exit $status
