#!/usr/bin/env bash
# Sets up, builds and runs the main job. Today: trellis-apiserver (the
# Kubernetes API on SQLite, driven with kubectl), trellis-controllers with
# trellis-csi (a PVC provisioned and bound; a Deployment's pods made and
# scheduled), the HTTP core's example server,
# pod networking across two node namespaces (trellis-cni-agent per node,
# a pod on each) and cluster DNS (trellis-dns answering a Service's name);
# it grows into `trellis up`, the local multi-node cluster,
# as components land. Needs root (network namespaces).
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
others=()
trap 'kill $pid $apipid "${others[@]}" 2>/dev/null; wait $pid $apipid "${others[@]}" 2>/dev/null || true' EXIT
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

# The controllers turn a declared PVC into a volume: trellis-csi (controller
# service, its pool a directory under the state dir) and trellis-controllers
# (local profile: binder, provisioner, scheduler, endpoints, ...).
mkdir -p "$state/csi-pool"
rm -f "$state/csi.sock"
build/default/csi/trellis-csi --endpoint "unix://$state/csi.sock" --mode controller --node-id demo-n1 \
    --pool-dir "$state/csi-pool" 2>"$state/csi.log" &
others+=($!)
for _ in $(seq 100); do [[ -S $state/csi.sock ]] && break; sleep 0.05; done
build/default/controllers/trellis-controllers --kubeconfig "$state/kubeconfig" --csi-endpoint "unix://$state/csi.sock" \
    --cluster-cidr 10.248.0.0/16 --leader-elect=false 2>"$state/controllers.log" &
others+=($!)
kubectl --kubeconfig "$state/kubeconfig" apply -f - >/dev/null <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: trellis, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: csi.trellis.dev
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: demo-claim}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 64Mi}}}
YAML
kubectl --kubeconfig "$state/kubeconfig" wait --for=jsonpath='{.status.phase}'=Bound pvc/demo-claim --timeout=30s >/dev/null ||
    { tail -20 "$state/controllers.log"; echo "the demo claim was not bound" >&2; exit 1; }
echo
echo "Started: trellis-csi (controller, pool $state/csi-pool) and trellis-controllers (see docs/controllers.md)"
echo "  kubectl get pvc,pv ->"
kubectl --kubeconfig "$state/kubeconfig" get pvc demo-claim | sed 's/^/    /'
kubectl --kubeconfig "$state/kubeconfig" get pv "$(kubectl --kubeconfig "$state/kubeconfig" get pvc demo-claim -o jsonpath='{.spec.volumeName}')" |
    sed 's/^/    /'

# Pod networking on two "nodes" (network namespaces on one bridge): the Nodes
# live in trellis-apiserver, a trellis-cni-agent per node writes the
# conflist and routes, and a pod on each node (ADDed with that conflist's
# plugin, as a runtime would) reaches the other. Removed again on exit.
demo=trellis-demo
nodes_up=()
agents=()
network_down() {
    for a in "${agents[@]}"; do kill "$a" 2>/dev/null; done
    for k in "${nodes_up[@]}"; do
        ip netns exec "$demo-n$k" env CNI_COMMAND=DEL CNI_CONTAINERID="pod$k" CNI_NETNS="/var/run/netns/$demo-p$k" \
            CNI_IFNAME=eth0 CNI_PATH="$state/cni/n$k/bin" "$state/cni/n$k/bin/trellis-cni" \
            < "$state/cni/n$k/plugin.json" >/dev/null 2>&1 || true
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$demo-"); do ip netns del "$ns"; done
}
trap 'network_down; kill $pid $apipid "${others[@]}" 2>/dev/null; wait $pid $apipid "${others[@]}" 2>/dev/null || true' EXIT
network_down
kc=(kubectl --kubeconfig "$state/kubeconfig")
ip netns add "$demo-sw" && ip -n "$demo-sw" link add br0 type bridge && ip -n "$demo-sw" link set br0 up
for k in 1 2; do
    ip netns add "$demo-n$k" && ip netns add "$demo-p$k" && ip -n "$demo-p$k" link set lo up
    ip -n "$demo-sw" link add "sw$k" type veth peer name up0 netns "$demo-n$k"
    ip -n "$demo-sw" link set "sw$k" master br0 up
    ip -n "$demo-n$k" addr add "192.168.72.$k/24" dev up0 && ip -n "$demo-n$k" link set up0 up
    ip -n "$demo-n$k" link set lo up
    printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"demo-n%s"},"spec":{"podCIDRs":["10.247.%s.0/24"]}}' "$k" "$k" |
        "${kc[@]}" apply -f - >/dev/null
    "${kc[@]}" patch node "demo-n$k" --subresource=status --type=merge \
        -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"192.168.72.$k\"}]}}" >/dev/null
    rm -rf "$state/cni/n$k"
    build/default/cni/trellis-cni-agent --kubeconfig "$state/kubeconfig" --node-name "demo-n$k" \
        --cni-bin-dir "$state/cni/n$k/bin" --cni-conf-dir "$state/cni/n$k/net.d" --plugin build/default/cni/trellis-cni \
        --ipam-data-dir "$state/cni/n$k/ipam" --ready-file "$state/cni/n$k/ready" --netns "/var/run/netns/$demo-n$k" \
        --listen 127.0.0.1:0 --resync 1 2>"$state/cni-agent-n$k.log" &
    agents+=($!)
