#!/usr/bin/env bash
# The figures the anchor harness does not take, for trellis-ingress alone
# (called by run.sh with its work dir; KUBECONFIG and TRELLIS_INGRESS_BIN set):
#   change  an Ingress edit (a new path) → the first request that gets it
#           (ms after kubectl returned; median and max of N_CHANGES)
#   scale   RSS idle, then with N_INGRESSES Ingresses loaded (one host each)
set -uo pipefail
WORK=$1
N_CHANGES=${N_CHANGES:-20}
N_INGRESSES=${N_INGRESSES:-1000}
EXTRA_STEPS=${EXTRA_STEPS-change scale}
BACKEND_PORT=${BACKEND_PORT:-18090}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ECHO=${ECHO_BIN:-$ROOT/build/default/ingress/trellis-echo-backend}
# shellcheck source=lib.sh
source "$HERE/lib.sh"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; kubectl delete ns bench-extra --wait=false >/dev/null 2>&1' EXIT
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

"$ECHO" --name extra --port "$BACKEND_PORT" >"$WORK/echo.log" 2>&1 &
PIDS+=($!)
kubectl create ns bench-extra >/dev/null
backend_objects echo 127.0.0.1 "$BACKEND_PORT" | kubectl -n bench-extra apply -f - >/dev/null
"$TRELLIS_INGRESS_BIN" --kubeconfig "$KUBECONFIG" --address 127.0.0.1 --http-port 18091 --https-port 18092 \
    --metrics-port 18093 --threads 1 --access-log=false --publish-address 127.0.0.1 --log-level warn \
    >"$WORK/ingress-extra.log" 2>&1 &
ING=$!
PIDS+=($ING)
for _ in $(seq 100); do curl -sf localhost:18093/readyz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$ING/status"; }
sleep 1
echo "trellis-ingress RSS idle: $(( $(rss) / 1024 )).$(( $(rss) % 1024 * 10 / 1024 )) MiB"

if [[ $EXTRA_STEPS == *change* ]]; then
    lat=()
    for i in $(seq "$N_CHANGES"); do
        kubectl -n bench-extra apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: change}
spec:
  ingressClassName: trellis
  rules:
  - host: change.test
    http:
      paths:
      - {path: /v$i, pathType: Exact, backend: {service: {name: echo, port: {number: 80}}}}
YAML
        t0=$(now_ms)
        while [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'host: change.test' "http://127.0.0.1:18091/v$i") != 200 ]]; do
            (( $(now_ms) - t0 > 5000 )) && { echo "change $i never became visible"; break; }
        done
        lat+=($(( $(now_ms) - t0 )))
    done
    printf '%s\n' "${lat[@]}" > "$WORK/change.txt"
    echo "route change → visible: median $(median < "$WORK/change.txt") ms, max $(sort -n "$WORK/change.txt" | tail -1) ms (n=$N_CHANGES; includes one curl exec per poll)"
fi

if [[ $EXTRA_STEPS == *scale* ]]; then
    y=$WORK/many.yaml
    : > "$y"
    for i in $(seq "$N_INGRESSES"); do
        cat >> "$y" <<YAML
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: many-$i}
spec:
  ingressClassName: trellis
  rules:
  - host: h$i.many.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
      - {path: /api/v$i, pathType: Exact, backend: {service: {name: echo, port: {number: 80}}}}
---
YAML
    done
    t0=$(now_ms)
    kubectl -n bench-extra apply -f "$y" >/dev/null
    for _ in $(seq 600); do
        served=$(curl -s localhost:18093/metrics | awk '/^trellis_ingress_ingresses_served/ {print $2}')
        (( ${served:-0} >= N_INGRESSES )) && break
        sleep 0.1
    done
    echo "$N_INGRESSES Ingresses: all served $(( $(now_ms) - t0 )) ms after kubectl apply began (served=$served)"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "host: h$N_INGRESSES.many.test" "http://127.0.0.1:18091/x")
    sleep 2
    echo "trellis-ingress RSS with $N_INGRESSES Ingresses: $(( $(rss) / 1024 )).$(( $(rss) % 1024 * 10 / 1024 )) MiB (a request to the last host: $code)"
fi
