#include "cni/agent/routes.h"

#include <map>

namespace trellis::cni {

base::Result<RouteChanges> reconcileRoutes(sys::Netlink& nl, const std::vector<PeerRoute>& want, int protocol) {
  auto have = nl.routes(protocol);
  if (!have) return std::move(have).error();
  std::map<std::string, std::string> current;  // dst -> gw
  for (const auto& r : *have) current[r.dst] = r.gw;
  std::map<std::string, std::string> wanted, devs;
  for (const PeerRoute& p : want) {
    wanted[p.podCidr] = p.nodeIp;
    devs[p.podCidr] = p.dev;
  }
  RouteChanges c;
  for (const auto& [dst, gw] : wanted) {
    auto it = current.find(dst);
    if (it != current.end() && it->second == gw) continue;
    if (auto st = nl.replaceRoute(dst, gw, protocol, devs[dst]); !st) return std::move(st).error();
    ++(it == current.end() ? c.added : c.replaced);
  }
  for (const auto& [dst, gw] : current) {
    if (wanted.count(dst)) continue;
    auto st = nl.deleteRoute(dst, protocol);
    if (!st && st.error().code() != base::ErrorCode::kNotFound) return std::move(st).error();
    ++c.removed;
  }
  return c;
}

}  // namespace trellis::cni
