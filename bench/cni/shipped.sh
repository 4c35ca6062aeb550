#!/usr/bin/env bash
# Benchmark: the configuration users run — masquerade on, hostPorts on a
# share of the pods — trellis-cni (cni/examples/trellis.conflist's keys: one
# plugin) against the reference conflist [bridge with ipMasq, portmap]
# (Debian's containernetworking-plugins), in one run, with 10 and with 250
# pods already on the node. Each plugin is exec'd as a runtime execs a
# conflist: environment + config on stdin; for the reference, bridge then
# portmap with bridge's result as prevResult (portmap runs for every pod, as
# a runtime runs every plugin of the list), DEL in reverse. A sample is the
# wall time of the whole list for one pod.
#   ADD and DEL per pod, one after another (p50/p99), SAMPLES pods
#   ADD per call with PAR in parallel (p50), SAMPLES pods
# A quarter of the pods map a hostPort (TCP). Subnets are /16 (the example's
# /24 holds 254 pods). Everything is made inside network namespaces this
# script creates and removed on exit. Ratios are trellis / reference (lower
# is better); "growth" is the figure at 250 pods over the one at 10.
# Knobs: SAMPLES (40) PAR (4) ROUNDS (3; medians) SIZES ("10 250")
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SAMPLES=${SAMPLES:-40}
PAR=${PAR:-4}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-10 250}
TRELLIS=${TRELLIS:-$ROOT/build/default/cni/trellis-cni}
REF=${REF:-/usr/lib/cni}
# shellcheck source=lib.sh
source "$HERE/lib.sh"
die() { echo "bench/cni/shipped: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"
[[ -x $TRELLIS ]] || die "build the default preset first"
[[ -x $REF/bridge && -x $REF/portmap && -x $REF/host-local ]] || die "containernetworking-plugins is not installed (scripts/setup.sh)"
# The node's uplink and default route: what masquerade rules face.
node_setup() {
    ip netns exec "$NODE" ip link add up0 type veth peer name up0p
    ip netns exec "$NODE" ip link set up0p up
    ip netns exec "$NODE" ip addr add 192.168.77.1/24 dev up0
    ip netns exec "$NODE" ip link set up0 up
    ip netns exec "$NODE" ip route add default via 192.168.77.254
}
in_node_netns ts

hostport() { (( $1 % 4 == 0 )) && echo $((20000 + $1)); }  # a quarter of the pods
mappings() { printf '"runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},' "$1"; }
# Configs per pod, written before the clock starts (a runtime has them in memory).
prepare() {  # id
    local hp t r
    hp=$(hostport "$1")
    t='{"cniVersion":"1.0.0","name":"bench-t","type":"trellis-cni","bridge":"tst0","isGateway":true,"ipMasq":true,"clusterCIDR":"10.210.0.0/15","hairpinMode":true,"nftTable":"tsb'$TAG'","capabilities":{"portMappings":true},'
    [[ -n $hp ]] && t+=$(mappings "$hp")
    printf '%s"ipam":{"type":"host-local","ranges":[[{"subnet":"10.210.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"%s/ipam"}}' "$t" "$WORK" > "$WORK/conf.trellis.$1"
    printf '{"cniVersion":"1.0.0","name":"bench-r","type":"bridge","bridge":"tsr0","isGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.211.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"%s/ipam"}}' "$WORK" > "$WORK/conf.reference.$1"
    r='{"cniVersion":"1.0.0","name":"bench-r","type":"portmap","capabilities":{"portMappings":true},"snat":true,'
    [[ -n $hp ]] && r+=$(mappings "$hp")
    printf '%s' "$r" > "$WORK/pmhead.$1"
}
# One pod's list: variant command id -> wall ms on stdout.
call() {
    local v=$1 cmd=$2 id=$3 t0 t1 res head ns
    ns=/var/run/netns/ts$TAG-$v-$id
    if [[ $v == trellis ]]; then
        t0=$EPOCHREALTIME
        CNI_COMMAND=$cmd CNI_CONTAINERID=t-$id CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=$REF \
            "$TRELLIS" < "$WORK/conf.trellis.$id" > "$WORK/out.t.$id" 2>&1 || { cat "$WORK/out.t.$id" >&2; return 1; }
        t1=$EPOCHREALTIME
    else
        read -r -d '' head < "$WORK/pmhead.$id"
        t0=$EPOCHREALTIME
        if [[ $cmd == ADD ]]; then
            CNI_COMMAND=ADD CNI_CONTAINERID=r-$id CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=$REF \
                "$REF/bridge" < "$WORK/conf.reference.$id" > "$WORK/out.r.$id" 2>&1 || { cat "$WORK/out.r.$id" >&2; return 1; }
            read -r -d '' res < "$WORK/out.r.$id"
            printf '%s"prevResult":%s}' "$head" "$res" > "$WORK/pm.$id"
            CNI_COMMAND=ADD CNI_CONTAINERID=r-$id CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=$REF \
                "$REF/portmap" < "$WORK/pm.$id" > "$WORK/pmout.$id" 2>&1 || { cat "$WORK/pmout.$id" >&2; return 1; }
        else
            CNI_COMMAND=DEL CNI_CONTAINERID=r-$id CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=$REF \
                "$REF/portmap" < "$WORK/pm.$id" > "$WORK/pmout.$id" 2>&1 || { cat "$WORK/pmout.$id" >&2; return 1; }
            CNI_COMMAND=DEL CNI_CONTAINERID=r-$id CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=$REF \
                "$REF/bridge" < "$WORK/conf.reference.$id" > "$WORK/out.r.$id" 2>&1 || { cat "$WORK/out.r.$id" >&2; return 1; }
        fi
        t1=$EPOCHREALTIME
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", (b - a) * 1000}'
}
pct() { sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p+0.9999); if (i<1) i=1; print a[i]}'; }
export -f call hostport mappings; export TAG WORK TRELLIS REF

