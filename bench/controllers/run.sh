#!/usr/bin/env bash
# Benchmark: trellis-controllers against trellis-apiserver and trellis-csi on
# this machine (loopback; the CSI pool a directory of its own).
#   100 PVCs (Immediate) from `kubectl apply` to all Bound            (target <= 3 s)
#   1,000 pods scheduled over 10 nodes, after the last is created      (target <= 1 s)
#   an EndpointSlice showing a pod's readiness change, p99             (target <= 50 ms)
#   a 1,000-replica Deployment, create to all pods created             (target <= 2 s)
#   a rollout of 100 replicas, pods made ready at once by a stand-in   (target <= 3 s)
#   RSS, local profile, with 10,000 pods and 10,000+ objects cached    (target <= 80 MB)
#   RSS, cluster profile, idle                                         (target <= 25 MB)
# No peer runs here: kube-controller-manager, kube-scheduler and the
# kubernetes-csi sidecars are not packaged in Debian (only as Go libraries);
# the figures stand against the targets, and the sidecars' published idle
# RSS (15-40 MB each, four of them) for the last line.
# Knobs: PVCS (100) PODS (1000) NODES (10) FLIPS (200) OBJECTS (10000)
#        REPLICAS (1000) ROLLOUT (100) CACHED_PODS (10000: pods in total)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
B=${BUILD:-$ROOT/build/default}
PVCS=${PVCS:-100}
PODS=${PODS:-1000}
NODES=${NODES:-10}
FLIPS=${FLIPS:-200}
OBJECTS=${OBJECTS:-10000}
REPLICAS=${REPLICAS:-1000}
ROLLOUT=${ROLLOUT:-100}
CACHED_PODS=${CACHED_PODS:-10000}
TOOL=$B/bench/trellis-bench-controllers

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
command -v kubectl >/dev/null || die "missing kubectl (run scripts/setup.sh)"
for b in apiserver-lite/trellis-apiserver csi/trellis-csi controllers/trellis-controllers bench/trellis-bench-controllers; do
    [[ -x $B/$b ]] || die "build the default preset first ($b)"
done
WORK=$(mktemp -d -t trellis-bench-controllers.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

"$B/apiserver-lite/trellis-apiserver" --data-dir "$WORK/api" --secure-port 0 --write-kubeconfig "$WORK/kubeconfig" \
    --log-level warn > "$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/pool"
"$B/csi/trellis-csi" --endpoint "unix://$WORK/csi.sock" --mode controller --node-id bench-node-0 \
    --pool-dir "$WORK/pool" --log-level warn > "$WORK/csi.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1000); do [[ -s $WORK/kubeconfig && -S $WORK/csi.sock ]] && break; sleep 0.01; done
[[ -s $WORK/kubeconfig ]] || die "trellis-apiserver did not start: $(tail -5 "$WORK/apiserver.log")"
KC=$WORK/kubeconfig
kubectl --kubeconfig "$KC" apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: bench}
provisioner: csi.trellis.dev
volumeBindingMode: Immediate
YAML
"$B/controllers/trellis-controllers" --kubeconfig "$KC" --csi-endpoint "unix://$WORK/csi.sock" \
    --cluster-cidr 10.244.0.0/16 --leader-elect=false --log-level warn > "$WORK/controllers.log" 2>&1 &
CTL=$!
PIDS+=($CTL)
sleep 1

for i in $(seq "$PVCS"); do
    printf -- '---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bench-%d}\nspec: {storageClassName: bench, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}\n' "$i"
done > "$WORK/pvcs.yaml"
log "PVCs: $PVCS"
PVC_LINE=$("$TOOL" pvcs "$KC" "$WORK/pvcs.yaml" "$PVCS") || die "pvcs: $PVC_LINE"
log "pods: $PODS over $NODES nodes"
POD_LINE=$("$TOOL" pods "$KC" "$NODES" "$PODS") || die "pods: $POD_LINE"
log "EndpointSlice readiness: $FLIPS flips"
SLICE_LINE=$("$TOOL" slices "$KC" "$FLIPS") || die "slices: $SLICE_LINE"
# The cluster profile idle, with what the steps above left (as issue 12 measured it).
"$B/controllers/trellis-controllers" --kubeconfig "$KC" --profile cluster --csi-endpoint "unix://$WORK/csi.sock" \
    --leader-elect=false --log-level warn > "$WORK/cluster.log" 2>&1 &
CL=$!
sleep 5
CLUSTER_RSS=$(rss_mb "$CL")
kill -TERM "$CL"; wait "$CL" 2>/dev/null
log "Deployment: $REPLICAS replicas"
DEPLOY_LINE=$("$TOOL" deploy "$KC" "$REPLICAS") || die "deploy: $DEPLOY_LINE"
log "rollout: $ROLLOUT replicas"
ROLLOUT_LINE=$("$TOOL" rollout "$KC" "$ROLLOUT") || die "rollout: $ROLLOUT_LINE"
MORE=$(( CACHED_PODS - PODS - REPLICAS - ROLLOUT ))
if (( MORE > 0 )); then
    log "pods: $MORE more, bound (to reach $CACHED_PODS cached)"
    "$TOOL" podobjects "$KC" "$NODES" "$MORE" >/dev/null || die "podobjects"
fi
log "objects: $OBJECTS ConfigMaps"
"$TOOL" objects "$KC" "$OBJECTS" >/dev/null || die "objects"
sleep 3
LOCAL_RSS=$(rss_mb "$CTL")
CACHED=$(( PVCS * 2 + CACHED_PODS + 100 + OBJECTS ))


field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }
printf '\n%-58s %12s %10s %8s\n' "trellis-controllers" "measured" "target" "ratio"
row() { printf '%-58s %12s %10s %8s\n' "$1" "$2" "$3" "$(awk -v m="$2" -v t="$3" 'BEGIN{printf "%.2f", m/t}')"; }
row "$PVCS PVCs, kubectl apply to all Bound (ms)" "$(field "$PVC_LINE" all_bound_ms)" 3000
row "$PODS pods over $NODES nodes, bound after the last created (ms)" "$(field "$POD_LINE" bound_after_created_ms)" 1000
row "  (from the first create, ms)" "$(field "$POD_LINE" all_bound_ms)" 1000
row "EndpointSlice readiness change, p99 (ms)" "$(field "$SLICE_LINE" p99_ms)" 50
row "$REPLICAS-replica Deployment, create to all pods created (ms)" "$(field "$DEPLOY_LINE" all_pods_created_ms)" 2000
row "$ROLLOUT-replica rollout, pods ready at once (ms)" "$(field "$ROLLOUT_LINE" rollout_ms)" 3000
row "RSS, local profile, $CACHED_PODS pods, ~$CACHED objects cached (MB)" "$LOCAL_RSS" 80
row "RSS, cluster profile, idle (MB)" "$CLUSTER_RSS" 25
printf '\n(ratio = measured / target: <= 1 meets it)\n%s\n%s\n%s\n%s\n%s\n' "$PVC_LINE" "$POD_LINE" "$SLICE_LINE" \
    "$DEPLOY_LINE" "$ROLLOUT_LINE"
