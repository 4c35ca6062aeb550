// podgc: as kube-controller-manager's pod garbage collector — pods bound to
// nodes that no longer exist are deleted (after a second look at the API,
// so a node the cache has not seen yet is not mistaken for a gone one),
// unscheduled pods being deleted are finished off, and terminated pods
// beyond --terminated-pod-gc-threshold are deleted oldest first.
#include <algorithm>
#include <condition_variable>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kNodes;
using kube::resources::kPods;

const base::Logger& log() {
  static base::Logger l("podgc");
  return l;
}

class PodGc : public Runnable {
 public:
  explicit PodGc(Context& ctx) : ctx_(ctx), pods_(ctx.informers.get(kPods)), nodes_(ctx.informers.get(kNodes)) {}

  void run(std::stop_token stop) override {
    std::mutex mu;
    std::condition_variable_any cv;
    while (!stop.stop_requested()) {
      sweep();
      std::unique_lock l(mu);
      cv.wait_for(l, stop, std::chrono::seconds(interval_), [] { return false; });
    }
  }

 private:
  void sweep() {
    std::vector<kube::ObjectPtr> terminated;
    for (const kube::ObjectPtr& p : pods_->list()) {
      std::string_view node = kube::str(*p, {"spec", "nodeName"});
      if (podTerminal(*p) && !kube::beingDeleted(*p)) terminated.push_back(p);
      if (!node.empty() && !nodes_->get(std::string(node))) {
        // Gone for the cache: ask the API before deleting.
        auto n = ctx_.client.get(kNodes, "", node);
        if (!n && n.error().code() == base::ErrorCode::kNotFound) remove(*p, "the node it is bound to is gone");
      } else if (node.empty() && kube::beingDeleted(*p)) {
        remove(*p, "unscheduled and being deleted");
      }
    }
    int64_t threshold = ctx_.options.terminatedPodGcThreshold;
    if (threshold <= 0 || static_cast<int64_t>(terminated.size()) <= threshold) return;
    std::sort(terminated.begin(), terminated.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
      return kube::str(*a, {"metadata", "creationTimestamp"}) < kube::str(*b, {"metadata", "creationTimestamp"});
    });
    for (size_t i = 0; i < terminated.size() - static_cast<size_t>(threshold); ++i) {
      remove(*terminated[i], "terminated pods over the threshold");
    }
  }

  void remove(const json::object& pod, std::string_view why) {
    auto st = ctx_.client.remove(kPods, kube::objectNamespace(pod), kube::objectName(pod),
                                 kube::DeleteOptions{.propagationPolicy = {}, .uid = std::string(kube::uid(pod)), .resourceVersion = {}});
    if (!st && st.error().code() != base::ErrorCode::kNotFound && st.error().code() != base::ErrorCode::kConflict) {
      log().warn("delete failed", {{"pod", kube::objectKey(pod)}, {"error", st.error().message()}});
      return;
    }
    log().info("deleted pod", {{"pod", kube::objectKey(pod)}, {"why", why}});
  }

  Context& ctx_;
  std::shared_ptr<kube::Informer> pods_, nodes_;
  int interval_ = 2;  // seconds between sweeps (kube: 20)
};

}  // namespace

std::unique_ptr<Runnable> makePodGc(Context& ctx) { return std::make_unique<PodGc>(ctx); }

}  // namespace trellis::controllers
