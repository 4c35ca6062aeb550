#include "common/testing/kubelet_stand_in.h"

#include <boost/json/serialize.hpp>

#include "common/kube/object.h"

namespace trellis::testing {

namespace json = boost::json;

KubeletStandIn::KubeletStandIn(kube::Client& client, int workers) : client_(client), pods_(client, kube::resources::kPods) {
  pods_.addHandler({.onAdd = [this](const kube::ObjectPtr& p) { offer(p); },
                    .onUpdate = [this](const kube::ObjectPtr&, const kube::ObjectPtr& p) { offer(p); },
                    .onDelete = {}});
  pods_.start();
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { work(); });
}

KubeletStandIn::~KubeletStandIn() {
  {
    std::lock_guard g(mu_);
    done_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  pods_.stop();
}

void KubeletStandIn::offer(const kube::ObjectPtr& pod) {
  if (kube::str(*pod, {"spec", "nodeName"}).empty() || kube::beingDeleted(*pod)) return;
  std::string_view phase = kube::str(*pod, {"status", "phase"});
  if (!phase.empty() && phase != "Pending") return;
  std::lock_guard g(mu_);
  if (!started_.insert(std::string(kube::uid(*pod))).second) return;
  queue_.push_back(pod);
  cv_.notify_one();
}

void KubeletStandIn::work() {
  for (;;) {
    kube::ObjectPtr pod;
    {
      std::unique_lock l(mu_);
      cv_.wait(l, [&] { return done_ || !queue_.empty(); });
      if (done_) return;
      pod = queue_.front();
      queue_.pop_front();
    }
    std::string image, name = "c";
    if (const json::array* cs = kube::array(*pod, {"spec", "containers"}); cs && !cs->empty() && (*cs)[0].is_object()) {
      image = std::string(kube::str((*cs)[0].get_object(), {"image"}));
      name = std::string(kube::str((*cs)[0].get_object(), {"name"}));
    }
    std::string now = kube::rfc3339Now();
    bool exits = image.starts_with("exit-");
    int code = exits ? std::atoi(image.c_str() + 5) : 0;
    bool ready = !exits && image != "never-ready";
    json::object state = exits ? json::object{{"terminated", json::object{{"exitCode", code},
                                                                          {"reason", code ? "Error" : "Completed"},
                                                                          {"finishedAt", now}}}}
                               : json::object{{"running", json::object{{"startedAt", now}}}};
    json::object status{
        {"phase", !exits ? "Running" : code == 0 ? "Succeeded" : "Failed"},
        {"startTime", now},
        {"conditions", json::array{json::object{{"type", "Ready"}, {"status", ready ? "True" : "False"}, {"lastTransitionTime", now}}}},
        {"containerStatuses", json::array{json::object{{"name", name}, {"image", image}, {"ready", ready},
                                                       {"restartCount", 0}, {"state", std::move(state)}}}}};
    if (!exits) status["podIP"] = "10.244.0.1";
    (void)client_.patch(kube::resources::kPods, kube::objectNamespace(*pod), kube::objectName(*pod), kube::PatchType::kMerge,
                        json::serialize(json::object{{"status", std::move(status)}}), "status");
  }
}

}  // namespace trellis::testing