done
for k in 1 2; do
    conf=$state/cni/n$k/net.d/10-trellis.conflist
    for _ in $(seq 100); do [[ -s $conf && -e $state/cni/n$k/ready ]] && break; sleep 0.1; done
    [[ -s $conf ]] || { cat "$state/cni-agent-n$k.log"; echo "trellis-cni-agent wrote no conflist" >&2; exit 1; }
    jq -c '.plugins[0] + {name: .name, cniVersion: .cniVersion}' "$conf" > "$state/cni/n$k/plugin.json"
    ip netns exec "$demo-n$k" env CNI_COMMAND=ADD CNI_CONTAINERID="pod$k" CNI_NETNS="/var/run/netns/$demo-p$k" \
        CNI_IFNAME=eth0 CNI_PATH="$state/cni/n$k/bin" "$state/cni/n$k/bin/trellis-cni" \
        < "$state/cni/n$k/plugin.json" > "$state/cni/n$k/add.json"
    nodes_up+=("$k")
done
ip1=$(jq -r '.ips[0].address' "$state/cni/n1/add.json"); ip2=$(jq -r '.ips[0].address' "$state/cni/n2/add.json")
echo
echo "Started: trellis-cni-agent on nodes demo-n1 and demo-n2 (network namespaces $demo-n1, $demo-n2)"
echo "  kubectl get nodes ->"
"${kc[@]}" get nodes demo-n1 demo-n2 | sed 's/^/    /'
echo "  pod1 $ip1 on demo-n1, pod2 $ip2 on demo-n2; route on demo-n1: $(ip -n "$demo-n1" route show proto 77)"
printf '  ping pod1 -> pod2: '
for _ in $(seq 20); do ip netns exec "$demo-p1" ping -c1 -W1 "${ip2%/*}" >/dev/null 2>&1 && break; sleep 0.2; done
ip netns exec "$demo-p1" ping -c1 -W1 "${ip2%/*}" | sed -n 's/.*\(time=.*\)/reply, \1/p'
echo "  docs/cni.md: the plugin and the agent; docs/csi.md: trellis-csi (bench/csi/run.sh drives it on loop devices)"

# Workloads: a Deployment's ReplicaSet makes its pods and the scheduler puts
# them on the two nodes; running them is the node agent's (a later issue).
"${kc[@]}" create deployment demo-web --image=nginx --replicas=2 --dry-run=client -o yaml | "${kc[@]}" apply -f - >/dev/null
for _ in $(seq 100); do
    [[ $("${kc[@]}" get pods -l app=demo-web -o jsonpath='{.items[*].spec.nodeName}' | wc -w) == 2 ]] && break
    sleep 0.1
done
echo
echo "Workloads (trellis-controllers: deployment, replicaset, scheduler; see docs/controllers.md)"
echo "  kubectl create deployment demo-web --image=nginx --replicas=2; kubectl get deploy,rs,pods -o wide ->"
"${kc[@]}" get deploy,rs,pods -l app=demo-web -o wide | sed 's/^/    /'

# Cluster DNS: trellis-dns answers the Services' names (here on a loopback
# port; in a cluster it is the kube-dns Service, see deploy/base/dns).
"${kc[@]}" expose deployment demo-web --port 80 --target-port 8080 --dry-run=client -o yaml | "${kc[@]}" apply -f - >/dev/null
dnsport=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/default/servicelb/dns/trellis-dns --kubeconfig "$state/kubeconfig" --listen "127.0.0.1:$dnsport" --metrics-port 0 \
    --upstream 127.0.0.1:9 2>"$state/dns.log" &
others+=($!)
answer=""
for _ in $(seq 50); do
    answer=$(dig +short +time=1 +tries=1 -p "$dnsport" @127.0.0.1 demo-web.default.svc.cluster.local 2>/dev/null || true)
    [[ -n $answer ]] && break
    sleep 0.1
done
echo
echo "Cluster DNS (trellis-dns; see docs/dns.md)"
echo "  dig -p $dnsport @127.0.0.1 demo-web.default.svc.cluster.local -> $answer (kubectl get svc demo-web: $("${kc[@]}" get svc demo-web -o jsonpath='{.spec.clusterIP}'))"
echo "Not yet running (later issues): pods (the node agent), servicelb in the demo, ingress, trellis up."

if [[ ${TRELLIS_RUN_ONCE:-0} == 1 ]]; then
    exit 0
fi
echo "Press Ctrl-C to stop."
wait $pid $apipid
