#include "common/linux/netlink.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/tbf.h>
#include <netlink/route/route.h>
#include <netlink/route/tc.h>
#include <sched.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <cstring>
#include <thread>
#include <utility>

namespace trellis::sys {

namespace {

base::Error nlError(int err, std::string_view what) {
  base::ErrorCode code = base::ErrorCode::kIo;
  if (err == -NLE_EXIST) code = base::ErrorCode::kAlreadyExists;
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) code = base::ErrorCode::kNotFound;
  if (err == -NLE_PERM) code = base::ErrorCode::kPermissionDenied;
  return base::Error(code, std::string(what) + ": " + nl_geterror(err));
}

// Owns one reference to a link object (move-only).
struct LinkPtr {
  rtnl_link* p = nullptr;
  LinkPtr() = default;
  LinkPtr(LinkPtr&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  LinkPtr& operator=(LinkPtr&& o) noexcept {
    std::swap(p, o.p);
    return *this;
  }
  LinkPtr(const LinkPtr&) = delete;
  LinkPtr& operator=(const LinkPtr&) = delete;
  ~LinkPtr() {
    if (p) rtnl_link_put(p);
  }
};

// A route object to `dst` (CIDR), family and destination set; the caller puts it.
base::Result<rtnl_route*> newRoute(const std::string& dst, int* family) {
  nl_addr* d = nullptr;
  int err = nl_addr_parse(dst.c_str(), AF_UNSPEC, &d);
  if (err < 0) return nlError(err, "route destination " + dst);
  rtnl_route* route = rtnl_route_alloc();
  *family = nl_addr_get_family(d);
  rtnl_route_set_family(route, static_cast<uint8_t>(*family));
  rtnl_route_set_dst(route, d);
  nl_addr_put(d);  // the route holds its own reference
  return route;
}

}  // namespace

struct Netlink::Impl {
  nl_sock* sock = nullptr;
  ~Impl() {
    if (sock) nl_socket_free(sock);
  }
  base::Result<LinkPtr> link(const std::string& name) {
    LinkPtr l;
    int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &l.p);
    if (err < 0) return nlError(err, "link " + name);
    return l;
  }
  base::Status change(const std::string& name, const std::function<void(rtnl_link*)>& edit, std::string_view what) {
    auto l = link(name);
    if (!l) return std::move(l).error();
    return change(rtnl_link_get_ifindex(l->p), edit, std::string(what) + " " + name);
  }
  // A change by index: no lookup first.
  base::Status change(int ifindex, const std::function<void(rtnl_link*)>& edit, std::string_view what) {
    LinkPtr orig, c;
    orig.p = rtnl_link_alloc();
    rtnl_link_set_ifindex(orig.p, ifindex);
    c.p = rtnl_link_alloc();
    edit(c.p);
    int err = rtnl_link_change(sock, orig.p, c.p, 0);
    if (err < 0) return nlError(err, std::string(what));
    return {};
  }
};

namespace {

// "aa:bb:..." of a link's hardware address ("" when it has none).
std::string macOf(rtnl_link* l) {
  nl_addr* a = rtnl_link_get_addr(l);
  if (!a) return {};
  char buf[64];
  nl_addr2str(a, buf, sizeof buf);
  return buf;
}

base::Status setAddr(rtnl_link* l, const std::string& mac) {
  if (mac.empty()) return {};
  nl_addr* a = nullptr;
  int err = nl_addr_parse(mac.c_str(), AF_LLC, &a);
  if (err < 0) return nlError(err, "MAC " + mac);
  rtnl_link_set_addr(l, a);
  nl_addr_put(a);
  return {};
}

// The calling thread's network namespace, entered for the life of this
// object: a socket made meanwhile stays in the entered one.
class EnterNetns {
 public:
  explicit EnterNetns(int target) : self_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
    if (self_ < 0) {
      error_ = base::Error::fromErrno(errno, "opening this thread's network namespace");
    } else if (setns(target, CLONE_NEWNET) != 0) {
      error_ = base::Error::fromErrno(errno, "setns");
    } else {
      entered_ = true;
    }
  }
  ~EnterNetns() {
    // Staying in the pod's namespace would misdirect everything after:
    // better to stop here.
    if (entered_ && setns(self_, CLONE_NEWNET) != 0) std::abort();
    if (self_ >= 0) ::close(self_);
  }
  EnterNetns(const EnterNetns&) = delete;
  EnterNetns& operator=(const EnterNetns&) = delete;
  const std::optional<base::Error>& error() const { return error_; }

