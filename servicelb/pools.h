// LoadBalancer address pools and who holds which address: the pure half of
// trellis-servicelb's LoadBalancer support (the daemon feeds it Services and
// the ConfigMap, and writes what it decides to status and Events).
//
// Pools come from the ConfigMap `trellis-servicelb` in `trellis-system`, key
// `pools`: a YAML mapping of pool name to a CIDR, a range "a.b.c.d-a.b.c.e",
// or a list of them (`default: 10.250.79.0/28` is a whole valid value).
// Every address of a CIDR or range is given out, as MetalLB does by default.
// Pool `default` serves Services that name none.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/ip.h"
#include "common/base/result.h"

namespace trellis::servicelb {

struct IpRange {
  base::IpAddr first, last;  // inclusive, one family
  bool contains(const base::IpAddr& a) const { return a.v6 == first.v6 && a.value >= first.value && a.value <= last.value; }
};

struct Pool {
  std::string name;
  std::vector<IpRange> ranges;
  bool contains(const base::IpAddr& a) const;
};

// Parses the `pools` value. Errors (kInvalidArgument) name the pool and the
// value at fault; pools that overlap are an error too.
base::Result<std::vector<Pool>> parsePools(std::string_view yaml);

constexpr const char* kDefaultPool = "default";

struct AddressRequest {
  std::string pool;                   // "" → kDefaultPool
  std::vector<base::IpAddr> wanted;  // spec.loadBalancerIP / trellis.dev/load-balancer-ips; empty: any
};

// Who holds which address. An address is never held by two Services.
class Allocator {
 public:
  void setPools(std::vector<Pool> pools);
  const std::vector<Pool>& pools() const { return pools_; }

  // Gives `service` addresses for `request`: the ones it holds when they still
  // satisfy the request, else the wanted ones, else the lowest free address
  // of the pool. Errors (an Event's message): kNotFound (no such pool),
  // kInvalidArgument (a wanted address outside the pool), kAlreadyExists
  // (held by another Service), kResourceExhausted (the pool is full). On an
  // error the Service keeps nothing.
  base::Result<std::vector<base::IpAddr>> assign(const std::string& service, const AddressRequest& request);
  // What a Service holds already (its status, read back after a restart) is
  // taken back when it satisfies the request; false when it does not (held by
  // another, outside the pool) — then assign() decides afresh.
  bool adopt(const std::string& service, const std::vector<base::IpAddr>& held, const AddressRequest& request);
  void release(const std::string& service);

  std::optional<std::string> holder(const base::IpAddr& a) const;
  const std::vector<base::IpAddr>* held(const std::string& service) const;

 private:
  const Pool* pool(const std::string& name) const;
  bool satisfies(const std::vector<base::IpAddr>& addrs, const Pool& pool, const AddressRequest& request) const;

  std::vector<Pool> pools_;
  std::map<std::pair<bool, base::u128>, std::string> holders_;  // (v6, address) -> service
  std::map<std::string, std::vector<base::IpAddr>> held_;
};

}  // namespace trellis::servicelb
