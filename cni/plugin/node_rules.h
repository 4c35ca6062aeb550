// The node-wide nftables objects of trellis-cni, in its own table
// (inet <nftTable>):
//   masquerade   sets masq4/masq6 (pod subnets), cluster4/cluster6 (not
//                masqueraded to) and chain postrouting;
//   hostPorts    maps hostports4/hostports6 (proto . port : pod ip . port)
//                and chains prerouting/output (DNAT to local addresses).
// They are made by the first ADD on a node in one libnftables transaction
// and found present afterwards with a cheap lookup: a stamp file per
// (table, network namespace, what was asked for), in the network's IPAM
// directory, holds the table's handle, and one nfnetlink GET of that table
// confirms the table is still the one the stamp describes (a reboot, `nft
// flush ruleset` or a deleted table gives another handle or none, and the
// objects are made again).
// Per pod, only map elements change (PortMaps), through nfnetlink.
#pragma once

#include <string>
#include <vector>

#include "common/base/result.h"
#include "common/linux/nft_netlink.h"

namespace trellis::cni {

struct NodeRulesWanted {
  bool masquerade = false;
  std::vector<std::string> podSubnets;    // canonical CIDRs
  std::vector<std::string> clusterCidrs;  // canonical CIDRs; empty: the pod subnets
};

class NodeRules {
 public:
  // Stamps live in `stampDir` (the network's IPAM directory).
  NodeRules(std::string table, std::string stampDir);

  // Makes sure the objects exist with `wanted`; `made` tells whether they
  // were (re)made now, in which case the caller re-adds its elements.
  base::Status ensure(sys::NftNetlink& nl, const NodeRulesWanted& wanted, bool* made);
  const std::string& table() const { return table_; }

 private:
  std::string stampPath(const NodeRulesWanted& wanted) const;
  std::string table_, stampDir_;
};

}  // namespace trellis::cni
