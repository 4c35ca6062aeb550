#include "common/kube/controller.h"

#include <chrono>
#include <thread>

#include "common/base/log.h"

namespace trellis::kube {

Controller::Controller(ControllerOptions options, Reconcile reconcile)
    : options_(std::move(options)), reconcile_(std::move(reconcile)) {
  if (base::Registry* m = options_.metrics) {
    base::Labels l{{"controller", options_.name}};
    depth_ = &m->gauge("trellis_controller_queue_depth", "Keys waiting in the controller's queue", l);
    latency_ = &m->histogram("trellis_controller_reconcile_seconds", "Time per reconcile", base::latencyBuckets(), l);
    errors_ = &m->counter("trellis_controller_reconcile_errors_total", "Reconciles that failed (and were requeued)", l);
    total_ = &m->counter("trellis_controller_reconciles_total", "Reconciles run", l);
  }
}

void Controller::enqueue(const std::string& key) {
  queue_.add(key);
  if (depth_) depth_->set(static_cast<double>(queue_.length()));
}

void Controller::watch(Informer& informer, KeysFor keys) {
  auto push = [this, keys](const ObjectPtr& o) {
    if (!keys) return enqueue(objectKey(*o));
    for (const std::string& k : keys(*o)) enqueue(k);
  };
  informer.addHandler({.onAdd = push,
                       .onUpdate = [push](const ObjectPtr&, const ObjectPtr& n) { push(n); },
                       .onDelete = push});
}

void Controller::work() {
  static const base::Logger log("controller");
  while (auto key = queue_.get()) {
    if (depth_) depth_->set(static_cast<double>(queue_.length()));
    auto start = std::chrono::steady_clock::now();
    base::Status st = reconcile_(*key);
    if (latency_) latency_->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (total_) total_->inc();
    if (st) {
      queue_.forget(*key);
    } else {
      if (errors_) errors_->inc();
      log.warn("reconcile failed", {{"controller", options_.name}, {"key", *key}, {"error", st.error().message()}});
      queue_.addRateLimited(*key);
    }
    queue_.done(*key);
  }
}

void Controller::run(std::stop_token stop) {
  std::vector<std::jthread> workers;
  for (int i = 0; i < options_.workers; ++i) workers.emplace_back([this] { work(); });
  std::stop_callback onStop(stop, [this] { queue_.shutDownWithDrain(); });
  for (auto& w : workers) w.join();
}

}  // namespace trellis::kube