max=0; for b in $SIZES; do (( b > max )) && max=$b; done
for i in $(seq $((max + 2 * SAMPLES))); do prepare "$i"; done
for r in $(seq "$ROUNDS"); do
    order="reference trellis"; (( r % 2 == 0 )) && order="trellis reference"
    for v in $order; do
        for b in $SIZES; do
            # Background pods 1..b, then samples b+1..b+SAMPLES (sequential),
            # b+SAMPLES+1..b+2*SAMPLES (parallel).
            last=$((b + 2 * SAMPLES))
            for i in $(seq "$last"); do ip netns add "ts$TAG-$v-$i" && ip -n "ts$TAG-$v-$i" link set lo up; done
            for i in $(seq "$b"); do call "$v" ADD "$i" > /dev/null || die "$v background ADD $i"; done
            : > "$WORK/add.$v.$b.$r"; : > "$WORK/del.$v.$b.$r"
            for i in $(seq $((b + 1)) $((b + SAMPLES))); do call "$v" ADD "$i" >> "$WORK/add.$v.$b.$r" || die "$v ADD $i"; done
            for i in $(seq $((b + 1)) $((b + SAMPLES))); do call "$v" DEL "$i" >> "$WORK/del.$v.$b.$r" || die "$v DEL $i"; done
            seq $((b + SAMPLES + 1)) "$last" | xargs -P "$PAR" -I{} bash -c "call $v ADD {}" > "$WORK/par.$v.$b.$r" \
                || die "$v parallel ADD"
            for i in $(seq $((b + SAMPLES + 1)) "$last") $(seq "$b"); do call "$v" DEL "$i" > /dev/null || die "$v DEL $i"; done
            for i in $(seq "$last"); do ip netns del "ts$TAG-$v-$i"; done
        done
    done
    echo "round $r/$ROUNDS done" >&2
done

med() { for r in $(seq "$ROUNDS"); do pct "$2" < "$WORK/$1.$r"; done | median; }
echo
echo "trellis-cni (masquerade, hostPorts) vs reference [bridge ipMasq, portmap] ($(dpkg-query -W -f '${Version}' containernetworking-plugins)), SAMPLES=$SAMPLES, PAR=$PAR, median of $ROUNDS rounds"
printf '%-34s %11s %11s %7s\n' metric reference trellis ratio
for b in $SIZES; do
    for m in "add:ADD p50, sequential:0.5" "add:ADD p99, sequential:0.99" "par:ADD p50 per call, $PAR in parallel:0.5" \
             "del:DEL p50, sequential:0.5" "del:DEL p99, sequential:0.99"; do
        IFS=: read -r file name p <<< "$m"
        rv=$(med "$file.reference.$b" "$p"); tv=$(med "$file.trellis.$b" "$p")
        printf '%-34s %9.2fms %9.2fms %7.2f\n' "$name, $b pods" "$rv" "$tv" "$(awk -v a="$tv" -v b="$rv" 'BEGIN {print a / b}')"
    done
done
set -- $SIZES
if (( $# >= 2 )); then
    lo=$1; hi=${!#}
    for m in "add:ADD p50, sequential:0.5" "par:ADD p50 per call, $PAR in parallel:0.5" "del:DEL p50, sequential:0.5"; do
        IFS=: read -r file name p <<< "$m"
        printf 'growth %s-%s pods, %-22s reference %.2f  trellis %.2f\n' "$lo" "$hi" "$name" \
            "$(awk -v a="$(med "$file.reference.$hi" "$p")" -v b="$(med "$file.reference.$lo" "$p")" 'BEGIN {print a / b}')" \
            "$(awk -v a="$(med "$file.trellis.$hi" "$p")" -v b="$(med "$file.trellis.$lo" "$p")" 'BEGIN {print a / b}')"
    done
fi
echo "targets: ADD p50 (sequential and in parallel) and DEL p50 <= 0.25 of the reference; trellis's growth 10 -> 250 pods <= 1.20"