 private:
  int self_;
  bool entered_ = false;
  std::optional<base::Error> error_;
};

}  // namespace

Netlink::Netlink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Netlink::~Netlink() = default;

base::Result<std::unique_ptr<Netlink>> Netlink::open() {
  auto impl = std::make_unique<Impl>();
  impl->sock = nl_socket_alloc();
  if (!impl->sock) return base::makeError(base::ErrorCode::kResourceExhausted, "nl_socket_alloc");
  int err = nl_connect(impl->sock, NETLINK_ROUTE);
  if (err < 0) return nlError(err, "connecting to rtnetlink");
  return std::unique_ptr<Netlink>(new Netlink(std::move(impl)));
}

base::Result<std::unique_ptr<Netlink>> Netlink::openIn(int netnsFd) {
  EnterNetns in(netnsFd);
  if (in.error()) return *in.error();
  return open();
}

base::Result<Netlink::Link> Netlink::link(const std::string& ifname) {
  auto l = impl_->link(ifname);
  if (!l) return std::move(l).error();
  return Link{ifname, rtnl_link_get_ifindex(l->p), macOf(l->p), (rtnl_link_get_flags(l->p) & IFF_UP) != 0,
              rtnl_link_get_master(l->p)};
}

bool Netlink::exists(const std::string& ifname) { return link(ifname).ok(); }

base::Result<int> Netlink::ifindex(const std::string& ifname) {
  auto l = link(ifname);
  if (!l) return std::move(l).error();
  return l->index;
}

base::Result<std::string> Netlink::mac(const std::string& ifname) {
  auto l = link(ifname);
  if (!l) return std::move(l).error();
  return l->mac;
}

base::Result<Netlink::Link> Netlink::ensureBridge(const std::string& name, int mtu, const std::string& mac) {
  auto have = link(name);
  if (have && have->up) return have;
  if (!have) {
    LinkPtr br;
    br.p = rtnl_link_bridge_alloc();
    rtnl_link_set_name(br.p, name.c_str());
    if (mtu > 0) rtnl_link_set_mtu(br.p, static_cast<unsigned>(mtu));
    if (auto st = setAddr(br.p, mac); !st) return std::move(st).error();
    int err = rtnl_link_add(impl_->sock, br.p, NLM_F_CREATE | NLM_F_EXCL);
    if (err < 0 && err != -NLE_EXIST) return nlError(err, "creating bridge " + name);  // EXIST: a concurrent ADD won
    // No duplicate address detection on the bridge: until DAD ends (a
    // second or two) its link-local address is tentative, and the kernel
    // cannot resolve neighbors for the IPv6 packets it forwards to pods.
    // (Before it comes up; no IPv6: nothing to do.)
    std::ofstream(fmt::format("/proc/sys/net/ipv6/conf/{}/accept_dad", name)) << "0";
  }
  if (auto st = setUp(name); !st) return std::move(st).error();
  return link(name);
}

base::Status Netlink::createVethPair(const VethPair& pair) {
  LinkPtr veth;
  veth.p = rtnl_link_veth_alloc();
  if (!veth.p) return base::makeError(base::ErrorCode::kResourceExhausted, "rtnl_link_veth_alloc");
  rtnl_link* peer = rtnl_link_veth_get_peer(veth.p);
  struct PutPeer {
    rtnl_link* p;
    ~PutPeer() { rtnl_link_put(p); }
  } putPeer{peer};
  rtnl_link_set_name(veth.p, pair.hostName.c_str());
  rtnl_link_set_name(peer, pair.peerName.c_str());
  if (pair.mtu > 0) {
    rtnl_link_set_mtu(veth.p, static_cast<unsigned>(pair.mtu));
    rtnl_link_set_mtu(peer, static_cast<unsigned>(pair.mtu));
  }
  if (auto st = setAddr(veth.p, pair.hostMac); !st) return st;
  if (auto st = setAddr(peer, pair.peerMac); !st) return st;
  if (pair.master > 0) rtnl_link_set_master(veth.p, pair.master);
  // Only the host end can come up in the same request: the kernel
  // configures the peer before the two ends are joined (ENOTCONN).
  rtnl_link_set_flags(veth.p, IFF_UP);
  if (pair.peerNetnsFd >= 0) rtnl_link_set_ns_fd(peer, pair.peerNetnsFd);
  int err = rtnl_link_add(impl_->sock, veth.p, NLM_F_CREATE | NLM_F_EXCL);
  if (err < 0) return nlError(err, "creating veth " + pair.hostName);
  return {};
}

