// trellis-cni: the CNI plugin (SPEC.md 1.1.0). A per-node bridge, a veth
// pair per pod moved into the pod's netns, addresses from the built-in IPAM,
// a default route via the bridge. Verbs: ADD, DEL, CHECK, STATUS, GC,
// VERSION; errors are the spec's JSON error object on stdout with exit 1.
//
// Configuration keys: netconf.h; ipam (host-local compatible: ranges or
// subnet, routes, dataDir); dns (copied into the result).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "cni/plugin/bandwidth.h"
#include "cni/plugin/ipam.h"
#include "cni/plugin/naming.h"
#include "cni/plugin/netconf.h"
#include "cni/plugin/node_rules.h"
#include "cni/plugin/portmap.h"
#include "cni/plugin/protocol.h"
#include "common/base/ip.h"
#include "common/base/numbers.h"
#include "common/linux/netlink.h"
#include "common/linux/nft_netlink.h"
#include "common/linux/nftables.h"

extern char** environ;

using namespace trellis;
using namespace trellis::cni;
namespace json = boost::json;

namespace {

std::string networkOf(const json::object& config) {
  const json::value* n = config.if_contains("name");
  return n && n->is_string() ? std::string(n->get_string()) : std::string();
}
std::string hostVethName(const Invocation& inv) {
  return cni::hostVethName(networkOf(inv.config), inv.containerId, inv.ifname);
}
std::string podMac(const Invocation& inv) { return cni::podMac(inv.containerId, inv.ifname); }

std::string prefixOf(const std::string& cidr) { return cidr.substr(cidr.find('/')); }


// The node-wide rules this configuration needs, for the subnets of `r`.
NodeRulesWanted wantedRules(const NetConf& nc, const Result& r) {
  NodeRulesWanted w{nc.ipMasq, {}, nc.clusterCidrs};
  for (const IpConfig& ip : r.ips) {
    if (auto c = base::parseCidr(ip.address)) w.podSubnets.push_back(base::formatCidr(*c));
  }
  return w;
}

std::variant<Result, Error> add(const Invocation& inv, const NetConf& nc, Ipam& ipam, PortMaps& ports,
                                const std::vector<PortMapping>& mappings, const std::optional<Bandwidth>& bandwidth) {
  auto nsfd = sys::openNetns(inv.netns);
  if (!nsfd) {
    return Error{nsfd.error().code() == base::ErrorCode::kNotFound ? ErrorCode::kUnknownContainer
                                                                   : ErrorCode::kInvalidEnvironment,
                 "CNI_NETNS: " + nsfd.error().message(), ""};
  }
  struct CloseFd {
    int fd;
    ~CloseFd() { close(fd); }
  } closeFd{*nsfd};
  auto allocated = ipam.allocate(inv.containerId, inv.ifname);
  if (std::holds_alternative<Error>(allocated)) return allocated;
  Result r = std::get<Result>(allocated);
  std::string veth = hostVethName(inv);
  auto fail = [&](const base::Error& e) -> std::variant<Result, Error> {
    // Undo what this ADD did; GC covers what a crash leaves behind.
    if (auto nl = sys::Netlink::open(); nl) static_cast<void>((*nl)->deleteLink(veth));
    static_cast<void>(ipam.release(inv.containerId, inv.ifname));
    return Error{ErrorCode::kIo, e.message(), ""};
  };
  auto nl = sys::Netlink::open();
  if (!nl) return fail(nl.error());
  sys::Netlink& host = **nl;
  auto bridge = host.ensureBridge(nc.bridge, nc.mtu, bridgeMac(nc.bridge));
  if (!bridge) return fail(bridge.error());
  if (nc.isGateway) {
    // A gateway forwards: pods reach other nodes and the outside through it.
    bool v6 = std::any_of(r.ips.begin(), r.ips.end(), [](const IpConfig& ip) { return ip.v6(); });
    bool v4 = std::any_of(r.ips.begin(), r.ips.end(), [](const IpConfig& ip) { return !ip.v6(); });
    if (v4) std::ofstream("/proc/sys/net/ipv4/ip_forward") << "1";
    if (v6) std::ofstream("/proc/sys/net/ipv6/conf/all/forwarding") << "1";
    for (const IpConfig& ip : r.ips) {
      if (auto st = host.addAddress(bridge->index, ip.gateway + prefixOf(ip.address)); !st) return fail(st.error());
    }
  }
  // The pod's namespace is worked on through a socket opened inside it.
  auto podNl = sys::Netlink::openIn(*nsfd);
  if (!podNl) return fail(podNl.error());
  sys::Netlink& pod = **podNl;
  // The usual case is one request: both ends created up, the host end on
  // the bridge, the pod end in the pod under its final name and MAC.
  std::string mac = podMac(inv);
  std::string hostMac = hostVethMac(inv.containerId, inv.ifname);
  sys::Netlink::VethPair pair{veth, hostMac, bridge->index, inv.ifname, mac, *nsfd, nc.mtu};
  if (auto created = host.createVethPair(pair); !created) {
    if (created.error().code() != base::ErrorCode::kAlreadyExists) return fail(created.error());
    if (pod.exists(inv.ifname)) {
      // A repeated ADD: make sure of the settings below.
      auto hostEnd = host.link(veth);
      if (!hostEnd) {
        return Error{ErrorCode::kIo, fmt::format("{} already exists in {} and is not trellis-cni's", inv.ifname, inv.netns), ""};
      }
      hostMac = hostEnd->mac;
      if (auto st = host.setMaster(veth, nc.bridge); !st) return fail(st.error());
      if (auto st = host.setUp(hostEnd->index); !st) return fail(st.error());
    } else {
      // The host end of an ADD that was interrupted: replace the pair.
      static_cast<void>(host.deleteLink(veth));
      if (auto again = host.createVethPair(pair); !again) return fail(again.error());
    }
  }
  if (nc.hairpin) std::ofstream(fmt::format("/sys/class/net/{}/brport/hairpin_mode", veth)) << "1";
  if (bandwidth && bandwidth->ingressRate) {
    // What leaves the host end enters the pod.
    auto st = host.setTbf(veth, bandwidth->ingressRate / 8, static_cast<uint32_t>(bandwidth->ingressBurst / 8),
                          tbfLimitBytes(bandwidth->ingressRate, bandwidth->ingressBurst));
    if (!st) return fail(st.error());
  }
  // Masquerade and hostPorts: node-wide rules made once (a cheap lookup
  // after that), then this pod's few map elements.
  Attachment self{inv.containerId, inv.ifname};
  if (nc.ipMasq || !mappings.empty() || ports.recorded(self)) {
    auto nft = sys::NftNetlink::open();
    if (!nft) return fail(nft.error());
    bool made = false;
    NodeRules rules(nc.nftTable, ipam.dir());
    if (auto st = rules.ensure(**nft, wantedRules(nc, r), &made); !st) return fail(st.error());
    if (made) {
      if (auto e = ports.restoreAll(**nft)) return fail(base::Error(base::ErrorCode::kIo, e->msg));
    }
    std::vector<std::string> podIps;
    for (const IpConfig& ip : r.ips) podIps.push_back(ip.address.substr(0, ip.address.find('/')));
    if (auto e = ports.set(**nft, self, podIps, mappings)) {
      static_cast<void>(ipam.release(inv.containerId, inv.ifname));
      if (auto h = sys::Netlink::open(); h) static_cast<void>((*h)->deleteLink(veth));
      return *e;
    }
  }
  auto inPod = [&]() -> base::Status {
    // The pod's links in one dump: its end, and lo (up already when the
    // runtime ran the loopback plugin first, as containerd does).
    auto links = pod.linkList();
    if (!links) return std::move(links).error();
    auto find = [&](const std::string& name) -> const sys::Netlink::Link* {
      for (const sys::Netlink::Link& l : *links) {
        if (l.name == name) return &l;
      }
      return nullptr;
    };
    const sys::Netlink::Link* podEnd = find(inv.ifname);
    if (!podEnd) return base::makeError(base::ErrorCode::kNotFound, "{} vanished from {}", inv.ifname, inv.netns);
    int idx = podEnd->index;
    for (const IpConfig& ip : r.ips) {
      if (auto st = pod.addAddress(idx, ip.address); !st) return st;
    }
    if (!podEnd->up) {
      if (auto st = pod.setUp(idx); !st) return st;
    }
    if (const sys::Netlink::Link* lo = find("lo"); lo && !lo->up) {
      if (auto st = pod.setUp(lo->index); !st) return st;
    }
    if (bandwidth && bandwidth->egressRate) {
      auto st = pod.setTbf(inv.ifname, bandwidth->egressRate / 8, static_cast<uint32_t>(bandwidth->egressBurst / 8),
                           tbfLimitBytes(bandwidth->egressRate, bandwidth->egressBurst));
      if (!st) return st;
    }
    if (nc.isGateway) {
      for (const IpConfig& ip : r.ips) {
        std::string any = ip.v6() ? "::/0" : "0.0.0.0/0";
        if (auto st = pod.addRoute(any, ip.gateway, idx); !st) return st;
      }
    }
    for (const Route& rt : r.routes) {
      if (nc.isGateway && (rt.dst == "0.0.0.0/0" || rt.dst == "::/0")) continue;  // added above
      std::string gw = rt.gw;
      if (gw.empty()) {
        for (const IpConfig& ip : r.ips) {
          if (ip.v6() == (rt.dst.find(':') != std::string::npos)) gw = ip.gateway;
        }
      }
      if (auto st = pod.addRoute(rt.dst, gw, idx); !st) return st;
    }
    return {};
  }();
  if (!inPod) return fail(inPod.error());
  r.interfaces = {Interface{nc.bridge, bridge->mac, "", nc.mtu}, Interface{veth, hostMac, "", nc.mtu},
                  Interface{inv.ifname, mac, inv.netns, nc.mtu}};
  for (IpConfig& ip : r.ips) ip.interface = 2;
  if (nc.isGateway) {
    std::vector<Route> routes;
    for (const IpConfig& ip : r.ips) {
      Route def;
      def.dst = ip.v6() ? "::/0" : "0.0.0.0/0";
      def.gw = ip.gateway;
      routes.push_back(def);
    }
    for (const Route& rt : r.routes) {
      if (rt.dst != "0.0.0.0/0" && rt.dst != "::/0") routes.push_back(rt);
    }
    r.routes = std::move(routes);
  }
  if (const json::value* dns = inv.config.if_contains("dns"); dns && dns->is_object()) {
    auto parsed = resultFromJson(json::object{{"dns", *dns}});
    if (std::holds_alternative<Result>(parsed)) r.dns = std::get<Result>(parsed).dns;
  }
  return r;
}

// Deletes the link `ifindex` of the host's namespace in a child process and
// returns without waiting for it: the kernel takes ~15 ms to destroy a veth
// pair (RCU grace periods), nearly all of a synchronous DEL. The child holds
// none of the runtime's pipes, so the runtime sees DEL finish at once.
void deleteInBackground(int ifindex) {
  pid_t child = fork();
  if (child != 0) return;  // the parent (or fork failed: GC removes retired links)
  setsid();
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd <= 2; ++fd) dup2(null, fd);
  if (auto nl = sys::Netlink::open(); nl) static_cast<void>((*nl)->deleteLink(ifindex));
  _exit(0);
}

