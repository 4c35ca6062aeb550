// trellis-servicelb's control loop: informers on Services and EndpointSlices;
// a change recomputes that one Service's entries (translate.h) and writes
// only the entries that changed into the socket load balancer's maps, keyed
// by this node's network namespace.
#pragma once

#include <memory>

#include "common/base/metrics.h"
#include "common/kube/client.h"
#include "servicelb/sock_lb.h"

namespace trellis::servicelb {

class Daemon {
 public:
  Daemon(kube::Client& client, SockLb& lb, uint64_t netns, base::Registry& metrics);
  ~Daemon();
  void start();
  bool synced() const;
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::servicelb