base::Status Netlink::setMaster(const std::string& ifname, const std::string& master) {
  auto m = ifindex(master);
  if (!m) return std::move(m).error();
  int idx = *m;
  return impl_->change(ifname, [idx](rtnl_link* c) { rtnl_link_set_master(c, idx); }, "attaching to " + master);
}

base::Status Netlink::setTbf(const std::string& ifname, uint64_t rateBytes, uint32_t burstBytes, uint32_t limitBytes) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  if (rateBytes == 0 || rateBytes > 0x7fffffffu) return base::makeError(base::ErrorCode::kInvalidArgument, "tbf rate {} B/s out of range", rateBytes);
  rtnl_qdisc* q = rtnl_qdisc_alloc();
  if (!q) return base::Error(base::ErrorCode::kInternal, "allocating a qdisc");
  rtnl_tc_set_ifindex(TC_CAST(q), *idx);
  rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
  rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(1, 0));
  int err = rtnl_tc_set_kind(TC_CAST(q), "tbf");
  if (err >= 0) {
    rtnl_qdisc_tbf_set_limit(q, static_cast<int>(limitBytes));
    rtnl_qdisc_tbf_set_rate(q, static_cast<int>(rateBytes), static_cast<int>(burstBytes), 0);
    err = rtnl_qdisc_add(impl_->sock, q, NLM_F_CREATE | NLM_F_REPLACE);
  }
  rtnl_qdisc_put(q);
  if (err < 0) return nlError(err, "shaping " + ifname);
  return {};
}

base::Status Netlink::setUp(const std::string& ifname) {
  return impl_->change(ifname, [](rtnl_link* c) { rtnl_link_set_flags(c, IFF_UP); }, "setting up");
}

base::Status Netlink::setUp(int ifindex) {
  return impl_->change(ifindex, [](rtnl_link* c) { rtnl_link_set_flags(c, IFF_UP); }, fmt::format("setting up link {}", ifindex));
}

base::Status Netlink::setDown(int ifindex) {
  return impl_->change(ifindex, [](rtnl_link* c) { rtnl_link_unset_flags(c, IFF_UP); }, fmt::format("setting down link {}", ifindex));
}

base::Status Netlink::setMac(const std::string& ifname, const std::string& mac) {
  nl_addr* a = nullptr;
  int err = nl_addr_parse(mac.c_str(), AF_LLC, &a);
  if (err < 0) return nlError(err, "MAC " + mac);
  auto st = impl_->change(ifname, [a](rtnl_link* c) { rtnl_link_set_addr(c, a); }, "setting the MAC of");
  nl_addr_put(a);
  return st;
}

base::Status Netlink::rename(const std::string& ifname, const std::string& newName) {
  return impl_->change(ifname, [&newName](rtnl_link* c) { rtnl_link_set_name(c, newName.c_str()); }, "renaming");
}

base::Status Netlink::rename(int ifindex, const std::string& newName) {
  return impl_->change(ifindex, [&newName](rtnl_link* c) { rtnl_link_set_name(c, newName.c_str()); },
                       fmt::format("renaming link {} to {}", ifindex, newName));
}

base::Status Netlink::addAddress(const std::string& ifname, const std::string& cidr) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  if (auto st = addAddress(*idx, cidr); !st) return base::Error(st.error().code(), st.error().message() + " (" + ifname + ")");
  return {};
}