// DEL: idempotent; works without a netns (the host end has a stable name).
// The pair is taken out of service at once — the pod end down and both ends
// renamed to the attachment's retired name, so the names are free for a new
// ADD — and released; the kernel's teardown of the pair finishes in the
// background (deleteInBackground). A DEL repeated after a crash finds the
// retired pair by name; GC removes any that are left.
std::optional<Error> del(const Invocation& inv, Ipam& ipam, PortMaps& ports) {
  if (auto e = ports.remove({inv.containerId, inv.ifname})) return e;
  auto io = [](const base::Error& e) { return Error{ErrorCode::kIo, e.message(), ""}; };
  auto nl = sys::Netlink::open();
  if (!nl) return io(nl.error());
  sys::Netlink& host = **nl;
  std::string network = networkOf(inv.config);
  std::string retired = retiredVethName(network, inv.containerId, inv.ifname);
  if (!inv.netns.empty()) {
    // A netns that is gone (or not a netns any more) has nothing left of
    // the pod end to take down: the spec wants DEL to succeed then.
    if (auto fd = sys::openNetns(inv.netns); fd) {
      auto pod = sys::Netlink::openIn(*fd);
      close(*fd);
      if (!pod) return io(pod.error());
      if (auto podEnd = (*pod)->link(inv.ifname); podEnd) {
        if (auto st = (*pod)->setDown(podEnd->index); !st) return io(st.error());
        if (auto st = (*pod)->rename(podEnd->index, retired); !st) {
          // Taken (a hash collision with a pair still being torn down):
          // delete this one synchronously instead.
          if (auto gone = (*pod)->deleteLink(podEnd->index); !gone && gone.error().code() != base::ErrorCode::kNotFound) {
            return io(gone.error());
          }
        }
      } else if (podEnd.error().code() != base::ErrorCode::kNotFound) {
        return io(podEnd.error());
      }
    }
  }
  std::optional<int> doomed;
  if (auto hostEnd = host.link(hostVethName(inv)); hostEnd) {
    if (host.rename(hostEnd->index, retired)) {
      doomed = hostEnd->index;
    } else if (auto gone = host.deleteLink(hostEnd->index); !gone && gone.error().code() != base::ErrorCode::kNotFound) {
      return io(gone.error());
    }
  } else if (hostEnd.error().code() != base::ErrorCode::kNotFound) {
    return io(hostEnd.error());
  }
  if (!doomed) {
    // Retired by a DEL that crashed before its teardown finished?
    if (auto left = host.link(retired); left) doomed = left->index;
  }
  if (auto e = ipam.release(inv.containerId, inv.ifname)) return e;
  if (doomed) deleteInBackground(*doomed);
  return std::nullopt;
}

