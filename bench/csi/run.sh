#!/usr/bin/env bash
# Benchmark: trellis-csi over its socket, as the sidecars and kubelet call it.
#   CreateVolume of a 1 GiB volume, N one after another (p50/p99)
#   CreateSnapshot of a 1 GiB volume holding 512 MiB of random data, on a
#     reflink pool (XFS, reflink=1) and, as the yardstick, on a pool without
#     reflink (ext4: a sparse-aware copy), same run (p50/p99 and the ratio)
#   100 volumes created, staged, published, unpublished, unstaged, deleted,
#     4 in parallel: total and per-RPC p50/p99
#   the driver's RSS idle after start-up and after the load
# There is no peer in Debian to run beside it (csi-driver-host-path and
# TopoLVM are Go projects, not packaged), so this prints absolute figures
# and the reflink/copy ratio. Pools are loop-mounted files this script
# makes (8 GiB each, thin: --overprovision-ratio 20 lets 100 volumes of
# 1 GiB be promised); everything (mounts, loop devices, processes, files)
# goes on exit.
# Knobs: N (100) PAR (4) SNAP_ROUNDS (5)
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/default}
N=${N:-100}
PAR=${PAR:-4}
SNAP_ROUNDS=${SNAP_ROUNDS:-5}
die() { echo "bench/csi: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"
[[ -x $BIN/csi/trellis-csi && -x $BIN/bench/trellis-bench-csi ]] || die "build the default preset first"
WORK=$(mktemp -d -t trellis-bench-csi.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for m in $(awk -v w="$WORK" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
    for d in $(losetup -a | grep "$WORK" | cut -d: -f1); do losetup -d "$d"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pool NAME FSTYPE MKFS_ARGS...: an 8 GiB sparse file on a loop device, mounted at $WORK/NAME.
pool() {
    local name=$1 fs=$2; shift 2
    truncate -s 8G "$WORK/$name.img"
    local dev; dev=$(losetup --show -f -b 4096 "$WORK/$name.img") || die "losetup"
    "mkfs.$fs" -q "$@" "$dev" >/dev/null || die "mkfs.$fs"
    mkdir -p "$WORK/$name"
    mount "$dev" "$WORK/$name" || die "mount $name"
}
# driver NAME: trellis-csi on pool NAME; its pid in DRIVER_PID.
driver() {
    "$BIN/csi/trellis-csi" --endpoint "unix://$WORK/$1.sock" --pool-dir "$WORK/$1" --node-id bench \
        --default-fs-type ext4 --overprovision-ratio 20 --log-level warn >>"$WORK/$1.log" 2>&1 &
    DRIVER_PID=$!
    PIDS+=("$DRIVER_PID")
    for _ in $(seq 100); do [[ -S $WORK/$1.sock ]] && break; sleep 0.05; done
}
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
val() { awk -v k="$1" '$1 == k {print $2}' "$2"; }

pool reflink xfs -f -m reflink=1
pool copy ext4 -F
mkdir -p "$WORK/kubelet"
driver reflink
P1=$DRIVER_PID
sleep 0.5
RSS_IDLE=$(rss "$P1")
driver copy

echo "== CreateVolume, 1 GiB, $N one after another"
"$BIN/bench/trellis-bench-csi" --endpoint "unix://$WORK/reflink.sock" --mode create --n "$N" --size $((1 << 30)) > "$WORK/create.txt" || die "create run"
echo "  CreateVolume p50 $(val CreateVolume_p50 "$WORK/create.txt") ms, p99 $(val CreateVolume_p99 "$WORK/create.txt") ms (target p50 <= 5 ms)"

echo "== CreateSnapshot of a 1 GiB volume holding 512 MiB, $SNAP_ROUNDS rounds"
for p in reflink copy; do
    "$BIN/bench/trellis-bench-csi" --endpoint "unix://$WORK/$p.sock" --mode snapshot --n "$SNAP_ROUNDS" --size $((1 << 30)) \
        --data $((512 << 20)) --dir "$WORK/kubelet/$p" --tag "$p" > "$WORK/snap-$p.txt" || die "snapshot run ($p)"
done
R=$(val CreateSnapshot_p50 "$WORK/snap-reflink.txt"); C=$(val CreateSnapshot_p50 "$WORK/snap-copy.txt")
echo "  reflink pool (xfs): p50 $R ms, p99 $(val CreateSnapshot_p99 "$WORK/snap-reflink.txt") ms (target <= 50 ms)"
echo "  copy pool (ext4):   p50 $C ms, p99 $(val CreateSnapshot_p99 "$WORK/snap-copy.txt") ms"
awk -v r="$R" -v c="$C" 'BEGIN {printf "  ratio reflink/copy: %.3f\n", r / c}'

echo "== lifecycle: $N volumes created, staged, published, unpublished, unstaged, deleted, $PAR in parallel"
"$BIN/bench/trellis-bench-csi" --endpoint "unix://$WORK/reflink.sock" --mode lifecycle --n "$N" --parallel "$PAR" \
    --size $((1 << 30)) --dir "$WORK/kubelet/life" > "$WORK/life.txt" || die "lifecycle run"
echo "  total $(val lifecycle_total_ms "$WORK/life.txt") ms"
for rpc in CreateVolume NodeStageVolume NodePublishVolume NodeUnpublishVolume NodeUnstageVolume DeleteVolume; do
    printf "  %-20s p50 %8s ms  p99 %8s ms\n" "$rpc" "$(val "${rpc}_p50" "$WORK/life.txt")" "$(val "${rpc}_p99" "$WORK/life.txt")"
done
echo "== driver RSS"
echo "  idle after start-up: $RSS_IDLE MiB (target <= 15 MB); after the load: $(rss "$P1") MiB"
