// trellis-controllers: the controller set that turns declared objects into
// work. --profile=local runs all of it against apiserver-lite;
// --profile=cluster only the CSI controllers a real cluster lacks for
// csi.trellis.dev. See docs/controllers.md.
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/status_server.h"
#include "common/kube/leader.h"
#include "controllers/csi_client.h"
#include "controllers/manager.h"

using namespace trellis;
using namespace trellis::controllers;

namespace {

std::string controllerHelp() {
  std::string out = "controllers to run: '*' (the profile's defaults), NAME to add one, -NAME to drop one. Known:";
  for (const ControllerInfo& c : allControllers()) {
    out += fmt::format("\n  {}{} — {}", c.name, c.cluster ? " (cluster, local)" : " (local)", c.help);
  }
  return out;
}

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-controllers: scheduling, the volume lifecycle through CSI, endpoints, node IPAM, protection"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string kubeconfig, profileName = "local", csiEndpoint, clusterCidr, controllersList = "*", rootCaFile, metricsAddress;
  Options opts;
  bool leaderElect = true;
  std::string leaseName = "trellis-controllers", leaseNamespace = "kube-system";
  double leaseDuration = 15, renewDeadline = 10, retryPeriod = 2;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)");
  app.add_option("--profile", profileName, "local (everything, for apiserver-lite) or cluster (only the CSI controllers)")
      ->check(CLI::IsMember({"local", "cluster"}))
      ->capture_default_str();
  app.add_option("--csi-endpoint", csiEndpoint, "the CSI driver's controller socket, unix:///path/csi.sock");
  app.add_option("--driver-name", opts.driverName, "the CSI driver whose StorageClasses and volumes are ours")
      ->capture_default_str();
  app.add_option("--cluster-cidr", clusterCidr, "pod CIDR(s) of the cluster for nodeipam, CIDR[,CIDR] (one per family)");
  app.add_option("--node-cidr-mask-size-ipv4", opts.nodeCidrMaskV4, "prefix length of each node's IPv4 pod CIDR")
      ->capture_default_str();
  app.add_option("--node-cidr-mask-size-ipv6", opts.nodeCidrMaskV6, "prefix length of each node's IPv6 pod CIDR")
      ->capture_default_str();
  app.add_option("--controllers", controllersList, controllerHelp())->capture_default_str();
  app.add_option("--root-ca-file", rootCaFile,
                 "the CA published as kube-root-ca.crt in every namespace (default: the CA the kubeconfig trusts)");
  app.add_option("--capacity-namespace", opts.capacityNamespace, "namespace of the CSIStorageCapacity objects")
      ->capture_default_str();
  double capacityPoll = 60;
  app.add_option("--capacity-poll-interval", capacityPoll, "seconds between GetCapacity refreshes")->capture_default_str();
  double graceSeconds = 40;
  app.add_option("--node-monitor-grace-period", graceSeconds,
                 "seconds a node's Lease may go unrenewed before the node is Ready=Unknown and tainted unreachable")
      ->capture_default_str();
  double jobBackoff = 10;
  app.add_option("--job-pod-failure-backoff", jobBackoff,
                 "seconds a Job waits before replacing its first failed pod (doubling per failure, up to 360)")
      ->capture_default_str();
  app.add_option("--terminated-pod-gc-threshold", opts.terminatedPodGcThreshold,
                 "terminated pods kept before podgc deletes the oldest (0: none are deleted for this)")
      ->capture_default_str();
  app.add_option("--cronjob-clock-file", opts.clockFile,
                 "for tests: the cronjob controller reads the current time (RFC 3339) from this file instead of the clock");
  app.add_option("--concurrent-workers", opts.workers, "workers per controller (the scheduler, binder and nodeipam use one)")
      ->capture_default_str();
  app.add_option("--metrics-address", metricsAddress, "serve /metrics and /healthz over HTTP on HOST:PORT");
  app.add_option("--leader-elect", leaderElect, "take a Lease before acting, so one replica acts at a time")
      ->capture_default_str();
  app.add_option("--leader-elect-resource-name", leaseName, "the Lease's name")->capture_default_str();
  app.add_option("--leader-elect-resource-namespace", leaseNamespace, "the Lease's namespace")->capture_default_str();
  app.add_option("--leader-elect-lease-duration", leaseDuration, "seconds a lease holds without renewal")->capture_default_str();
  app.add_option("--leader-elect-renew-deadline", renewDeadline, "seconds the leader tries to renew before it stops")
      ->capture_default_str();
  app.add_option("--leader-elect-retry-period", retryPeriod, "seconds between tries to take or renew the lease")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("controllers");

  opts.nodeMonitorGracePeriod = std::chrono::milliseconds(static_cast<int64_t>(graceSeconds * 1000));
  opts.jobBackoff = std::chrono::milliseconds(static_cast<int64_t>(jobBackoff * 1000));
  opts.capacityPollInterval = std::chrono::milliseconds(static_cast<int64_t>(capacityPoll * 1000));
  opts.profile = profileName == "cluster" ? Profile::kCluster : Profile::kLocal;
  opts.csiEndpoint = csiEndpoint;
  for (std::string_view rest = clusterCidr; !rest.empty();) {
    size_t comma = rest.find(',');
    auto cidr = base::parseCidr(rest.substr(0, comma));
    if (!cidr) {
      log.error("--cluster-cidr", {{"error", cidr.error().message()}});
      return 2;
    }
    opts.clusterCidrs.push_back(*cidr);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  if (opts.clusterCidrs.size() > 2 ||
      (opts.clusterCidrs.size() == 2 && opts.clusterCidrs[0].network.v6 == opts.clusterCidrs[1].network.v6)) {
    log.error("--cluster-cidr", {{"error", "at most one CIDR per IP family"}});
    return 2;
  }
  auto selected = selectControllers(controllersList, opts.profile);
  if (!selected) {
    log.error("--controllers", {{"error", selected.error().message()}});
    return 2;
  }
  // CSI controllers need the driver's socket: without one, the defaults drop
  // them; naming one explicitly is an error.
  if (csiEndpoint.empty()) {
    std::vector<std::string> kept;
    for (const std::string& name : *selected) {
      bool needs = false;
      for (const ControllerInfo& c : allControllers()) needs = needs || (c.name == name && c.needsCsi);
      if (!needs) {
        kept.push_back(name);
      } else if (controllersList.find(name) != std::string::npos) {
        log.error("--controllers", {{"error", name + " needs --csi-endpoint"}});
        return 2;
      }
    }
    selected = std::move(kept);
  }

  auto cfg = kubeconfig.empty() ? kube::loadDefaultConfig() : kube::loadKubeconfig({kubeconfig});
  if (!cfg) {
    log.error("loading the kubeconfig", {{"error", cfg.error().message()}});
    return 1;
  }
  opts.rootCaPem = cfg->caPem;
  if (!rootCaFile.empty()) {
    std::ifstream in(rootCaFile);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) {
      log.error("--root-ca-file", {{"error", "cannot read " + rootCaFile}});
      return 2;
    }
    opts.rootCaPem = ss.str();
  }
  auto client = kube::Client::create(*cfg, {.qps = 500, .burst = 1000, .userAgent = "trellis-controllers"});
  if (!client) {
    log.error("connecting", {{"error", client.error().message()}});
    return 1;
  }
  std::unique_ptr<CsiController> csi;
  if (!csiEndpoint.empty()) csi = CsiController::connect(csiEndpoint);

  base::Registry metrics;
  std::unique_ptr<http::StatusServer> status;
  if (!metricsAddress.empty()) {
    auto s = http::StatusServer::start(metricsAddress, "controllers-metrics", metrics);
    if (!s) {
      log.error("serving metrics", {{"error", s.error().message()}});
      return s.error().code() == base::ErrorCode::kInvalidArgument ? 2 : 1;
    }
    status = std::move(*s);
    log.info("metrics", {{"address", metricsAddress}, {"port", status->port()}});
  }

  std::string identity = hostname() + "_" + std::to_string(::getpid());
  log.info("starting", {{"profile", profileName}, {"controllers", fmt::format("{}", fmt::join(*selected, ","))},
                        {"identity", identity}, {"server", cfg->server}});

  // Everything controllers build (informers, queues) lives for one term of
  // leadership: a new term starts from fresh caches.
  auto lead = [&](std::stop_token stop) {
    kube::SharedInformers informers(**client);
    EventRecorders recorders(**client);
    Context ctx{**client, informers, recorders, metrics, opts, csi.get()};
    std::vector<std::unique_ptr<Runnable>> running;
    for (const ControllerInfo& c : allControllers()) {
      if (std::find(selected->begin(), selected->end(), c.name) != selected->end()) running.push_back(c.make(ctx));
    }
    informers.start();
    while (!informers.waitForSync(std::chrono::seconds(1))) {
      if (stop.stop_requested()) return;
    }
    log.info("caches synced; running");
    std::vector<std::jthread> threads;
    for (auto& r : running) threads.emplace_back([&r, stop] { r->run(stop); });
    threads.clear();  // joins once stop fires and each has drained
    informers.stop();
    recorders.flush();
  };

  std::mutex mu;
  std::condition_variable cv;
  bool shutdown = false;
  std::unique_ptr<kube::LeaderElector> elector;
  std::stop_source noElection;
  base::SignalWatcher signals([&] {
    std::lock_guard g(mu);
    shutdown = true;
    if (elector) elector->stop();
    noElection.request_stop();
    cv.notify_all();
  });
  if (leaderElect) {
    {
      std::lock_guard g(mu);
      if (shutdown) return 0;
      auto secs = [](double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); };
      elector = std::make_unique<kube::LeaderElector>(
          **client, kube::LeaderElectionOptions{.ns = leaseNamespace, .name = leaseName, .identity = identity,
                                                .leaseDuration = secs(leaseDuration), .renewDeadline = secs(renewDeadline),
                                                .retryPeriod = secs(retryPeriod)});
    }
    elector->run([&](std::stop_token st) {
      log.info("leading", {{"lease", leaseNamespace + "/" + leaseName}});
      lead(st);
      log.info("stopped leading");
    });
  } else {
    lead(noElection.get_token());
  }
  log.info("shut down");
  return 0;
}
