// The maps' keys and values, shared by the BPF programs and the daemon that
// fills them. Addresses and ports in network byte order, as the kernel hands
// them to the programs.
#pragma once

#include <linux/types.h>

#define TRELLIS_LB_MAX_SERVICES 65536
#define TRELLIS_LB_MAX_BACKENDS 262144

struct lb_service_key {
  __u64 netns;  // the node's network namespace cookie
  __u32 addr;   // VIP
  __u16 port;
  __u8 proto;   // IPPROTO_TCP / IPPROTO_UDP
  __u8 pad;
};

struct lb_service {
  __u32 id;     // backends are (id, slot)
  __u32 count;  // ready backends; 0 refuses connections
};

struct lb_backend_key {
  __u32 service;
  __u32 slot;
};

struct lb_backend {
  __u32 addr;
  __u32 port;  // the low 16 bits, as ctx->user_port holds it
};

struct lb_origin {
  __u32 addr;
  __u32 port;
};

struct lb_reverse_key {
  __u64 cookie;  // the client socket
  __u32 addr;    // the backend a datagram went to
  __u32 port;
};
