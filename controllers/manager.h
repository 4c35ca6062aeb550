// What every controller of trellis-controllers shares, the table of them,
// and `--controllers` selection with kube-controller-manager's semantics.
//
// A controller is a Runnable made from a Context: it registers informers,
// handlers and indexes in its constructor (before the informers start) and
// does its work in run() until the stop token fires.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/ip.h"
#include "common/base/metrics.h"
#include "common/base/result.h"
#include "common/kube/client.h"
#include "common/kube/controller.h"
#include "common/kube/events.h"
#include "common/kube/informer.h"

namespace trellis::controllers {

class CsiController;

enum class Profile { kLocal, kCluster };

struct Options {
  Profile profile = Profile::kLocal;
  std::string csiEndpoint;
  std::string driverName = "csi.trellis.dev";
  std::vector<base::IpCidr> clusterCidrs;
  int nodeCidrMaskV4 = 24, nodeCidrMaskV6 = 64;
  std::string rootCaPem;  // for kube-root-ca.crt
  int workers = 4;
  std::chrono::milliseconds nodeMonitorGracePeriod{40'000};
  std::string capacityNamespace = "kube-system";  // where CSIStorageCapacity objects go
  std::chrono::milliseconds capacityPollInterval{60'000};
  std::chrono::milliseconds jobBackoff{10'000};  // first delay after a Job's pod fails (doubles, up to 6 minutes)
  int64_t terminatedPodGcThreshold = 12'500;     // podgc keeps at most this many terminated pods
  std::string clockFile;  // when set, the cronjob controller's "now" is the RFC 3339 time in this file (tests)
};

// One Event recorder per reporting component ("default-scheduler",
// "persistentvolume-controller", ...), as kubectl describe shows them.
class EventRecorders {
 public:
  explicit EventRecorders(kube::Client& client) : client_(client) {}
  kube::EventRecorder& get(const std::string& component);
  void flush();

 private:
  kube::Client& client_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<kube::EventRecorder>> recorders_;
};

struct Context {
  kube::Client& client;
  kube::SharedInformers& informers;
  EventRecorders& recorders;
  base::Registry& metrics;
  const Options& options;
  CsiController* csi;  // null when no --csi-endpoint
};

class Runnable {
 public:
  virtual ~Runnable() = default;
  virtual void run(std::stop_token stop) = 0;
};

// The usual shape: one kube::Controller (informers → queue → reconcile).
class Reconciler : public Runnable {
 public:
  Reconciler(Context& ctx, std::string name, kube::Controller::Reconcile reconcile, int workers = 0)
      : ctx_(ctx), controller_({.name = std::move(name), .workers = workers ? workers : ctx.options.workers,
                                .metrics = &ctx.metrics},
                               std::move(reconcile)) {}
  void run(std::stop_token stop) override { controller_.run(stop); }

 protected:
  Context& ctx_;
  kube::Controller controller_;
};

// Adds (`present`) or removes `finalizer` on `obj` with a merge patch that
// carries its resourceVersion; nothing when it already is so, and an object
// gone meanwhile is not an error.
base::Status setFinalizer(kube::Client& client, const kube::Resource& r, const boost::json::object& obj,
                          std::string_view finalizer, bool present);

struct ControllerInfo {
  std::string_view name;
  bool local, cluster;  // on by default in the profile
  bool needsCsi;
  std::string_view help;
  std::function<std::unique_ptr<Runnable>(Context&)> make;
};

// Every controller, in start order.
const std::vector<ControllerInfo>& allControllers();

// `--controllers`: a comma list where "*" turns on the profile's defaults,
// "name" turns one on and "-name" off (the explicit word wins over "*").
// Unknown names are an error (kInvalidArgument) naming them.
base::Result<std::vector<std::string>> selectControllers(std::string_view list, Profile profile);

// Factories, one per file.
std::unique_ptr<Runnable> makePvcProtection(Context& ctx);
std::unique_ptr<Runnable> makePvProtection(Context& ctx);
std::unique_ptr<Runnable> makeBinder(Context& ctx);
std::unique_ptr<Runnable> makeProvisioner(Context& ctx);
std::unique_ptr<Runnable> makeCapacityPublisher(Context& ctx);
std::unique_ptr<Runnable> makeAttacher(Context& ctx);
std::unique_ptr<Runnable> makeResizer(Context& ctx);
std::unique_ptr<Runnable> makeSnapshotter(Context& ctx);
std::unique_ptr<Runnable> makeScheduler(Context& ctx);
std::unique_ptr<Runnable> makeNodeIpam(Context& ctx);
std::unique_ptr<Runnable> makeEndpointSlices(Context& ctx);
std::unique_ptr<Runnable> makeEndpoints(Context& ctx);
std::unique_ptr<Runnable> makeGarbageCollector(Context& ctx);
std::unique_ptr<Runnable> makeReplicaSets(Context& ctx);
std::unique_ptr<Runnable> makeDeployments(Context& ctx);
std::unique_ptr<Runnable> makeJobs(Context& ctx);
std::unique_ptr<Runnable> makeTtlAfterFinished(Context& ctx);
std::unique_ptr<Runnable> makePodGc(Context& ctx);
std::unique_ptr<Runnable> makeDisruption(Context& ctx);
std::unique_ptr<Runnable> makeDaemonSets(Context& ctx);
std::unique_ptr<Runnable> makeStatefulSets(Context& ctx);
std::unique_ptr<Runnable> makeCronJobs(Context& ctx);
std::unique_ptr<Runnable> makeNodeLifecycle(Context& ctx);
std::unique_ptr<Runnable> makeServiceAccounts(Context& ctx);
std::unique_ptr<Runnable> makeRootCaPublisher(Context& ctx);

}  // namespace trellis::controllers