// "address/prefix" in canonical text (the address not masked), or "" if not one.
std::string canonicalAddress(const std::string& text) {
  size_t slash = text.find('/');
  auto ip = base::parseIp(text.substr(0, slash));
  if (!ip) return "";
  auto prefix = base::parseInt(slash == std::string::npos ? "" : std::string_view(text).substr(slash + 1), 0, ip->v6 ? 128 : 32);
  return prefix ? base::formatIp(*ip) + "/" + std::to_string(*prefix) : "";
}

// CHECK: what ADD set up, against prevResult — the pod's interface with its
// MAC, every address, every route, the host end on the bridge, and the
// masquerade and port-mapping state of the attachment. A gone namespace or
// interface is error 3; anything else that differs is error 100, naming it.
std::optional<Error> check(const Invocation& inv, const NetConf& nc, Ipam& ipam, PortMaps& ports,
                           const std::vector<PortMapping>& mappings) {
  auto differs = [](std::string what) { return Error{ErrorCode::kAttachmentDiffers, std::move(what), ""}; };
  if (compareVersions(inv.cniVersion, "0.4.0") < 0) {
    return Error{ErrorCode::kIncompatibleVersion, "CHECK needs cniVersion 0.4.0 or later, the configuration has " + inv.cniVersion, ""};
  }
  const json::value* prevJson = inv.config.if_contains("prevResult");
  if (!prevJson || !prevJson->is_object()) {
    return Error{ErrorCode::kInvalidConfig, "CHECK needs prevResult (the result ADD gave)", ""};
  }
  auto parsedPrev = resultFromJson(prevJson->get_object());
  if (std::holds_alternative<Error>(parsedPrev)) return std::get<Error>(parsedPrev);
  const Result& prev = std::get<Result>(parsedPrev);
  Attachment self{inv.containerId, inv.ifname};
  bool held = false;
  for (const auto& [ip, who] : ipam.allocations()) held |= who == self;
  if (!held) return differs("no address is allocated to this attachment");
  auto fd = sys::openNetns(inv.netns);
  if (!fd) return Error{ErrorCode::kUnknownContainer, fd.error().message(), ""};
  auto podNl = sys::Netlink::openIn(*fd);
  close(*fd);
  if (!podNl) return Error{ErrorCode::kUnknownContainer, podNl.error().message(), ""};
  sys::Netlink& pod = **podNl;
  auto podEnd = pod.link(inv.ifname);
  if (!podEnd) return Error{ErrorCode::kUnknownContainer, fmt::format("{} is missing in {}", inv.ifname, inv.netns), ""};
  // The interface, its MAC, its addresses.
  std::string mac = podMac(inv);
  std::vector<int> ours;  // indexes of prevResult's interfaces that are this one
  for (size_t i = 0; i < prev.interfaces.size(); ++i) {
    if (prev.interfaces[i].name == inv.ifname && !prev.interfaces[i].sandbox.empty()) {
      ours.push_back(static_cast<int>(i));
      if (!prev.interfaces[i].mac.empty()) mac = prev.interfaces[i].mac;
    }
  }
  auto lower = [](std::string x) {
    for (char& c : x) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return x;
  };
  if (lower(podEnd->mac) != lower(mac)) return differs(fmt::format("{} has MAC {}, not {}", inv.ifname, podEnd->mac, mac));
  auto addrs = pod.addresses(podEnd->index);
  if (!addrs) return Error{ErrorCode::kIo, addrs.error().message(), ""};
  std::set<std::string> have;
  for (const std::string& a : *addrs) have.insert(canonicalAddress(a));
  for (const IpConfig& ip : prev.ips) {
    if (ip.interface >= 0 && std::find(ours.begin(), ours.end(), ip.interface) == ours.end()) continue;
    if (!have.count(canonicalAddress(ip.address))) {
      return differs(fmt::format("address {} is missing on {} in {}", ip.address, inv.ifname, inv.netns));
    }
  }
  // Its routes (a route without a gateway goes via the address's gateway, as ADD made it).
  auto routes = pod.linkRoutes(podEnd->index);
  if (!routes) return Error{ErrorCode::kIo, routes.error().message(), ""};
  std::set<std::pair<std::string, std::string>> haveRoutes;
  for (const auto& rt : *routes) {
    auto dst = base::parseCidr(rt.dst);
    auto gw = base::parseIp(rt.gw);
    haveRoutes.emplace(dst ? base::formatCidr(*dst) : rt.dst, gw ? base::formatIp(*gw) : "");
  }
  for (const Route& rt : prev.routes) {
    auto dst = base::parseCidr(rt.dst);
    if (!dst) return differs(fmt::format("prevResult has a route to {:?}, not a CIDR", rt.dst));
    std::string gw = rt.gw;
    if (gw.empty()) {
      for (const IpConfig& ip : prev.ips) {
        if (ip.v6() == dst->network.v6 && !ip.gateway.empty()) gw = ip.gateway;
      }
    }
    auto g = base::parseIp(gw);
    if (!haveRoutes.count({base::formatCidr(*dst), g ? base::formatIp(*g) : ""})) {
      return differs(fmt::format("the route to {}{} is missing in {}", rt.dst, gw.empty() ? "" : " via " + gw, inv.netns));
    }
  }
  // The host end, on the bridge.
  auto hostNl = sys::Netlink::open();
  if (!hostNl) return Error{ErrorCode::kIo, hostNl.error().message(), ""};
  std::string veth = hostVethName(inv);
  auto hostEnd = (*hostNl)->link(veth);
  if (!hostEnd) return differs(fmt::format("the host end {} is missing", veth));
  auto bridge = (*hostNl)->link(nc.bridge);
  if (!bridge) return differs(fmt::format("the bridge {} is missing", nc.bridge));
  if (hostEnd->master != bridge->index) return differs(fmt::format("the host end {} is not on the bridge {}", veth, nc.bridge));
  // Masquerade: the pod's subnets in the masquerade sets.
  if (nc.ipMasq) {
    for (const IpConfig& ip : prev.ips) {
      auto subnet = base::parseCidr(ip.address);
      if (!subnet) continue;
      auto set = sys::nftList(fmt::format("list set inet {} masq{}", nc.nftTable, subnet->network.v6 ? 6 : 4));
      if (!set || set->find(base::formatCidr(*subnet)) == std::string::npos) {
        return differs(fmt::format("the masquerade of {} is missing (nftables set masq{} of table {})", base::formatCidr(*subnet),
                                   subnet->network.v6 ? 6 : 4, nc.nftTable));
      }
    }
  }
  // Port mappings: the state, and each map element.
  auto recorded = ports.recorded(self);
  if (!mappings.empty() || recorded) {
    if (!recorded || recorded->mappings != mappings) return differs("the port mappings recorded for this attachment differ");
    for (const std::string& ip : recorded->podIps) {
      bool v6 = ip.find(':') != std::string::npos;
      auto map = sys::nftList(fmt::format("list map inet {} hostports{}", nc.nftTable, v6 ? 6 : 4));
      for (const PortMapping& m : mappings) {
        std::string element = fmt::format("{} . {} : {} . {}", m.protocol, m.hostPort, ip, m.containerPort);
        if (!map || map->find(element) == std::string::npos) {
          return differs(fmt::format("the port mapping {} is missing (nftables map hostports{} of table {})", element,
                                     v6 ? 6 : 4, nc.nftTable));
        }
      }
    }
  }
  return std::nullopt;
}