base::Status Netlink::addAddress(int ifindex, const std::string& cidr) {
  nl_addr* local = nullptr;
  int err = nl_addr_parse(cidr.c_str(), AF_UNSPEC, &local);
  if (err < 0) return nlError(err, "address " + cidr);
  rtnl_addr* addr = rtnl_addr_alloc();
  rtnl_addr_set_ifindex(addr, ifindex);
  rtnl_addr_set_local(addr, local);
  if (nl_addr_get_family(local) == AF_INET6) rtnl_addr_set_flags(addr, IFA_F_NODAD);
  err = rtnl_addr_add(impl_->sock, addr, 0);
  rtnl_addr_put(addr);
  nl_addr_put(local);
  if (err < 0 && err != -NLE_EXIST) return nlError(err, fmt::format("adding {} to link {}", cidr, ifindex));
  return {};
}

base::Status Netlink::addRoute(const std::string& dst, const std::string& gateway, const std::string& ifname) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  if (auto st = addRoute(dst, gateway, *idx); !st) return base::Error(st.error().code(), st.error().message() + " (" + ifname + ")");
  return {};
}

base::Status Netlink::addRoute(const std::string& dst, const std::string& gateway, int ifindex) {
  int family = 0;
  auto route = newRoute(dst, &family);
  if (!route) return std::move(route).error();
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, ifindex);
  nl_addr* gw = nullptr;
  if (!gateway.empty()) {
    int err = nl_addr_parse(gateway.c_str(), family, &gw);
    if (err < 0) {
      rtnl_route_nh_free(nh);
      rtnl_route_put(*route);
      return nlError(err, "gateway " + gateway);
    }
    rtnl_route_nh_set_gateway(nh, gw);
  } else {
    rtnl_route_set_scope(*route, RT_SCOPE_LINK);
  }
  rtnl_route_add_nexthop(*route, nh);
  int err = rtnl_route_add(impl_->sock, *route, NLM_F_CREATE);
  rtnl_route_put(*route);
  if (gw) nl_addr_put(gw);
  if (err < 0 && err != -NLE_EXIST) return nlError(err, "route to " + dst + (gateway.empty() ? "" : " via " + gateway));
  return {};
}

base::Status Netlink::deleteLink(const std::string& ifname) {
  auto l = impl_->link(ifname);
  if (!l) return std::move(l).error();
  int err = rtnl_link_delete(impl_->sock, l->p);
  if (err < 0) return nlError(err, "deleting " + ifname);
  return {};
}

base::Status Netlink::deleteLink(int ifindex) {
  LinkPtr l;
  l.p = rtnl_link_alloc();
  rtnl_link_set_ifindex(l.p, ifindex);
  int err = rtnl_link_delete(impl_->sock, l.p);
  if (err < 0) return nlError(err, fmt::format("deleting link {}", ifindex));
  return {};
}

base::Result<Netlink::LinkStats> Netlink::stats(const std::string& ifname) {
  auto l = impl_->link(ifname);
  if (!l) return std::move(l).error();
  LinkStats st;
  st.rxBytes = rtnl_link_get_stat(l->p, RTNL_LINK_RX_BYTES);
  st.rxPackets = rtnl_link_get_stat(l->p, RTNL_LINK_RX_PACKETS);
  st.rxDropped = rtnl_link_get_stat(l->p, RTNL_LINK_RX_DROPPED);
  st.txBytes = rtnl_link_get_stat(l->p, RTNL_LINK_TX_BYTES);
  st.txPackets = rtnl_link_get_stat(l->p, RTNL_LINK_TX_PACKETS);
  st.txDropped = rtnl_link_get_stat(l->p, RTNL_LINK_TX_DROPPED);
  return st;
}

base::Result<std::vector<Netlink::Link>> Netlink::linkList() {
  nl_cache* cache = nullptr;
  int err = rtnl_link_alloc_cache(impl_->sock, AF_UNSPEC, &cache);
  if (err < 0) return nlError(err, "listing links");
  std::vector<Link> out;
  for (nl_object* o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    const char* name = rtnl_link_get_name(l);
    out.push_back(Link{name ? name : "", rtnl_link_get_ifindex(l), macOf(l), (rtnl_link_get_flags(l) & IFF_UP) != 0,
                       rtnl_link_get_master(l)});
  }
  nl_cache_free(cache);
  return out;
}

base::Result<std::vector<std::string>> Netlink::links() {
  auto list = linkList();
  if (!list) return std::move(list).error();
  std::vector<std::string> out;
  for (const Link& l : *list) out.push_back(l.name);
  return out;
}

