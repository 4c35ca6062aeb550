// trellis-cni-agent: the node daemon of Trellis networking. It watches its
// Node and the others (common/kube informer) and converges, level-triggered:
//  - once its Node has spec.podCIDRs: installs the trellis-cni binary and
//    writes the conflist (each atomically: temp file, fsync, rename), with
//    one IPAM range set per pod CIDR (dual-stack);
//  - routes every other node's pod CIDRs: via that node's InternalIP when
//    the two share a link (host-gw), otherwise through a VXLAN device
//    (trellis.1, VNI 1, port 8472, learning off) with a permanent neighbor
//    and forwarding entry per peer, so nothing is flooded; each node
//    publishes its VTEP MAC in the annotation trellis.dev/vtep-mac;
//    routes of nodes that left or changed are removed;
//  - serves /healthz (ok once configured and the last reconcile succeeded)
//    and /metrics.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "cni/agent/routes.h"
#include "cni/plugin/ipam.h"
#include "cni/plugin/naming.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/metrics.h"
#include "common/base/numbers.h"
#include "common/base/signals.h"
#include "common/http/server.h"
#include "common/kube/client.h"
#include "common/kube/config.h"
#include "common/kube/informer.h"
#include "common/linux/netlink.h"

using namespace trellis;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> podCidrs(const json::object& node) {
  std::vector<std::string> out;
  const json::value* spec = node.if_contains("spec");
  if (!spec || !spec->is_object()) return out;
  if (const json::value* list = spec->get_object().if_contains("podCIDRs"); list && list->is_array()) {
    for (const json::value& c : list->get_array()) {
      if (c.is_string()) out.emplace_back(c.get_string());
    }
  }
  if (out.empty()) {
    if (const json::value* c = spec->get_object().if_contains("podCIDR"); c && c->is_string()) out.emplace_back(c->get_string());
  }
  return out;
}

std::vector<std::string> internalIps(const json::object& node) {
  std::vector<std::string> out;
  const json::value* status = node.if_contains("status");
  const json::value* addrs = status && status->is_object() ? status->get_object().if_contains("addresses") : nullptr;
  if (!addrs || !addrs->is_array()) return out;
  for (const json::value& a : addrs->get_array()) {
    if (!a.is_object()) continue;
    const json::value* type = a.get_object().if_contains("type");
    const json::value* addr = a.get_object().if_contains("address");
    if (type && type->is_string() && type->get_string() == "InternalIP" && addr && addr->is_string()) {
      out.emplace_back(addr->get_string());
    }
  }
  return out;
}

bool isV6(std::string_view s) { return s.find(':') != std::string_view::npos; }

// Writes `content` to `path` atomically (temp file in the same directory,
// fsync, rename) unless it already holds exactly that. `mode` for new files.
base::Result<bool> writeIfChanged(const std::string& path, const std::string& content, mode_t mode) {
  if (std::ifstream in(path, std::ios::binary); in) {
    std::ostringstream cur;
    cur << in.rdbuf();
    if (cur.str() == content) return false;
  }
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::string tmp = path + ".trellis-tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) return base::makeError(base::ErrorCode::kIo, "writing {}", tmp);
  }
  int fd = open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  chmod(tmp.c_str(), mode);
  if (rename(tmp.c_str(), path.c_str()) != 0) return base::Error::fromErrno(errno, "rename " + tmp);
  return true;
}

struct Options {
  std::string nodeName, binDir = "/opt/cni/bin", confDir = "/etc/cni/net.d", plugin, clusterCidr, netns;
  std::string conflistName = "10-trellis.conflist";
  std::string ipamDataDir;  // "" : the plugin's default (/var/lib/cni/networks)
  std::string readyFile = "/run/trellis/cni-ready";  // written after the first successful sync
  std::string backend = "auto";  // auto, host-gw, vxlan
};

constexpr const char* kVxlanDevice = "trellis.1";
constexpr const char* kVtepMacAnnotation = "trellis.dev/vtep-mac";

