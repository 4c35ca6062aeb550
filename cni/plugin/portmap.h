// hostPort mappings (the `portMappings` capability). Each attachment's
// mappings are kept in a state file under <dir>, written before its map
// elements are added and removed after they are deleted, so the elements in
// the kernel are always a subset of the state files: DEL, a repeated DEL
// after a crash, and GC leave exactly the mappings of the attachments that
// remain. Per pod this is a state file and one nfnetlink batch of map
// elements; the maps and chains themselves are NodeRules'.
//
// A packet to a local address of the node on a mapped port (TCP or UDP) is
// DNATed to the pod, from outside (prerouting) and from the node itself
// (output). A hostPort already mapped to another pod is an error.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <boost/json/object.hpp>

#include "cni/plugin/ipam.h"
#include "cni/plugin/protocol.h"
#include "common/linux/nft_netlink.h"

namespace trellis::cni {

struct PortMapping {
  int hostPort = 0;
  int containerPort = 0;
  std::string protocol = "tcp";  // tcp, udp
  bool operator==(const PortMapping&) const = default;
};

// runtimeConfig.portMappings, honoured when capabilities.portMappings is
// true (as the runtime passes it). kInvalidConfig / kUnsupportedField
// errors name the entry.
std::variant<std::vector<PortMapping>, Error> parsePortMappings(const boost::json::object& config);

// What an attachment's state file holds.
struct PortState {
  std::vector<std::string> podIps;
  std::vector<PortMapping> mappings;
};

class PortMaps {
 public:
  PortMaps(std::string dir, std::string table);
  // Records (or replaces) the attachment's mappings and maps them.
  std::optional<Error> set(sys::NftNetlink& nl, const Attachment& a, const std::vector<std::string>& podIps,
                           const std::vector<PortMapping>& mappings);
  // Unmaps and forgets the attachment (no error if unknown).
  std::optional<Error> remove(const Attachment& a);
  // Unmaps and forgets every attachment not in `valid`.
  std::optional<Error> gc(const std::set<Attachment>& valid);
  // Maps every recorded attachment again (after NodeRules made the maps anew).
  std::optional<Error> restoreAll(sys::NftNetlink& nl);
  // The attachment's recorded state (CHECK), if any.
  std::optional<PortState> recorded(const Attachment& a) const;
  // The map elements of a state, by map name (hostports4 / hostports6).
  static std::vector<std::pair<std::string, sys::NftElement>> elementsOf(const PortState& s);

 private:
  std::optional<Error> unmap(sys::NftNetlink& nl, const PortState& s);
  std::string dir_, table_;
};

}  // namespace trellis::cni