namespace {

// Routes of the main table that `keep` accepts: the destination as a CIDR
// ("0.0.0.0/0" or "::/0" for a default route) and the first next hop's gateway.
template <typename Keep>
base::Result<std::vector<Netlink::RouteEntry>> mainTableRoutes(nl_sock* sock, Keep keep) {
  nl_cache* cache = nullptr;
  int err = rtnl_route_alloc_cache(sock, AF_UNSPEC, 0, &cache);
  if (err < 0) return nlError(err, "listing routes");
  std::vector<Netlink::RouteEntry> out;
  for (nl_object* o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
    auto* r = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_table(r) != RT_TABLE_MAIN || !keep(r)) continue;
    bool v6 = rtnl_route_get_family(r) == AF_INET6;
    char dst[128] = "", gw[128] = "";
    nl_addr* d = rtnl_route_get_dst(r);
    if (d && nl_addr_get_len(d) > 0) {
      nl_addr2str(d, dst, sizeof dst);
    } else {
      std::snprintf(dst, sizeof dst, "%s", v6 ? "::/0" : "0.0.0.0/0");
    }
    if (rtnl_route_get_nnexthops(r) > 0) {
      if (nl_addr* g = rtnl_route_nh_get_gateway(rtnl_route_nexthop_n(r, 0))) nl_addr2str(g, gw, sizeof gw);
    }
    std::string text(dst);
    if (text.find('/') == std::string::npos) text += v6 ? "/128" : "/32";
    out.push_back({text, gw});
  }
  nl_cache_free(cache);
  return out;
}

}  // namespace

base::Result<std::vector<Netlink::RouteEntry>> Netlink::routes(int protocol) {
  return mainTableRoutes(impl_->sock, [&](rtnl_route* r) { return rtnl_route_get_protocol(r) == protocol; });
}

base::Status Netlink::replaceRoute(const std::string& dst, const std::string& gw, int protocol, const std::string& ifname) {
  int link = 0;
  if (!ifname.empty()) {
    auto idx = ifindex(ifname);
    if (!idx) return std::move(idx).error();
    link = *idx;
  }
  int family = 0;
  auto route = newRoute(dst, &family);
  if (!route) return std::move(route).error();
  nl_addr* g = nullptr;
  int err = nl_addr_parse(gw.c_str(), family, &g);
  if (err < 0) {
    rtnl_route_put(*route);
    return nlError(err, "gateway " + gw);
  }
  rtnl_route_set_protocol(*route, static_cast<uint8_t>(protocol));
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_gateway(nh, g);
  if (link) {
    rtnl_route_nh_set_ifindex(nh, link);
    rtnl_route_nh_set_flags(nh, RTNH_F_ONLINK);
  }
  rtnl_route_add_nexthop(*route, nh);
  err = rtnl_route_add(impl_->sock, *route, NLM_F_CREATE | NLM_F_REPLACE);
  rtnl_route_put(*route);
  nl_addr_put(g);
  if (err < 0) return nlError(err, "route to " + dst + " via " + gw);
  return {};
}

base::Result<std::vector<std::string>> Netlink::addresses(int ifindex) {
  nl_cache* cache = nullptr;
  int err = rtnl_addr_alloc_cache(impl_->sock, &cache);
  if (err < 0) return nlError(err, "listing addresses");
  std::vector<std::string> out;
  for (nl_object* o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    nl_addr* local = rtnl_addr_get_local(a);
    if (rtnl_addr_get_ifindex(a) != ifindex || !local) continue;
    char buf[128];
    nl_addr2str(local, buf, sizeof buf);  // "a.b.c.d/len"
    std::string text(buf);
    if (text.find('/') == std::string::npos) text += "/" + std::to_string(rtnl_addr_get_prefixlen(a));
    out.push_back(text);
  }
  nl_cache_free(cache);
  return out;
}

base::Result<std::vector<Netlink::RouteEntry>> Netlink::linkRoutes(int ifindex) {
  return mainTableRoutes(impl_->sock, [&](rtnl_route* r) {
    return rtnl_route_get_nnexthops(r) > 0 && rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(r, 0)) == ifindex;
  });
}

