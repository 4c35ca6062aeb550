#!/usr/bin/env bash
# Installs every Debian package Trellis needs to build, test and benchmark.
# Idempotent: safe to run again; runs `apt-get update` itself.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

PACKAGES=(
    # toolchain
    build-essential cmake ninja-build ccache pkg-config git
    clang llvm libclang-rt-14-dev
    # libraries
    libboost1.81-dev libboost-json1.81-dev
    libssl-dev libnghttp2-dev
    libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
    libnl-3-dev libnl-route-3-dev libnftables-dev libbpf-dev bpftool
    libsqlite3-dev libcli11-dev libfmt-dev libyaml-dev
    libgtest-dev libgmock-dev libbenchmark-dev
    # real clients and peers used by tests and benchmarks
    curl openssl nghttp2-client nginx apache2-utils procps util-linux iproute2 etcd-server etcd-client
    containernetworking-plugins nftables iptables iperf3 iputils-ping jq
    # the ingress benchmark's peers (../shared/anchors/ingress) and WebSocket clients (HTTP/1.1, HTTP/2)
    haproxy nghttp2-proxy caddy python3-websockets python3-h2
    # DNS: dig for the tests, the DNS benchmark's load generator and peers (../shared/anchors/dns)
    bind9-dnsutils dnsperf unbound dnsmasq-base python3-yaml
    # loaded with dlopen by common/linux (nftables) at first use
    libnftables1
    # storage tools the CSI driver execs (mkfs, fs grow) and tests use
    e2fsprogs xfsprogs btrfs-progs
    # time zones a CronJob's spec.timeZone names (IANA database)
    tzdata
)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "setup: all ${#PACKAGES[@]} packages present"
fi
