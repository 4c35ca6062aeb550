// The controller skeleton every Trellis controller, the ingress and the
// servicelb reuse: informers feed keys into a WorkQueue; workers call the
// reconcile function for each key; a failure requeues the key with backoff,
// a success forgets its backoff. Level-triggered: reconcile reads the
// current state from the informers' caches, never from the event.
//
//   kube::Controller c({.name = "pv-binder", .workers = 2, .metrics = &registry},
//                      [&](const std::string& key) { return reconcilePvc(key); });
//   c.watch(*pvcInformer);                                   // key = ns/name
//   c.watch(*pvInformer, [](const json::object& pv) { return claimKeys(pv); });
//   c.run(stopToken);                                        // blocks; drains on stop
//
// Metrics (when a registry is given), labelled controller=<name>:
// trellis_controller_queue_depth, trellis_controller_reconcile_seconds,
// trellis_controller_reconcile_errors_total, trellis_controller_reconciles_total.
#pragma once

#include <functional>
#include <stop_token>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/base/metrics.h"
#include "common/base/result.h"
#include "common/kube/informer.h"
#include "common/kube/workqueue.h"

namespace trellis::kube {

struct ControllerOptions {
  std::string name;
  int workers = 2;
  base::Registry* metrics = nullptr;
};

class Controller {
 public:
  using Reconcile = std::function<base::Status(const std::string& key)>;
  using KeysFor = std::function<std::vector<std::string>(const boost::json::object&)>;

  Controller(ControllerOptions options, Reconcile reconcile);

  // Every add, update and delete of the informer's objects enqueues their
  // keys (objectKey by default, or what `keys` maps an object to).
  void watch(Informer& informer, KeysFor keys = {});
  void enqueue(const std::string& key);
  WorkQueue& queue() { return queue_; }

  // Runs `workers` threads until `stop` is requested, then drains the queue's
  // in-flight keys and returns.
  void run(std::stop_token stop);

 private:
  void work();

  ControllerOptions options_;
  Reconcile reconcile_;
  WorkQueue queue_;
  base::Gauge* depth_ = nullptr;
  base::Histogram* latency_ = nullptr;
  base::Counter* errors_ = nullptr;
  base::Counter* total_ = nullptr;
};

}  // namespace trellis::kube
