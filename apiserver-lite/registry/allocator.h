// Service ClusterIP and NodePort allocation. Stateless over the stored
// Services: what is in use is read from them, plus reservations for creates
// still being written, so nothing is allocated twice and a deleted Service's
// addresses and ports are free again at once. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/base/result.h"

namespace trellis::apiserver::registry {

struct Ipv4Cidr {
  uint32_t network = 0;
  int prefix = 0;
  static base::Result<Ipv4Cidr> parse(std::string_view cidr);
  bool contains(uint32_t ip) const;
  uint32_t first() const { return network + 1; }  // reserved for the "kubernetes" Service
  uint32_t last() const;                          // the last usable address
};

std::optional<uint32_t> parseIpv4(std::string_view s);
std::string formatIpv4(uint32_t ip);

class ServiceAllocator {
 public:
  explicit ServiceAllocator(Ipv4Cidr range, int nodePortMin = 30000, int nodePortMax = 32767);

  // Addresses and nodePorts in use, each with how many Services hold it
  // (one, unless stored objects conflict).
  struct InUse {
    std::map<uint32_t, int> ips;
    std::map<int, int> nodePorts;
    void add(const InUse& other);
    void remove(const InUse& other);
  };
  // What the given Services use.
  static InUse collect(const std::vector<boost::json::object>& services);

  // Fills in spec.clusterIP(s) and nodePorts of a Service being created (or
  // updated, with `old`), checking given values; reserves what it took until
  // release() is called with the returned token. `inUse` is called under the
  // allocator's lock, so a reservation released meanwhile is already visible
  // in it. Errors: kInvalidArgument (a field error message, "spec.clusterIPs:
  // ..."), kResourceExhausted (a range is full).
  struct Reservation {
    std::optional<uint32_t> ip;
    std::vector<int> nodePorts;
  };
  base::Result<Reservation> allocate(boost::json::object& service, const boost::json::object* old,
                                     const std::function<const InUse&()>& inUse);
  void release(const Reservation& r);

  const Ipv4Cidr& range() const { return range_; }

 private:
  Ipv4Cidr range_;
  int portMin_, portMax_;
  std::mutex mu_;
  std::set<uint32_t> pendingIps_;
  std::multiset<int> pendingPorts_;
};

}  // namespace trellis::apiserver::registry
