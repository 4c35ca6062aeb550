// A kubelet stand-in for tests and benchmarks of the controllers, until
// local mode's node agent runs pods: it watches pods and writes through
// pods/status what a kubelet would once a pod is bound to a node — Running
// and Ready, or by the first container's image: "never-ready" stays Running
// but unready; "exit-N" ends Succeeded (N = 0) or Failed with exit code N in
// its containerStatuses. Each pod is handled once.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/kube/client.h"
#include "common/kube/informer.h"

namespace trellis::testing {

class KubeletStandIn {
 public:
  // `workers` threads write statuses in parallel.
  explicit KubeletStandIn(kube::Client& client, int workers = 1);
  ~KubeletStandIn();
  KubeletStandIn(const KubeletStandIn&) = delete;
  KubeletStandIn& operator=(const KubeletStandIn&) = delete;

  bool waitForSync(std::chrono::milliseconds timeout) const { return pods_.waitForSync(timeout); }

 private:
  void offer(const kube::ObjectPtr& pod);
  void work();

  kube::Client& client_;
  kube::Informer pods_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<kube::ObjectPtr> queue_;
  std::set<std::string> started_;
  bool done_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace trellis::testing
