#!/usr/bin/env bash
# Benchmark: trellis-cni against the reference plugins (Debian's
# containernetworking-plugins: bridge + host-local) in one run, each exec'd
# directly as a runtime execs the first plugin of a conflist (environment +
# config on stdin), inside a "node" network namespace this script creates.
#   ADD and DEL wall time per pod, N pods one after another (p50/p99)
#   N ADDs with PAR in parallel (total time)
#   pod-to-pod TCP throughput over each plugin's bridge (iperf3)
# The timing loop itself runs inside the node namespace, so a sample is one
# plugin exec and nothing else. Everything (namespaces, and with them
# bridges, veths and rules; IPAM dirs) is removed on exit. Ratios are
# trellis / reference (lower is better).
# Knobs: N (100) PAR (8) ROUNDS (3, interleaved; medians) TP_ROUNDS (ROUNDS;
# throughput rounds, the order of the two flipped each round) TP_SECONDS (5)
# STEPS ("latency throughput", or either)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${N:-100}
PAR=${PAR:-8}
ROUNDS=${ROUNDS:-3}
TP_ROUNDS=${TP_ROUNDS:-$ROUNDS}
TP_SECONDS=${TP_SECONDS:-5}
STEPS=${STEPS:-latency throughput}
TRELLIS=${TRELLIS:-$ROOT/build/default/cni/trellis-cni}
REF=${REF:-/usr/lib/cni}
# shellcheck source=lib.sh
source "$HERE/lib.sh"
die() { echo "bench/cni: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"
[[ -x $TRELLIS ]] || die "build the default preset first"
[[ -x $REF/bridge && -x $REF/host-local ]] || die "containernetworking-plugins is not installed (scripts/setup.sh)"
in_node_netns tb  # the timing runs in the node namespace

conf() {  # variant -> plugin config on stdout
    case $1 in
        trellis) printf '{"cniVersion":"1.0.0","name":"bench-t","type":"trellis-cni","bridge":"tbt0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.200.0.0/16"}]],"dataDir":"%s/ipam"}}' "$WORK" ;;
        reference) printf '{"cniVersion":"1.0.0","name":"bench-r","type":"bridge","bridge":"tbr0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.201.0.0/16"}]],"dataDir":"%s/ipam"}}' "$WORK" ;;
    esac
}
bin() { [[ $1 == trellis ]] && echo "$TRELLIS" || echo "$REF/bridge"; }
for v in trellis reference; do conf "$v" > "$WORK/conf.$v"; done
# One call: variant command id -> wall ms on stdout. Between the two clock
# reads there is one fork and the plugin's exec, as a runtime does it (no
# pipe, no `env`, no subshell).
call() {
    local v=$1 cmd=$2 id=$3 t0 t1 b
    b=$(bin "$v")
    t0=$EPOCHREALTIME
    CNI_COMMAND="$cmd" CNI_CONTAINERID="$v-$id" CNI_NETNS="/var/run/netns/tb$TAG-$v-$id" CNI_IFNAME=eth0 CNI_PATH="$REF" \
        "$b" < "$WORK/conf.$v" > "$WORK/out.$v.$id" 2>&1 || { cat "$WORK/out.$v.$id" >&2; return 1; }
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", (b - a) * 1000}'
}
pct() { sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p+0.9999); if (i<1) i=1; print a[i]}'; }

if [[ " $STEPS " == *" latency "* ]]; then
for r in $(seq "$ROUNDS"); do
    for v in reference trellis; do
        # Pod namespaces as a runtime hands them over: lo already up (containerd
        # and CRI-O run the loopback plugin before the network's).
        for i in $(seq "$N"); do ip netns add "tb$TAG-$v-$i" && ip -n "tb$TAG-$v-$i" link set lo up; done
        : > "$WORK/add.$v.$r"; : > "$WORK/del.$v.$r"
        for i in $(seq "$N"); do call "$v" ADD "$i" >> "$WORK/add.$v.$r" || die "$v ADD failed"; done
        for i in $(seq "$N"); do call "$v" DEL "$i" >> "$WORK/del.$v.$r" || die "$v DEL failed"; done
        t0=$EPOCHREALTIME
        export -f call conf bin; export NODE TAG WORK TRELLIS REF
        seq "$N" | xargs -P "$PAR" -I{} bash -c "call $v ADD {} > /dev/null" || die "$v parallel ADD failed"
        t1=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", (b - a) * 1000}' > "$WORK/par.$v.$r"
        seq "$N" | xargs -P "$PAR" -I{} bash -c "call $v DEL {} > /dev/null" || die "$v parallel DEL failed"
        for i in $(seq "$N"); do ip netns del "tb$TAG-$v-$i"; done
    done
    echo "round $r/$ROUNDS done" >&2
