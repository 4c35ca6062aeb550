#!/usr/bin/env bash
# Sets up, builds and runs the main job. Today: trellis-apiserver (the
# Kubernetes API on SQLite, driven with kubectl) and the HTTP core's example
# server; it grows into `trellis up`, the local multi-node cluster, as
# components land.
#   TRELLIS_RUN_ONCE=1        start, show it working, stop (no waiting for Ctrl-C)
#   TRELLIS_PORT=N            example server port (default 8443)
#   TRELLIS_APISERVER_PORT=N  API server port (default 6443)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cmake --preset default >/dev/null
cmake --build build/default

state=${TRELLIS_STATE_DIR:-$PWD/build/state}
port=${TRELLIS_PORT:-8443}
mkdir -p "$state"
if [[ ! -f $state/serving.crt ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$state/serving.key" -out "$state/serving.crt" 2>/dev/null
fi

build/default/common/http/examples/trellis-http-example --listen "127.0.0.1:$port" \
    --cert "$state/serving.crt" --key "$state/serving.key" &
pid=$!
apiport=${TRELLIS_APISERVER_PORT:-6443}
rm -f "$state/kubeconfig"
build/default/apiserver-lite/trellis-apiserver --data-dir "$state/apiserver" --secure-port "$apiport" \
    --write-kubeconfig "$state/kubeconfig" 2>"$state/apiserver.log" &
apipid=$!
trap 'kill $pid $apipid 2>/dev/null; wait $pid $apipid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -f $state/kubeconfig ]] && break; sleep 0.05; done
[[ -f $state/kubeconfig ]] || { cat "$state/apiserver.log"; echo "trellis-apiserver did not start" >&2; exit 1; }
for _ in $(seq 100); do
    curl -sf --cacert "$state/serving.crt" "https://localhost:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.05
done

echo
echo "Started: trellis-http-example (pid $pid) on https://localhost:$port (TLS; ALPN h2, http/1.1)"
echo "  certificate: $state/serving.crt"
for proto in --http2 --http1.1; do
    printf '  curl %-8s -> ' "$proto"
    curl -sS --cacert "$state/serving.crt" "$proto" -o /dev/null \
        -w 'HTTP/%{http_version} %{http_code}, %{size_download} bytes\n' "https://localhost:$port/"
done
echo "  streaming:  curl -N --cacert $state/serving.crt 'https://localhost:$port/stream?n=5&interval_ms=200'"
echo "  metrics:    curl --cacert $state/serving.crt https://localhost:$port/metrics"
echo
echo "Started: trellis-apiserver (pid $apipid) on https://127.0.0.1:$apiport, data in $state/apiserver"
echo "  export KUBECONFIG=$state/kubeconfig"
echo "  kubectl get namespaces ->"
kubectl --kubeconfig "$state/kubeconfig" get namespaces | sed 's/^/    /'
echo "  kubectl apply -f, get, describe, patch, label, delete, get -w, wait, auth can-i   (see docs/apiserver.md)"
echo "  trellis-kubectl-lite (common/kube: client, informers, leader election) get namespaces ->"
build/default/local/trellis-kubectl-lite --kubeconfig "$state/kubeconfig" get namespaces |
    sed -n 's/.*"name":"\([^"]*\)".*/    namespace\/\1/p'
echo "    also: trellis-kubectl-lite --kubeconfig $state/kubeconfig watch configmaps | lead LEASE --identity ID"
echo "Not yet running (later issues): controllers, CSI, CNI, servicelb, ingress, trellis up."

if [[ ${TRELLIS_RUN_ONCE:-0} == 1 ]]; then
    exit 0
fi
echo "Press Ctrl-C to stop."
wait $pid $apipid
