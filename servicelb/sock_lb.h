// The socket-level load balancer's kernel half, loaded and attached: the BPF
// programs of bpf/sock_lb.bpf.c on a cgroup (connect4, getpeername4) and
// their maps, which the daemon fills. Keyed by network namespace cookie:
// each node's daemon writes only its own node's entries.
//
//   auto lb = servicelb::SockLb::attach("/sys/fs/cgroup/unified/node-a");
//   (*lb)->setService({netns, vip, 80, IPPROTO_TCP}, 7, {{backendIp, 8080}});
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::servicelb {

struct Vip {
  uint64_t netns = 0;  // the network namespace's cookie (netnsCookie())
  uint32_t addr = 0;   // IPv4, host order
  uint16_t port = 0;
  uint8_t proto = 0;   // IPPROTO_TCP / IPPROTO_UDP
};

struct Backend {
  uint32_t addr = 0;  // host order
  uint16_t port = 0;
};

// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE).
base::Result<uint64_t> netnsCookie();

class SockLb {
 public:
  // Loads the programs and attaches them to the cgroup (v2) at `cgroupPath`.
  static base::Result<std::unique_ptr<SockLb>> attach(const std::string& cgroupPath);
  ~SockLb();  // detaches

  // Sets a Service's backends (none: connections are refused at once).
  // Backends first, then the count, so a connect never sees a slot unwritten;
  // slots beyond the new count are removed after.
  base::Result<void> setService(const Vip& vip, uint32_t id, const std::vector<Backend>& backends);
  base::Result<void> removeService(const Vip& vip);

  struct Impl;

 private:
  explicit SockLb(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::servicelb