std::optional<Error> gc(const Invocation& inv, Ipam& ipam, PortMaps& ports) {
  std::set<Attachment> valid;
  if (const json::value* v = inv.config.if_contains("cni.dev/valid-attachments"); v && v->is_array()) {
    for (const json::value& a : v->get_array()) {
      if (!a.is_object()) continue;
      const json::value* id = a.get_object().if_contains("containerID");
      const json::value* ifn = a.get_object().if_contains("ifname");
      if (id && id->is_string() && ifn && ifn->is_string()) valid.emplace(id->get_string(), ifn->get_string());
    }
  }
  if (auto e = ports.gc(valid)) return e;
  // Host ends of attachments that are not valid (also those a killed ADD
  // left before it could record anything).
  std::string network = networkOf(inv.config);
  std::string prefix = vethPrefix(network);
  std::string retired = retiredPrefix(network);
  std::set<std::string> keep;
  for (const Attachment& a : valid) keep.insert(cni::hostVethName(network, a.first, a.second));
  auto nl = sys::Netlink::open();
  if (!nl) return Error{ErrorCode::kIo, nl.error().message(), ""};
  auto links = (*nl)->links();
  if (!links) return Error{ErrorCode::kIo, links.error().message(), ""};
  for (const std::string& name : *links) {
    // Host ends and retired pairs (a DEL's background teardown that died).
    bool ours = name.size() == prefix.size() + 8 && (name.starts_with(prefix) || name.starts_with(retired)) &&
                name.find_first_not_of("0123456789abcdef", prefix.size()) == std::string::npos;
    if (!ours || keep.count(name)) continue;
    auto gone = (*nl)->deleteLink(name);
    if (!gone && gone.error().code() != base::ErrorCode::kNotFound) return Error{ErrorCode::kIo, gone.error().message(), ""};
  }
  return ipam.gc(valid);
}

