// The plugin's own configuration keys (the network configuration beside
// "ipam"), parsed into values: names and CIDRs are checked and rendered
// again, never passed on as the text the configuration held.
//
// Keys (as the reference bridge plugin where they mean the same): bridge
// ("trellis0"), isGateway (true), hairpinMode (false), ipMasq (false),
// clusterCIDR (CIDR or list), nftTable ("trellis"), readyFile, mtu (0: the
// uplink's MTU minus the overlay's overhead), overlay ("vxlan" | "none").
#pragma once

#include <string>
#include <variant>
#include <vector>

#include <boost/json/object.hpp>

#include "cni/plugin/ipam.h"
#include "cni/plugin/protocol.h"

namespace trellis::cni {

struct NetConf {
  std::string bridge = "trellis0";
  bool isGateway = true;
  bool hairpin = false;
  bool ipMasq = false;
  int mtu = 0;             // 0 in the config: the uplink's MTU minus the overlay's overhead
  int overlayOverhead = 0;  // "overlay": "vxlan" -> 50 bytes
  std::vector<std::string> clusterCidrs;  // not masqueraded to (default: the IPAM subnets)
  std::string nftTable = "trellis";       // the nftables table (inet family) Trellis owns
  std::string readyFile;  // STATUS is not ready until it exists (trellis-cni-agent's first sync)
};

// kInvalidConfig errors name the key.
std::variant<NetConf, Error> parseNetConf(const boost::json::object& config);

// The "ipam" object, host-local's keys (the built-in IPAM takes them).
std::variant<IpamConfig, Error> ipamOf(const boost::json::object& config);

}  // namespace trellis::cni
