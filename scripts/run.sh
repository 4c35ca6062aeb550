#!/usr/bin/env bash
# Sets up, builds and runs the main job. Today that is the HTTP core's example
# server (TLS with h2 and http/1.1); it grows into `trellis up`, the local
# multi-node cluster, as components land.
#   TRELLIS_RUN_ONCE=1   start, show it working, stop (no waiting for Ctrl-C)
#   TRELLIS_PORT=N       listen port (default 8443)
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
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
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
echo "Not yet running (later issues): apiserver-lite, controllers, CSI, CNI, servicelb, ingress."

if [[ ${TRELLIS_RUN_ONCE:-0} == 1 ]]; then
    exit 0
fi
echo "Press Ctrl-C to stop."
wait $pid
