// hostPort mappings (the `portMappings` capability): every attachment's
// mappings are kept in a state file, and the nftables port map of Trellis's
// table is rebuilt from all of them in one transaction on each change — so
// DEL and GC leave exactly the mappings of the attachments that remain.
//
// A packet to a local address of the node on a mapped port (TCP or UDP) is
// DNATed to the pod, from outside (prerouting) and from the node itself
// (output).
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <boost/json/object.hpp>

#include "cni/plugin/ipam.h"
#include "cni/plugin/protocol.h"

namespace trellis::cni {

struct PortMapping {
  int hostPort = 0;
  int containerPort = 0;
  std::string protocol = "tcp";  // tcp, udp
};

// runtimeConfig.portMappings, honoured when capabilities.portMappings is
// true (as the runtime passes it). kInvalidConfig / kUnsupportedField
// errors name the entry.
std::variant<std::vector<PortMapping>, Error> parsePortMappings(const boost::json::object& config);

// Per-attachment state under <dir>: the pod's addresses and its mappings.
class PortMaps {
 public:
  PortMaps(std::string dir, std::string table);
  // Records (or replaces) the attachment's mappings and rebuilds the map.
  std::optional<Error> set(const Attachment& a, const std::vector<std::string>& podIps,
                           const std::vector<PortMapping>& mappings);
  // Forgets the attachment (no error if unknown) and rebuilds the map.
  std::optional<Error> remove(const Attachment& a);
  // Forgets every attachment not in `valid` and rebuilds the map.
  std::optional<Error> gc(const std::set<Attachment>& valid);

 private:
  std::optional<Error> rebuild();
  std::string dir_, table_;
};

}  // namespace trellis::cni
