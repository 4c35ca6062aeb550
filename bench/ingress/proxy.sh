#!/usr/bin/env bash
# The anchor harness's EXTRA_PROXY_CMD for trellis-ingress: writes the route
# the harness wants as Kubernetes objects into the apiserver of $KUBECONFIG,
# then runs trellis-ingress in the foreground on $PORT (TLS). Environment
# from the harness: CERT KEY PORT BACKEND_HOST BACKEND_PORT ROUTE_HOST
# ROUTE_PREFIX WORKDIR; from run.sh: KUBECONFIG TRELLIS_INGRESS_BIN.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kubectl delete ingress bench --ignore-not-found >/dev/null
kubectl delete secret bench-tls --ignore-not-found >/dev/null
kubectl create secret tls bench-tls --cert="$CERT" --key="$KEY" >/dev/null
kubectl apply -f - >/dev/null <<YAML
$(backend_objects backend "$BACKEND_HOST" "$BACKEND_PORT")
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench}
spec:
  ingressClassName: trellis
  tls: [{hosts: ["$ROUTE_HOST"], secretName: bench-tls}]
  rules:
  - host: $ROUTE_HOST
    http:
      paths:
      - {path: $ROUTE_PREFIX, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
YAML
exec "$TRELLIS_INGRESS_BIN" --kubeconfig "$KUBECONFIG" --address 127.0.0.1 --https-port "$PORT" --http-port 0 \
    --metrics-port 0 --threads 1 --access-log=false --publish-address 127.0.0.1 --log-level warn
