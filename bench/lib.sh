# Shared by the bench/ scripts (source it; BIN and LOADGEN_CPU set, die defined).

# start_apiserver DIR [ARGS...]: a trellis-apiserver with its data and
# kubeconfig in DIR, pinned to the load generator's CPU (outside what is
# measured), in its own session; waits until it is ready. Sets API_PID.
start_apiserver() {
    local dir=$1
    shift
    setsid taskset -c "$LOADGEN_CPU" "$BIN/apiserver-lite/trellis-apiserver" --data-dir "$dir/data" --secure-port 0 \
        --write-kubeconfig "$dir/kubeconfig" "$@" >"$dir/apiserver.log" 2>&1 &
    API_PID=$!
    for _ in $(seq 100); do [[ -s $dir/kubeconfig ]] && return 0; sleep 0.1; done
    die "trellis-apiserver did not start: $(tail -5 "$dir/apiserver.log")"
}
