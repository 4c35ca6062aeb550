// What the socket load balancer is told for one Service (pure): each IPv4
// ClusterIP × TCP/UDP port, with the ready endpoints of its EndpointSlices on
// the port of the same name, in a stable order.
#pragma once

#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#include <boost/json/object.hpp>

#include "servicelb/sock_lb.h"

namespace trellis::servicelb {

struct Frontend {
  uint32_t addr = 0;  // host order
  uint16_t port = 0;
  uint8_t proto = 0;
  bool operator<(const Frontend& o) const { return std::tie(addr, port, proto) < std::tie(o.addr, o.port, o.proto); }
  bool operator==(const Frontend&) const = default;
};

struct Entry {
  Frontend frontend;
  std::vector<Backend> backends;  // sorted by address, then port
};

std::vector<Entry> clusterIpEntries(const boost::json::object& service,
                                    const std::vector<std::shared_ptr<const boost::json::object>>& slices);

}  // namespace trellis::servicelb
