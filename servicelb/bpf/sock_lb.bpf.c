// Socket-level load balancing for Service VIPs (the east-west path): at
// connect() (TCP, connected UDP) a socket whose destination is a Service
// VIP:port is connected straight to a backend — no per-packet NAT — and
// getpeername() gives the VIP back; unconnected UDP is rewritten per
// datagram at sendmsg and recvmsg. Attached to a node's cgroup; the maps are
// keyed by the network namespace's cookie, so several nodes' daemons on one
// kernel (local mode) each act only for their own node's sockets.
#include <linux/bpf.h>
#include <linux/in.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "servicelb/bpf/maps.h"

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, TRELLIS_LB_MAX_SERVICES);
  __type(key, struct lb_service_key);
  __type(value, struct lb_service);
} lb_services SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, TRELLIS_LB_MAX_BACKENDS);
  __type(key, struct lb_backend_key);
  __type(value, struct lb_backend);
} lb_backends SEC(".maps");

// socket cookie -> the VIP it asked for (for getpeername).
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct lb_origin);
} lb_origins SEC(".maps");

static __always_inline int connect4(struct bpf_sock_addr* ctx, __u8 proto) {
  struct lb_service_key key = {};
  key.netns = bpf_get_netns_cookie(ctx);
  key.addr = ctx->user_ip4;
  key.port = (__u16)ctx->user_port;
  key.proto = proto;
  struct lb_service* svc = bpf_map_lookup_elem(&lb_services, &key);
  if (!svc) return 1;                // not a Service: as it was
  if (svc->count == 0) return 0;     // no ready endpoint: refused at once (EPERM), no black hole
  struct lb_backend_key bk = {.service = svc->id, .slot = bpf_get_prandom_u32() % svc->count};
  struct lb_backend* be = bpf_map_lookup_elem(&lb_backends, &bk);
  if (!be) return 0;
  struct lb_origin origin = {.addr = ctx->user_ip4, .port = (__u16)ctx->user_port};
  __u64 cookie = bpf_get_socket_cookie(ctx);
  bpf_map_update_elem(&lb_origins, &cookie, &origin, BPF_ANY);
  ctx->user_ip4 = be->addr;
  ctx->user_port = be->port;
  return 1;
}

SEC("cgroup/connect4")
int trellis_connect4(struct bpf_sock_addr* ctx) {
  if (ctx->protocol == IPPROTO_TCP) return connect4(ctx, IPPROTO_TCP);
  if (ctx->protocol == IPPROTO_UDP) return connect4(ctx, IPPROTO_UDP);
  return 1;
}

SEC("cgroup/getpeername4")
int trellis_getpeername4(struct bpf_sock_addr* ctx) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct lb_origin* origin = bpf_map_lookup_elem(&lb_origins, &cookie);
  if (origin) {
    ctx->user_ip4 = origin->addr;
    ctx->user_port = origin->port;
  }
  return 1;
}

// Unconnected UDP (sendto/recvfrom, as DNS clients use): each datagram to a
// VIP goes to the backend this socket was given (by its cookie, so a socket
// keeps one backend), and replies come back from the VIP.
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct lb_reverse_key);
  __type(value, struct lb_origin);
} lb_udp_reverse SEC(".maps");

SEC("cgroup/sendmsg4")
int trellis_sendmsg4(struct bpf_sock_addr* ctx) {
  if (ctx->protocol != IPPROTO_UDP) return 1;
  struct lb_service_key key = {};
  key.netns = bpf_get_netns_cookie(ctx);
  key.addr = ctx->user_ip4;
  key.port = (__u16)ctx->user_port;
  key.proto = IPPROTO_UDP;
  struct lb_service* svc = bpf_map_lookup_elem(&lb_services, &key);
  if (!svc) return 1;
  if (svc->count == 0) return 0;
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct lb_backend_key bk = {.service = svc->id, .slot = (__u32)(cookie % svc->count)};
  struct lb_backend* be = bpf_map_lookup_elem(&lb_backends, &bk);
  if (!be) return 0;
  struct lb_reverse_key rk = {.cookie = cookie, .addr = be->addr, .port = be->port};
  struct lb_origin origin = {.addr = ctx->user_ip4, .port = (__u16)ctx->user_port};
  bpf_map_update_elem(&lb_udp_reverse, &rk, &origin, BPF_ANY);
  ctx->user_ip4 = be->addr;
  ctx->user_port = be->port;
  return 1;
}

SEC("cgroup/recvmsg4")
int trellis_recvmsg4(struct bpf_sock_addr* ctx) {
  struct lb_reverse_key rk = {.cookie = bpf_get_socket_cookie(ctx), .addr = ctx->user_ip4, .port = ctx->user_port};
  struct lb_origin* origin = bpf_map_lookup_elem(&lb_udp_reverse, &rk);
  if (origin) {
    ctx->user_ip4 = origin->addr;
    ctx->user_port = origin->port;
  }
  return 1;
}

char LICENSE[] SEC("license") = "GPL";