done
fi

# Pod-to-pod TCP throughput over each plugin's bridge: two pods per plugin,
# iperf3 for TP_SECONDS (the first second, TCP's ramp, omitted), ROUNDS times
# interleaved.
if [[ " $STEPS " == *" throughput "* ]]; then
for v in reference trellis; do
    for p in tpa tpb; do ip netns add "tb$TAG-$v-$p"; call "$v" ADD "$p" > /dev/null || die "$v ADD $p"; done
done
for r in $(seq "$TP_ROUNDS"); do
    order="reference trellis"; (( r % 2 == 0 )) && order="trellis reference"
    for v in $order; do
        ipb=$(grep -o '"address": *"[0-9.]*' "$WORK/out.$v.tpb" | head -1 | grep -o '[0-9.]*$')
        iperf_pair "tb$TAG-$v-tpb" "tb$TAG-$v-tpa" "$ipb" "$TP_SECONDS" "$WORK/tp.$v.$r.json" || die "$v iperf3 round $r"
        bps "$WORK/tp.$v.$r.json" > "$WORK/tp.$v.$r"
        [[ -s $WORK/tp.$v.$r ]] || die "$v iperf3 run $r"
    done
done
for v in reference trellis; do for p in tpa tpb; do call "$v" DEL "$p" > /dev/null; ip netns del "tb$TAG-$v-$p"; done; done
fi

echo
echo "trellis-cni vs reference bridge+host-local ($(dpkg-query -W -f '${Version}' containernetworking-plugins)), N=$N, PAR=$PAR, median of $ROUNDS rounds"
printf '%-28s %12s %12s %8s\n' metric reference trellis ratio
row() {
    local name=$1 file=$2 p=$3 rv tv
    rv=$(for r in $(seq "$ROUNDS"); do pct "$p" < "$WORK/$file.reference.$r"; done | median)
    tv=$(for r in $(seq "$ROUNDS"); do pct "$p" < "$WORK/$file.trellis.$r"; done | median)
    printf '%-28s %10.2fms %10.2fms %8.2f\n' "$name" "$rv" "$tv" "$(awk -v a="$tv" -v b="$rv" 'BEGIN {print a / b}')"
}
if [[ " $STEPS " == *" latency "* ]]; then
row "ADD p50" add 0.5
row "ADD p99" add 0.99
row "DEL p50" del 0.5
row "DEL p99" del 0.99
rv=$(cat "$WORK"/par.reference.* | median); tv=$(cat "$WORK"/par.trellis.* | median)
printf '%-28s %10.1fms %10.1fms %8.2f\n' "$N ADDs, $PAR in parallel" "$rv" "$tv" "$(awk -v a="$tv" -v b="$rv" 'BEGIN {print a / b}')"
fi
if [[ " $STEPS " == *" throughput "* ]]; then
rv=$(for r in $(seq "$TP_ROUNDS"); do cat "$WORK/tp.reference.$r"; done | median)
tv=$(for r in $(seq "$TP_ROUNDS"); do cat "$WORK/tp.trellis.$r"; done | median)
# The ratio: the median of the per-round ratios (each round's pair ran back to back).
ratio=$(for r in $(seq "$TP_ROUNDS"); do awk -v a="$(cat "$WORK/tp.trellis.$r")" -v b="$(cat "$WORK/tp.reference.$r")" 'BEGIN {print a / b}'; done | median)
printf '%-28s %8.2fGbit/s %8.2fGbit/s %8.2f\n' "pod-to-pod TCP (iperf3)" "$(awk -v a="$rv" 'BEGIN {print a / 1e9}')" \
    "$(awk -v a="$tv" 'BEGIN {print a / 1e9}')" "$ratio"
echo "  per round (trellis/reference): $(for r in $(seq "$TP_ROUNDS"); do awk -v a="$(cat "$WORK/tp.trellis.$r")" -v b="$(cat "$WORK/tp.reference.$r")" 'BEGIN {printf "%.2f ", a / b}'; done)"
fi
echo "targets: ADD p50 and DEL p50 <= 0.25 of the reference; parallel ADDs faster (ratio < 1); throughput >= 0.95 of the reference"