base::Result<bool> Netlink::connected(const std::string& ip) {
  nl_addr* target = nullptr;
  int err = nl_addr_parse(ip.c_str(), AF_UNSPEC, &target);
  if (err < 0) return nlError(err, "address " + ip);
  nl_cache* cache = nullptr;
  err = rtnl_addr_alloc_cache(impl_->sock, &cache);
  if (err < 0) {
    nl_addr_put(target);
    return nlError(err, "listing addresses");
  }
  bool found = false;
  for (nl_object* o = nl_cache_get_first(cache); o && !found; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    nl_addr* local = rtnl_addr_get_local(a);
    int prefix = rtnl_addr_get_prefixlen(a);
    if (!local || nl_addr_get_family(local) != nl_addr_get_family(target)) continue;
    int maxBits = static_cast<int>(nl_addr_get_len(local)) * 8;
    if (prefix <= 0 || prefix >= maxBits) continue;  // host routes share no subnet
    nl_addr* probe = nl_addr_clone(local);
    nl_addr_set_prefixlen(probe, prefix);
    found = nl_addr_cmp_prefix(probe, target) == 0;  // the first `prefix` bits agree
    nl_addr_put(probe);
  }
  nl_cache_free(cache);
  nl_addr_put(target);
  return found;
}

base::Status Netlink::ensureVxlan(const std::string& name, uint32_t vni, const std::string& localIp, int port, int mtu) {
  if (!exists(name)) {
    LinkPtr vx;
    vx.p = rtnl_link_vxlan_alloc();
    rtnl_link_set_name(vx.p, name.c_str());
    rtnl_link_vxlan_set_id(vx.p, vni);
    nl_addr* local = nullptr;
    int err = nl_addr_parse(localIp.c_str(), AF_UNSPEC, &local);
    if (err < 0) return nlError(err, "VXLAN local address " + localIp);
    rtnl_link_vxlan_set_local(vx.p, local);
    nl_addr_put(local);
    rtnl_link_vxlan_set_port(vx.p, static_cast<uint32_t>(port));
    rtnl_link_vxlan_set_learning(vx.p, 0);
    if (mtu > 0) rtnl_link_set_mtu(vx.p, static_cast<unsigned>(mtu));
    err = rtnl_link_add(impl_->sock, vx.p, NLM_F_CREATE | NLM_F_EXCL);
    if (err < 0 && err != -NLE_EXIST) return nlError(err, "creating VXLAN device " + name);
  }
  return setUp(name);
}

namespace {

// A neighbor (or, for AF_BRIDGE, forwarding) entry object: `ip` at `mac`
// on `ifindex`; the caller puts it.
base::Result<rtnl_neigh*> makeNeigh(int ifindex, int family, const std::string& ip, const std::string& mac,
                                    std::string_view what) {
  nl_addr* dst = nullptr;
  nl_addr* ll = nullptr;
  int err = nl_addr_parse(ip.c_str(), AF_UNSPEC, &dst);
  if (err < 0) return nlError(err, std::string(what) + " address " + ip);
  err = nl_addr_parse(mac.c_str(), AF_LLC, &ll);
  if (err < 0) {
    nl_addr_put(dst);
    return nlError(err, std::string(what) + " MAC " + mac);
  }
  rtnl_neigh* n = rtnl_neigh_alloc();
  rtnl_neigh_set_ifindex(n, ifindex);
  rtnl_neigh_set_dst(n, dst);         // first: it refuses an address of another family than one already set
  rtnl_neigh_set_family(n, family);  // AF_BRIDGE for a forwarding entry
  rtnl_neigh_set_lladdr(n, ll);
  rtnl_neigh_set_state(n, NUD_PERMANENT);
  if (family == AF_BRIDGE) rtnl_neigh_set_flags(n, NTF_SELF);
  nl_addr_put(dst);
  nl_addr_put(ll);
  return n;
}

base::Status addNeigh(nl_sock* sock, int ifindex, int family, const std::string& ip, const std::string& mac,
                      std::string_view what) {
  auto n = makeNeigh(ifindex, family, ip, mac, what);
  if (!n) return std::move(n).error();
  int err = rtnl_neigh_add(sock, *n, NLM_F_CREATE | (family == AF_BRIDGE ? NLM_F_APPEND : NLM_F_REPLACE));
  rtnl_neigh_put(*n);
  if (err < 0 && err != -NLE_EXIST) return nlError(err, std::string(what) + " " + ip + " at " + mac);
  return {};
}

}  // namespace

