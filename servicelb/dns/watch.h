// Keeps a Zone equal to the cluster: informers on Services and EndpointSlices
// (and Pods, only for verified pod records) whose handlers recompute the
// records of the one Service a change concerns and set them in the zone —
// a lookup never waits on the API server, and a change touches only its
// Service's names.
#pragma once

#include <chrono>
#include <memory>

#include "common/base/metrics.h"
#include "common/kube/client.h"
#include "servicelb/dns/zone.h"

namespace trellis::dns {

class Watcher {
 public:
  Watcher(kube::Client& client, Zone& zone, base::Registry& metrics);
  ~Watcher();
  void start();
  bool synced() const;
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::dns
