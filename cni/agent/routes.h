// host-gw routing for trellis-cni-agent: every other node's pod CIDR routed
// via that node's address. Level-triggered: reconcileRoutes() makes the
// routes Trellis owns (tagged with its routing protocol number) exactly the
// wanted set — adding, replacing and removing — and never touches routes
// it does not own.
#pragma once

#include <string>
#include <vector>

#include "common/base/result.h"
#include "common/linux/netlink.h"

namespace trellis::cni {

// The routing protocol number Trellis's routes carry (`ip route ... proto 77`).
inline constexpr int kRouteProtocol = 77;

struct PeerRoute {
  std::string podCidr;  // the other node's spec.podCIDRs entry
  std::string nodeIp;   // the next hop: its InternalIP (host-gw) or its VXLAN endpoint address
  std::string dev;      // "" (host-gw), or the VXLAN device the next hop is on-link through
};

struct RouteChanges {
  int added = 0, replaced = 0, removed = 0;
};

base::Result<RouteChanges> reconcileRoutes(sys::Netlink& nl, const std::vector<PeerRoute>& want,
                                           int protocol = kRouteProtocol);

}  // namespace trellis::cni