// The network address of an IPv4 CIDR ("10.244.2.0/24" -> "10.244.2.0"):
// a node's VXLAN endpoint address.
std::string networkAddress(const std::string& cidr) { return cidr.substr(0, cidr.find('/')); }

std::string annotation(const json::object& node, const char* key) {
  const json::value* m = node.if_contains("metadata");
  const json::value* a = m && m->is_object() ? m->get_object().if_contains("annotations") : nullptr;
  const json::value* v = a && a->is_object() ? a->get_object().if_contains(key) : nullptr;
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

class Agent {
 public:
  Agent(Options o, kube::Client& client, kube::Informer& nodes, base::Registry& metrics)
      : o_(std::move(o)),
        client_(client),
        nodes_(nodes),
        reconciles_(metrics.counter("trellis_cni_agent_reconciles_total", "Reconciles run")),
        errors_(metrics.counter("trellis_cni_agent_reconcile_errors_total", "Reconciles that failed")),
        routesGauge_(metrics.gauge("trellis_cni_agent_routes", "host-gw routes to other nodes")) {}

  bool healthy() const { return configured_ && lastOk_; }

  // Per-pod traffic, from the host ends of the pods' veth pairs (what the
  // host end receives the pod sent), in Prometheus text.
  std::string podMetrics() {
    cni::IpamConfig ic;
    ic.dataDir = o_.ipamDataDir.empty() ? cni::kDefaultIpamDataDir : o_.ipamDataDir;
    cni::Ipam ipam(ic, "trellis");
    std::map<std::string, cni::Attachment> byVeth;
    for (const auto& [ip, who] : ipam.allocations()) byVeth[cni::hostVethName("trellis", who.first, who.second)] = who;
    std::string out;
    auto collect = [&]() -> base::Status {
      auto nl = sys::Netlink::open();
      if (!nl) return std::move(nl).error();
      struct Series {
        const char* name;
        const char* help;
        uint64_t sys::Netlink::LinkStats::*field;
      };
      static const Series kSeries[] = {
          {"trellis_cni_pod_transmit_bytes_total", "Bytes the pod sent", &sys::Netlink::LinkStats::rxBytes},
          {"trellis_cni_pod_transmit_packets_total", "Packets the pod sent", &sys::Netlink::LinkStats::rxPackets},
          {"trellis_cni_pod_transmit_drops_total", "Packets the pod sent that were dropped", &sys::Netlink::LinkStats::rxDropped},
          {"trellis_cni_pod_receive_bytes_total", "Bytes delivered to the pod", &sys::Netlink::LinkStats::txBytes},
          {"trellis_cni_pod_receive_packets_total", "Packets delivered to the pod", &sys::Netlink::LinkStats::txPackets},
          {"trellis_cni_pod_receive_drops_total", "Packets for the pod that were dropped", &sys::Netlink::LinkStats::txDropped}};
      std::vector<std::pair<std::string, sys::Netlink::LinkStats>> stats;
      for (const auto& [veth, who] : byVeth) {
        auto st = (*nl)->stats(veth);
        if (!st) continue;  // a pod being set up or torn down
        stats.emplace_back(fmt::format("container_id=\"{}\",interface=\"{}\",veth=\"{}\"", who.first, who.second, veth), *st);
      }
      for (const Series& series : kSeries) {
        out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", series.name, series.help, series.name);
        for (const auto& [labels, st] : stats) out += fmt::format("{}{{{}}} {}\n", series.name, labels, st.*series.field);
      }
      return {};
    };
    auto st = o_.netns.empty() ? collect() : sys::inNetns(o_.netns, collect);
    static_cast<void>(st);  // no pods yet, or a namespace going away: the series are simply absent
    // The plugin's unexpected errors (bugs), one line each in its data directory.
    size_t unexpected = 0;
    std::ifstream log(std::string(ic.dataDir) + "/" + cni::kUnexpectedErrorsFile);
    for (std::string line; std::getline(log, line);) ++unexpected;
    out += fmt::format("# HELP trellis_cni_plugin_unexpected_errors_total Plugin invocations that ended in an unexpected "
                       "error (each one is a bug)\n# TYPE trellis_cni_plugin_unexpected_errors_total counter\n"
                       "trellis_cni_plugin_unexpected_errors_total {}\n", unexpected);
    return out;
  }

  void reconcile() {
    static const base::Logger log("cni-agent");
    reconciles_.inc();
    auto st = reconcileOnce();
    lastOk_ = st.ok();
    if (st && configured_ && !o_.readyFile.empty() && access(o_.readyFile.c_str(), F_OK) != 0) {
      // The node's network is configured: the plugin's STATUS says ready from now on.
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(o_.readyFile).parent_path(), ec);
      std::ofstream(o_.readyFile) << "configured\n";
    }
    if (!st) {
      errors_.inc();
      log.warn("reconcile failed", {{"error", st.error().message()}});
    }
  }

 private:
  base::Status reconcileOnce() {
    auto self = nodes_.get(o_.nodeName);
    std::vector<std::string> mine = self ? podCidrs(*self) : std::vector<std::string>{};
    if (!mine.empty()) {
      if (auto st = installPlugin(); !st) return st;
      if (auto st = writeConflist(mine); !st) return st;
      configured_ = true;
    }
    struct Peer {
      std::string ip4, ip6, vtepMac;  // InternalIPs; the VXLAN endpoint's MAC it published
      std::vector<std::string> cidrs;
    };
    std::vector<Peer> peers;
    for (const kube::ObjectPtr& n : nodes_.list()) {
      if (kube::objectName(*n) == o_.nodeName) continue;
      Peer p;
      for (const std::string& ip : internalIps(*n)) (isV6(ip) ? p.ip6 : p.ip4) = ip;
      p.vtepMac = annotation(*n, kVtepMacAnnotation);
      p.cidrs = podCidrs(*n);
      peers.push_back(std::move(p));
    }
    std::string ownIp, ownCidr4, ownCidr6;
    if (self) {
      for (const std::string& ip : internalIps(*self)) {
        if (!isV6(ip)) ownIp = ip;
      }
      for (const std::string& c : mine) (isV6(c) ? ownCidr6 : ownCidr4) = c;
    }
    std::string vtepMac;
    auto apply = [&]() -> base::Status {
      auto nl = sys::Netlink::open();
      if (!nl) return std::move(nl).error();
      // The VXLAN device (over IPv4; it carries both families of pod
      // traffic): every node has one and publishes its MAC, so that peers
      // without a shared link can reach it. Its addresses are the first of
      // each pod CIDR: the next hops peers route this node's pods via.
      bool vxlan = o_.backend != "host-gw" && !ownIp.empty() && !ownCidr4.empty();
      if (vxlan) {
        if (auto st = (*nl)->ensureVxlan(kVxlanDevice, 1, ownIp, 8472, 0); !st) return st;
        if (auto st = (*nl)->addAddress(kVxlanDevice, networkAddress(ownCidr4) + "/32"); !st) return st;
        if (!ownCidr6.empty()) {
          if (auto st = (*nl)->addAddress(kVxlanDevice, networkAddress(ownCidr6) + "/128"); !st) return st;
        }
        auto mac = (*nl)->mac(kVxlanDevice);
        if (!mac) return std::move(mac).error();
        vtepMac = *mac;
      }
      std::vector<cni::PeerRoute> want;
      std::set<std::pair<std::string, std::string>> neighbors, forwarding;  // (ip, mac) wanted on the device
      for (const Peer& p : peers) {
        for (const std::string& cidr : p.cidrs) {
          const std::string& under = isV6(cidr) ? p.ip6 : p.ip4;
          bool direct = o_.backend == "host-gw";
          if (o_.backend == "auto" && !under.empty()) {
            auto c = (*nl)->connected(under);
            if (!c) return std::move(c).error();
            direct = *c;
          }
          if (direct) {
            if (!under.empty()) want.push_back({cidr, under, ""});
            continue;
          }
          if (!vxlan || p.ip4.empty() || p.vtepMac.empty()) continue;  // not published yet
          std::string vtep = networkAddress(cidr);
          if (auto st = (*nl)->setNeighbor(kVxlanDevice, vtep, p.vtepMac); !st) return st;
          if (auto st = (*nl)->setFdb(kVxlanDevice, p.vtepMac, p.ip4); !st) return st;
          neighbors.insert({vtep, p.vtepMac});
          forwarding.insert({p.ip4, p.vtepMac});
          want.push_back({cidr, vtep, kVxlanDevice});
        }
      }
      if (vxlan) {
        // Entries of nodes that left, or that changed address or MAC:
        // removed (level-triggered, so also those of before a restart).
        auto have = (*nl)->permanentNeighbors(kVxlanDevice);
        if (!have) return std::move(have).error();
        for (const auto& e : *have) {
          if ((e.family == AF_BRIDGE ? forwarding : neighbors).count({e.ip, e.mac})) continue;
          if (auto st = (*nl)->deleteNeighbor(kVxlanDevice, e.family, e.ip, e.mac); !st) return st;
        }
      }
      auto changes = cni::reconcileRoutes(**nl, want);
      if (!changes) return std::move(changes).error();
      routesGauge_.set(static_cast<double>(want.size()));
      return {};
    };
    base::Status result = o_.netns.empty() ? apply() : sys::inNetns(o_.netns, apply);
    if (result && self && !vtepMac.empty() && annotation(*self, kVtepMacAnnotation) != vtepMac) {
      auto p = client_.patch(kube::resources::kNodes, "", o_.nodeName, kube::PatchType::kMerge,
                             json::serialize(json::object{
                                 {"metadata", json::object{{"annotations", json::object{{kVtepMacAnnotation, vtepMac}}}}}}));
      if (!p) return std::move(p).error();
    }
    return result;
  }

  base::Status installPlugin() {
    if (o_.plugin.empty()) return {};
    std::ifstream in(o_.plugin, std::ios::binary);
    if (!in) return base::makeError(base::ErrorCode::kNotFound, "plugin binary {} is missing", o_.plugin);
    std::ostringstream bin;
    bin << in.rdbuf();
    auto w = writeIfChanged(o_.binDir + "/trellis-cni", bin.str(), 0755);
    if (!w) return std::move(w).error();
    return {};
  }

  base::Status writeConflist(const std::vector<std::string>& cidrs) {
    json::array ranges;
    for (const std::string& c : cidrs) ranges.push_back(json::array{json::object{{"subnet", c}}});
    json::object plugin{{"type", "trellis-cni"},
                        {"bridge", "trellis0"},
                        {"isGateway", true},
                        {"ipMasq", !o_.clusterCidr.empty()},
                        {"hairpinMode", true},
                        // Pods leave room for VXLAN's 50 bytes whenever some peer may be
                        // reached through it (in auto mode too: a pod's MTU is one for all peers).
                        {"overlay", o_.backend == "host-gw" ? "none" : "vxlan"},
                        {"capabilities", json::object{{"portMappings", true}}},
                        {"ipam", json::object{{"type", "host-local"}, {"ranges", std::move(ranges)}}}};
    if (!o_.ipamDataDir.empty()) plugin["ipam"].as_object()["dataDir"] = o_.ipamDataDir;
    if (!o_.clusterCidr.empty()) plugin["clusterCIDR"] = o_.clusterCidr;
    if (!o_.readyFile.empty()) plugin["readyFile"] = o_.readyFile;
    json::object conflist{{"cniVersion", "1.0.0"}, {"name", "trellis"}, {"plugins", json::array{std::move(plugin)}}};
    auto w = writeIfChanged(o_.confDir + "/" + o_.conflistName, json::serialize(conflist) + "\n", 0644);
    if (!w) return std::move(w).error();
    return {};
  }

  Options o_;
  kube::Client& client_;
  kube::Informer& nodes_;
  base::Counter& reconciles_;
  base::Counter& errors_;
  base::Gauge& routesGauge_;
  std::atomic<bool> configured_{false}, lastOk_{false};
};

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-cni-agent: installs trellis-cni on a node and routes pod networks between nodes"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  Options o;
  std::string kubeconfig, listen = "127.0.0.1:9102";
  double resyncSeconds = 30;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)");
  app.add_option("--node-name", o.nodeName, "this node's Node name (default: the hostname)");
  app.add_option("--cni-bin-dir", o.binDir, "where the plugin binary goes")->capture_default_str();
  app.add_option("--cni-conf-dir", o.confDir, "where the conflist goes")->capture_default_str();
  app.add_option("--plugin", o.plugin, "the trellis-cni binary to install (default: next to this one)");
  app.add_option("--cluster-cidr", o.clusterCidr, "the cluster's pod CIDR: pod traffic leaving it is masqueraded");
  app.add_option("--ipam-data-dir", o.ipamDataDir, "the plugin's address store (default: /var/lib/cni/networks)");
  app.add_option("--ready-file", o.readyFile,
                 "written after the first successful sync; the conflist names it, and the plugin's STATUS is "
                 "not ready (code 50) until it exists (\"\": STATUS does not wait)")
      ->capture_default_str();
  app.add_option("--backend", o.backend, "auto (host-gw to nodes on a shared link, VXLAN to the others), host-gw, vxlan")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "host-gw", "vxlan"}));
  app.add_option("--netns", o.netns, "program routes in this network namespace (a node of a local cluster)");
  app.add_option("--listen", listen, "address:port for /healthz and /metrics")->capture_default_str();
  app.add_option("--resync", resyncSeconds, "seconds between full reconciles")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("cni-agent");
  if (o.nodeName.empty()) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    o.nodeName = host;
  }
  if (o.plugin.empty()) {
    std::error_code ec;
    auto self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) o.plugin = (self.parent_path() / "trellis-cni").string();
  }
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  bool dirty = true;
  base::SignalWatcher signals([&] {
    stop = true;
    cv.notify_all();
  });
  auto client = kube::clientFromKubeconfigFlag(kubeconfig);
  if (!client) {
    log.error("the API", {{"error", client.error().message()}});
    return 1;
  }
  base::Registry metrics;
  kube::Informer nodes(**client, kube::resources::kNodes);
  Agent agent(o, **client, nodes, metrics);
  auto wake = [&] {
    std::lock_guard g(mu);
    dirty = true;
    cv.notify_all();
  };
  nodes.addHandler({.onAdd = [&](const kube::ObjectPtr&) { wake(); },
                    .onUpdate = [&](const kube::ObjectPtr&, const kube::ObjectPtr&) { wake(); },
                    .onDelete = [&](const kube::ObjectPtr&) { wake(); }});
  nodes.start();

  http::ServerOptions so;
  auto hostPort = base::parseHostPort(listen);
  if (!hostPort) {
    log.error("--listen", {{"error", hostPort.error().message()}});
    return 2;
  }
  so.address = hostPort->host;
  so.port = hostPort->port;
  so.name = "cni-agent";
  so.metrics = &metrics;
  http::Server server(so, [&](http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
    http::Response r;
    r.headers.add("content-type", "text/plain; charset=utf-8");
    if (req.path() == "/healthz") {
      r.status = agent.healthy() ? 200 : 503;
      r.body = agent.healthy() ? "ok" : "not configured yet";
    } else if (req.path() == "/metrics") {
      r.headers.set("content-type", base::Registry::kContentType);
      r.body = metrics.render() + agent.podMetrics();
    } else {
      r.status = 404;
      r.body = "not found";
    }
    w->respond(std::move(r));
  });
  if (auto st = server.start(); !st) {
    log.error("listen", {{"error", st.error().message()}});
    return 1;
  }
  log.info("started", {{"node", o.nodeName}, {"port", server.port()}});
  if (!nodes.waitForSync(std::chrono::seconds(60))) log.warn("nodes not synced yet");
  auto resync = std::chrono::duration<double>(resyncSeconds);
  while (!stop) {
    {
      std::unique_lock g(mu);
      cv.wait_for(g, resync, [&] { return dirty || stop.load(); });
      if (stop) break;
      dirty = false;
    }
    agent.reconcile();
  }
  nodes.stop();
  server.stop(std::chrono::seconds(1));
  return 0;
}
