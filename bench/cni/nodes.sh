#!/usr/bin/env bash
# Benchmark: pod-to-pod TCP throughput across two nodes, trellis-cni-agent's
# VXLAN backend against its host-gw backend, in one run. Each is a real
# setup: trellis-apiserver holds the Nodes, an agent per node (in that
# node's network namespace) writes the conflist and programs routes (and the
# VXLAN device, neighbor and forwarding entries), and the pods are ADDed with
# the conflist's plugin. Both backends run over the same underlay — two node
# namespaces on one bridge — so the ratio is the price of encapsulation.
# iperf3 pod on node 1 -> pod on node 2 for TP_SECONDS (first second
# omitted), ROUNDS times interleaved; medians. Everything is removed on exit.
# Knobs: ROUNDS (3) TP_SECONDS (5)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}
TP_SECONDS=${TP_SECONDS:-5}
BUILD=${BUILD:-$ROOT/build/default}
API=$BUILD/apiserver-lite/trellis-apiserver
AGENT=$BUILD/cni/trellis-cni-agent
PLUGIN=$BUILD/cni/trellis-cni
# shellcheck source=lib.sh
source "$HERE/lib.sh"
die() { echo "bench/cni/nodes: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"
for b in "$API" "$AGENT" "$PLUGIN"; do [[ -x $b ]] || die "$b is missing: build the default preset first"; done
command -v iperf3 > /dev/null || die "iperf3 is not installed (scripts/setup.sh)"
command -v kubectl > /dev/null || die "kubectl is not installed"
command -v jq > /dev/null || die "jq is not installed (scripts/setup.sh)"
WORK=$(mktemp -d -t trellis-bench-nodes.XXXXXX)
TAG=tn$$
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
    wait 2> /dev/null
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-"); do ip netns del "$ns"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One setup per backend: an API server, two nodes on a bridge, an agent and
# a pod on each. $1 = backend; leaves the pod addresses in $WORK/$1/ip.{1,2}.
setup() {
    local be=$1 dir=$WORK/$1 sw=$TAG-$1-sw k
    mkdir -p "$dir"
    "$API" --data-dir "$dir/api" --secure-port 0 --write-kubeconfig "$dir/kubeconfig" > "$dir/api.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [[ -s $dir/kubeconfig ]] && kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz > /dev/null 2>&1 && break; sleep 0.1; done
    local kc=(kubectl --kubeconfig "$dir/kubeconfig")
    ip netns add "$sw" && ip -n "$sw" link add br0 type bridge && ip -n "$sw" link set br0 up || die "switch"
    for k in 1 2; do
        local node=$TAG-$be-n$k pod=$TAG-$be-p$k nip=192.168.71.$k
        ip netns add "$node" && ip netns add "$pod" && ip -n "$pod" link set lo up || die "namespaces"
        ip -n "$sw" link add "sw$k" type veth peer name up0 netns "$node" && ip -n "$sw" link set "sw$k" master br0 up &&
            ip -n "$node" addr add "$nip/24" dev up0 && ip -n "$node" link set up0 up && ip -n "$node" link set lo up || die "wiring"
        printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"n%s"},"spec":{"podCIDRs":["10.246.%s.0/24"]}}' "$k" "$k" |
            "${kc[@]}" apply -f - > /dev/null || die "node n$k"
        "${kc[@]}" patch node "n$k" --subresource=status --type=merge \
            -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$nip\"}]}}" > /dev/null || die "node n$k address"
        "$AGENT" --kubeconfig "$dir/kubeconfig" --node-name "n$k" --cni-bin-dir "$dir/n$k/bin" --cni-conf-dir "$dir/n$k/net.d" \
            --plugin "$PLUGIN" --ipam-data-dir "$dir/n$k/ipam" --netns "/var/run/netns/$node" --backend "$be" \
            --listen "127.0.0.1:0" --resync 1 --ready-file "$dir/n$k/ready" > "$dir/agent$k.log" 2>&1 &
        PIDS+=($!)
    done
    for k in 1 2; do
        local node=$TAG-$be-n$k pod=$TAG-$be-p$k conf=$dir/n$k/net.d/10-trellis.conflist
        for _ in $(seq 100); do [[ -s $conf ]] && break; sleep 0.1; done
        [[ -s $conf ]] || die "$be: agent n$k wrote no conflist: $(tail -3 "$dir/agent$k.log")"
        jq -c '.plugins[0] + {name: .name, cniVersion: .cniVersion}' "$conf" > "$dir/plugin$k.json"
        ip netns exec "$node" env CNI_COMMAND=ADD CNI_CONTAINERID="p$k" CNI_NETNS="/var/run/netns/$pod" CNI_IFNAME=eth0 \
            CNI_PATH="$dir/n$k/bin" "$dir/n$k/bin/trellis-cni" < "$dir/plugin$k.json" > "$dir/add$k.json" || die "$be: ADD on n$k: $(cat "$dir/add$k.json")"
        grep -o '"address":"[0-9.]*' "$dir/add$k.json" | head -1 | cut -d'"' -f4 > "$dir/ip.$k"
    done
    # Routes (and, for VXLAN, the peer's published endpoint) in place.
    for _ in $(seq 100); do
        ip netns exec "$TAG-$be-p1" ping -c1 -W1 "$(cat "$dir/ip.2")" > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$be: pods cannot reach each other: $(ip -n "$TAG-$be-n1" route)"
}

setup host-gw
setup vxlan
for r in $(seq "$ROUNDS"); do
    order="host-gw vxlan"; (( r % 2 == 0 )) && order="vxlan host-gw"
    for be in $order; do
        dir=$WORK/$be
        iperf_pair "$TAG-$be-p2" "$TAG-$be-p1" "$(cat "$dir/ip.2")" "$TP_SECONDS" "$dir/tp.$r.json" || die "$be: iperf3 round $r"
        bps "$dir/tp.$r.json" > "$dir/tp.$r"
        [[ -s $dir/tp.$r ]] || die "$be: iperf3 run $r"
    done
    echo "round $r/$ROUNDS done" >&2
done
hg=$(for r in $(seq "$ROUNDS"); do cat "$WORK/host-gw/tp.$r"; done | median)
vx=$(for r in $(seq "$ROUNDS"); do cat "$WORK/vxlan/tp.$r"; done | median)
ratio=$(for r in $(seq "$ROUNDS"); do awk -v a="$(cat "$WORK/vxlan/tp.$r")" -v b="$(cat "$WORK/host-gw/tp.$r")" 'BEGIN {print a / b}'; done | median)
mtu=$(ip netns exec "$TAG-vxlan-p1" cat /sys/class/net/eth0/mtu)
echo
echo "pod-to-pod TCP across two nodes (iperf3, ${TP_SECONDS}s, median of $ROUNDS rounds; pod MTU over VXLAN: $mtu)"
printf '%-28s %12s\n' backend throughput
printf '%-28s %8.2fGbit/s\n' "host-gw" "$(awk -v a="$hg" 'BEGIN {print a / 1e9}')"
printf '%-28s %8.2fGbit/s\n' "vxlan" "$(awk -v a="$vx" 'BEGIN {print a / 1e9}')"
printf '%-28s %12.2f   (median of the per-round ratios)\n' "ratio vxlan / host-gw" "$ratio"
echo "target: vxlan >= 0.8 of host-gw"
