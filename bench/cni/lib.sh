# Shared by bench/cni/*.sh (sourced).

# The median of the numbers on stdin.
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }

# Received bits per second in an iperf3 -J report.
bps() { awk -F'[:,]' '/"sum_received"/ {s=1} s && /"bits_per_second"/ {gsub(/ /, "", $2); print $2; exit}' "$1"; }

# One iperf3 TCP test: server-netns client-netns server-ip seconds report.json
# (the first second, TCP's ramp, omitted). The client starts once the server
# listens: a refused first try would count as the one-off server's test.
iperf_pair() {
    local sns=$1 cns=$2 ip=$3 secs=$4 out=$5 srv
    ip netns exec "$sns" iperf3 -s -1 -p 5399 > "$out.server" 2>&1 &
    srv=$!
    for _ in $(seq 100); do
        ip netns exec "$sns" ss -Hltn 'sport = :5399' | grep -q 5399 && break
        sleep 0.05
    done
    if ! ip netns exec "$cns" timeout $((secs + 20)) iperf3 -c "$ip" -p 5399 -t "$secs" -O 1 -J > "$out" 2> /dev/null; then
        kill "$srv" 2> /dev/null
        wait "$srv" 2> /dev/null
        echo "iperf3 to $ip failed: $(grep '"error"' "$out") $(cat "$out.server")" >&2
        return 1
    fi
    wait "$srv"
}

# Runs the calling script inside a "node" network namespace of its own,
# <prefix><TAG>-node, made here with lo up (then `node_setup`, if the script
# defines one), and removes it, every namespace <prefix><TAG>-* and WORK on
# exit. Returns only inside the namespace: the outer invocation exits with
# the inner one's status. Sets WORK, TAG and NODE.
in_node_netns() {
    local prefix=$1
    WORK=${WORK:-$(mktemp -d -t trellis-bench-cni.XXXXXX)}
    TAG=${TAG:-$$}
    NODE=$prefix$TAG-node
    trap 'exit 130' INT TERM
    [[ -z ${TRELLIS_BENCH_INSIDE:-} ]] || return 0  # the outer invocation cleans up
    # shellcheck disable=SC2064  # the names are fixed now
    trap "for ns in \$(ip netns list | awk '{print \$1}' | grep '^$prefix$TAG-'); do ip netns del \"\$ns\"; done; rm -rf '$WORK'" EXIT
    ip netns add "$NODE" || die "ip netns add"
    ip netns exec "$NODE" ip link set lo up
    if declare -F node_setup > /dev/null; then node_setup; fi
    # Pod namespaces are made from inside too (the host's view of /var/run/netns).
    TRELLIS_BENCH_INSIDE=1 TAG=$TAG WORK=$WORK ip netns exec "$NODE" "$0"
    exit $?
}
