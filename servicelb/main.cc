// trellis-servicelb: Service VIPs on this node — so far ClusterIPs through the
// socket-level load balancer in eBPF.
#include <fmt/format.h>

#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/status_server.h"
#include "common/kube/client.h"
#include "common/kube/config.h"
#include "servicelb/daemon.h"
#include "servicelb/sock_lb.h"

using namespace trellis;

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-servicelb: Service VIPs (ClusterIP) for this node's sockets, in eBPF"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string kubeconfig, nodeName, mode = "auto", cgroup = "/sys/fs/cgroup/unified", metricsAddress = "127.0.0.1";
  int metricsPort = 10249;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)");
  app.add_option("--node-name", nodeName, "this node's name")->required();
  app.add_option("--mode", mode, "data plane: auto, ebpf or nftables (nftables: not built yet)")->capture_default_str();
  app.add_option("--cgroup", cgroup, "the cgroup (v2) whose sockets are balanced: the node's")->capture_default_str();
  app.add_option("--metrics-port", metricsPort, "port of /metrics, /healthz, /readyz (0: pick one and log it)")
      ->capture_default_str();
  app.add_option("--metrics-address", metricsAddress, "address /metrics listens on")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("servicelb");
  if (mode != "auto" && mode != "ebpf" && mode != "nftables") {
    log.error("--mode", {{"error", mode + ": one of auto, ebpf, nftables"}});
    return 2;
  }
  if (mode == "nftables") {
    log.error("--mode", {{"error", "the nftables data plane is not built yet"}});
    return 2;
  }
  if (metricsPort < 0 || metricsPort > 65535) {
    log.error("--metrics-port", {{"error", fmt::format("{} is not a port", metricsPort)}});
    return 2;
  }
  auto netns = servicelb::netnsCookie();
  if (!netns) {
    log.error("network namespace", {{"error", netns.error().message()}});
    return 1;
  }
  auto lb = servicelb::SockLb::attach(cgroup);
  if (!lb) {
    log.error("attaching the socket load balancer", {{"error", lb.error().message()}});
    return 1;
  }
  std::string server;
  auto client =
      kube::clientFromKubeconfigFlag(kubeconfig, {.qps = 50, .burst = 100, .userAgent = "trellis-servicelb"}, &server);
  if (!client) {
    log.error("the API", {{"error", client.error().message()}});
    return 1;
  }
  base::Registry metrics;
  servicelb::Daemon daemon(**client, **lb, *netns, metrics);
  auto status = http::StatusServer::start(
      fmt::format("{}:{}", metricsAddress, metricsPort), "servicelb-metrics", metrics, {},
      [&]() -> std::string { return daemon.synced() ? "" : "Services and EndpointSlices not synced yet"; });
  if (!status) {
    log.error("metrics listener", {{"error", status.error().message()}});
    return 1;
  }
  log.info("serving", {{"node", nodeName}, {"mode", "ebpf"}, {"cgroup", cgroup}, {"metrics", (*status)->port()},
                       {"server", server}});
  daemon.start();
  base::waitForShutdownSignal();
  log.info("shutting down");
  daemon.stop();
  (*status)->stop();
  return 0;
}
