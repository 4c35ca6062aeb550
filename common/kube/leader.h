// Leader election on a coordination.k8s.io/v1 Lease, as client-go does it,
// so that of several replicas of a controller exactly one acts at a time.
//
//   kube::LeaderElector le(client, {.ns = "kube-system", .name = "trellis-controllers",
//                                   .identity = hostname});
//   le.run([](std::stop_token leading) { ... work until leading.stop_requested() ... });
//
// A candidate takes the Lease when it is free or its holder has not renewed
// it for leaseDuration (judged by when this candidate last saw it change,
// not by clocks across machines), writing with the Lease's resourceVersion
// so that two candidates cannot both win. The leader renews every
// retryPeriod; if it cannot renew within renewDeadline it stops leading
// (the callback's stop token fires) before anyone else may take over. On
// shutdown a leader releases the Lease so the next one need not wait.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>

#include "common/kube/client.h"

namespace trellis::kube {

struct LeaderElectionOptions {
  std::string ns = "kube-system";
  std::string name;      // the Lease
  std::string identity;  // this candidate (unique: hostname + pid)
  std::chrono::milliseconds leaseDuration{15'000};
  std::chrono::milliseconds renewDeadline{10'000};
  std::chrono::milliseconds retryPeriod{2'000};
  bool releaseOnCancel = true;
};

class LeaderElector {
 public:
  LeaderElector(Client& client, LeaderElectionOptions options);
  ~LeaderElector();

  // Campaigns until stop(); each time this candidate leads, `lead` runs on
  // its own thread with a stop token that fires when leadership is lost or
  // stop() is called, and is joined before campaigning again. Blocks.
  void run(std::function<void(std::stop_token)> lead);
  void stop();

  bool isLeader() const;
  std::string leader() const;  // the holder last seen

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::kube
