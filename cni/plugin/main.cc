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
#include "cni/plugin/portmap.h"
#include "cni/plugin/protocol.h"
#include "common/base/ip.h"
#include "common/linux/netlink.h"
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


// Masquerade of pod traffic leaving the cluster: one rule per family in
// Trellis's own table, matching sets of pod subnets and cluster CIDRs;
// applied as one nftables transaction, idempotent.
base::Status ensureMasquerade(const NetConf& nc, const Result& r) {
  const std::string& t = nc.nftTable;
  std::string script = fmt::format(
      "add table inet {0}\n"
      "add set inet {0} masq4 {{ type ipv4_addr; flags interval; auto-merge; }}\n"
      "add set inet {0} cluster4 {{ type ipv4_addr; flags interval; auto-merge; }}\n"
      "add set inet {0} masq6 {{ type ipv6_addr; flags interval; auto-merge; }}\n"
      "add set inet {0} cluster6 {{ type ipv6_addr; flags interval; auto-merge; }}\n"
      "add chain inet {0} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
      "flush chain inet {0} postrouting\n"
      "add rule inet {0} postrouting ip saddr @masq4 ip daddr != @cluster4 masquerade\n"
      "add rule inet {0} postrouting ip6 saddr @masq6 ip6 daddr != @cluster6 masquerade\n",
      t);
  auto element = [&](const std::string& set4, const std::string& cidr) {
    bool v6 = cidr.find(':') != std::string::npos;
    script += fmt::format("add element inet {} {}{} {{ {} }}\n", t, set4, v6 ? "6" : "4", cidr);
  };
  for (const IpConfig& ip : r.ips) {
    // The subnet of the address: the network of "a.b.c.d/len".
    std::string cidr = ip.address;
    element("masq", cidr);
    if (nc.clusterCidrs.empty()) element("cluster", cidr);
  }
  for (const std::string& c : nc.clusterCidrs) element("cluster", c);
  return sys::nftApply(script);
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
  if (nc.ipMasq) {
    if (auto st = ensureMasquerade(nc, r); !st) return fail(st.error());
  }
  std::vector<std::string> podIps;
  for (const IpConfig& ip : r.ips) podIps.push_back(ip.address.substr(0, ip.address.find('/')));
  if (auto e = ports.set({inv.containerId, inv.ifname}, podIps, mappings)) {
    return fail(base::Error(base::ErrorCode::kIo, e->msg));
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

std::optional<Error> check(const Invocation& inv, Ipam& ipam) {
  bool held = false;
  for (const auto& [ip, who] : ipam.allocations()) held |= who == Attachment{inv.containerId, inv.ifname};
  if (!held) return Error{ErrorCode::kUnknownContainer, "no address is allocated to this attachment", ""};
  auto fd = sys::openNetns(inv.netns);
  if (!fd) return Error{ErrorCode::kUnknownContainer, fd.error().message(), ""};
  auto pod = sys::Netlink::openIn(*fd);
  close(*fd);
  if (!pod) return Error{ErrorCode::kUnknownContainer, pod.error().message(), ""};
  if (!(*pod)->exists(inv.ifname)) return Error{ErrorCode::kUnknownContainer, fmt::format("{} is missing in {}", inv.ifname, inv.netns), ""};
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
      if (auto e = check(inv, ipam)) return fail(*e, inv.cniVersion);
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