int emit(const json::object& o, int code) {
  std::string text = json::serialize(o);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return code;
}

int fail(const Error& e, std::string_view version) { return emit(e.toJson(version), 1); }

// Where an unexpected error is recorded: one line each in the IPAM data
// directory, which trellis-cni-agent counts in its /metrics
// (trellis_cni_plugin_unexpected_errors_total).
std::string gUnexpectedLog = std::string(kDefaultIpamDataDir) + "/" + kUnexpectedErrorsFile;

void recordUnexpected(const std::string& what) {
  std::fprintf(stderr, "trellis-cni: unexpected error (a bug): %s\n", what.c_str());
  int fd = open(gUnexpectedLog.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  std::string line = fmt::format("{} {}\n", static_cast<long long>(time(nullptr)), what);
  for (char& c : line) c = c == '\n' && &c != &line.back() ? ' ' : c;
  static_cast<void>(!write(fd, line.data(), line.size()));
  close(fd);
}

int run() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq != std::string_view::npos && kv.substr(0, 4) == "CNI_") env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  if (!env.count("CNI_COMMAND")) {
    std::fprintf(stderr, "trellis-cni: a CNI plugin; run by a container runtime (CNI_COMMAND is not set)\n");
    return fail(Error{ErrorCode::kInvalidEnvironment, "CNI_COMMAND is not set", ""}, latestVersion());
  }
  std::string input;
  if (env["CNI_COMMAND"] != "VERSION") input.assign(std::istreambuf_iterator<char>(std::cin), {});
  auto parsed = parseInvocation(env, input);
  if (std::holds_alternative<Error>(parsed)) return fail(std::get<Error>(parsed), latestVersion());
  Invocation inv = std::move(std::get<Invocation>(parsed));
  if (inv.command == Command::kVersion) return emit(versionInfo(), 0);
  auto nc = parseNetConf(inv.config);
  if (std::holds_alternative<Error>(nc)) return fail(std::get<Error>(nc), inv.cniVersion);
  auto ipamConfig = ipamOf(inv.config);
  if (std::holds_alternative<Error>(ipamConfig)) return fail(std::get<Error>(ipamConfig), inv.cniVersion);
  std::string network;
  if (const json::value* n = inv.config.if_contains("name"); n && n->is_string()) network = std::string(n->get_string());
  gUnexpectedLog = std::get<IpamConfig>(ipamConfig).dataDir + "/" + kUnexpectedErrorsFile;
  Ipam ipam(std::get<IpamConfig>(ipamConfig), network);
  auto mappings = parsePortMappings(inv.config);
  if (std::holds_alternative<Error>(mappings)) return fail(std::get<Error>(mappings), inv.cniVersion);
  PortMaps ports(std::get<IpamConfig>(ipamConfig).dataDir + "/" + network + "/ports", std::get<NetConf>(nc).nftTable);
  auto bandwidth = parseBandwidth(inv.config);
  if (std::holds_alternative<Error>(bandwidth)) return fail(std::get<Error>(bandwidth), inv.cniVersion);
  switch (inv.command) {
    case Command::kAdd: {
      auto r = add(inv, std::get<NetConf>(nc), ipam, ports, std::get<std::vector<PortMapping>>(mappings),
                   std::get<std::optional<Bandwidth>>(bandwidth));
      if (std::holds_alternative<Error>(r)) return fail(std::get<Error>(r), inv.cniVersion);
      return emit(toJson(std::get<Result>(r), inv.cniVersion), 0);
    }
    case Command::kDel:
      if (auto e = del(inv, ipam, ports)) return fail(*e, inv.cniVersion);
      return 0;
    case Command::kCheck:
      if (auto e = check(inv, std::get<NetConf>(nc), ipam, ports, std::get<std::vector<PortMapping>>(mappings))) {
        return fail(*e, inv.cniVersion);
      }
      return 0;
    case Command::kGc:
      if (auto e = gc(inv, ipam, ports)) return fail(*e, inv.cniVersion);
      return 0;
    case Command::kStatus:
      // Ready once the configuration is complete (checked above), the node's
      // network is configured (the agent's ready file, when the config names
      // one) and the IPAM store can be written.
      if (const std::string& ready = std::get<NetConf>(nc).readyFile; !ready.empty() && access(ready.c_str(), F_OK) != 0) {
        return fail(Error{ErrorCode::kNotReady, "the node's network is not configured yet",
                          ready + " does not exist (trellis-cni-agent writes it after its first sync)"},
                    inv.cniVersion);
      }
      if (access(std::get<IpamConfig>(ipamConfig).dataDir.c_str(), W_OK) != 0 &&
          access("/var/lib", W_OK) != 0) {
        return fail(Error{ErrorCode::kNotReady, "the IPAM data directory is not writable", ""}, inv.cniVersion);
      }
      return 0;
    case Command::kVersion:
      break;
  }
  return 0;
}

}  // namespace

// The floor under every invocation: whatever escapes is the spec's error
// object (code 999) on stdout, recorded for the agent's metrics.
int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    recordUnexpected(e.what());
    return fail(Error{ErrorCode::kUnexpected, "unexpected error in trellis-cni (a bug; see the runtime's log)", e.what()},
                latestVersion());
  }
}