base::Status Netlink::setNeighbor(const std::string& ifname, const std::string& ip, const std::string& mac) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  return addNeigh(impl_->sock, *idx, ip.find(':') != std::string::npos ? AF_INET6 : AF_INET, ip, mac, "neighbor");
}

base::Status Netlink::setFdb(const std::string& ifname, const std::string& mac, const std::string& dstIp) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  return addNeigh(impl_->sock, *idx, AF_BRIDGE, dstIp, mac, "forwarding entry");
}

base::Result<std::vector<Netlink::NeighborEntry>> Netlink::permanentNeighbors(const std::string& ifname) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  nl_cache* cache = nullptr;
  // Every family in turn (AF_UNSPEC covers ARP and NDP, AF_BRIDGE the
  // forwarding databases).
  int err = rtnl_neigh_alloc_cache_flags(impl_->sock, &cache, NL_CACHE_AF_ITER);
  if (err < 0) return nlError(err, "listing neighbors");
  std::vector<NeighborEntry> out;
  for (nl_object* o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
    auto* n = reinterpret_cast<rtnl_neigh*>(o);
    if (rtnl_neigh_get_ifindex(n) != *idx) continue;
    if (!(rtnl_neigh_get_state(n) & NUD_PERMANENT)) continue;
    char ip[128] = "", mac[64] = "";
    if (nl_addr* d = rtnl_neigh_get_dst(n)) nl_addr2str(d, ip, sizeof ip);
    if (nl_addr* l = rtnl_neigh_get_lladdr(n)) nl_addr2str(l, mac, sizeof mac);
    out.push_back({rtnl_neigh_get_family(n), ip, mac});
  }
  nl_cache_free(cache);
  return out;
}

base::Status Netlink::deleteNeighbor(const std::string& ifname, int family, const std::string& ip, const std::string& mac) {
  auto idx = ifindex(ifname);
  if (!idx) return std::move(idx).error();
  auto n = makeNeigh(*idx, family, ip, mac, family == AF_BRIDGE ? "forwarding entry" : "neighbor");
  if (!n) return std::move(n).error();
  int err = rtnl_neigh_delete(impl_->sock, *n, 0);
  rtnl_neigh_put(*n);
  if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NOADDR) return nlError(err, "deleting " + ip + " at " + mac);
  return {};
}

base::Status Netlink::deleteRoute(const std::string& dst, int protocol) {
  int family = 0;
  auto route = newRoute(dst, &family);
  if (!route) return std::move(route).error();
  rtnl_route_set_protocol(*route, static_cast<uint8_t>(protocol));
  rtnl_route_set_table(*route, RT_TABLE_MAIN);
  rtnl_route_set_scope(*route, RT_SCOPE_NOWHERE);  // any scope
  int err = rtnl_route_delete(impl_->sock, *route, 0);
  rtnl_route_put(*route);
  if (err < 0) return nlError(err, "deleting the route to " + dst);
  return {};
}

base::Result<int> openNetns(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return base::Error(e == ENOENT ? base::ErrorCode::kNotFound : base::ErrorCode::kIo,
                       "network namespace " + path + ": " + std::strerror(e));
  }
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0 || (fs.f_type != static_cast<decltype(fs.f_type)>(NSFS_MAGIC) &&
                                fs.f_type != static_cast<decltype(fs.f_type)>(PROC_SUPER_MAGIC))) {
    ::close(fd);
    return base::makeError(base::ErrorCode::kInvalidArgument, "{} is not a network namespace", path);
  }
  return fd;
}

base::Status inNetns(const std::string& path, const std::function<base::Status()>& fn) {
  auto fd = openNetns(path);
  if (!fd) return std::move(fd).error();
  base::Status result;
  std::thread t([&] {
    if (setns(*fd, CLONE_NEWNET) != 0) {
      result = base::Error::fromErrno(errno, "setns " + path);
      return;
    }
    result = fn();
  });
  t.join();
  ::close(*fd);
  return result;
}

}  // namespace trellis::sys
