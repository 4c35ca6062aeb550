#include "apiserver-lite/registry/allocator.h"

#include <arpa/inet.h>

#include <algorithm>

#include <boost/json/array.hpp>
#include <fmt/format.h>

#include "common/base/numbers.h"

namespace trellis::apiserver::registry {

namespace json = boost::json;
using base::ErrorCode;
using base::makeError;

std::optional<uint32_t> parseIpv4(std::string_view s) {
  in_addr a;
  std::string str(s);
  if (inet_pton(AF_INET, str.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::string formatIpv4(uint32_t ip) {
  return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

base::Result<Ipv4Cidr> Ipv4Cidr::parse(std::string_view cidr) {
  size_t slash = cidr.find('/');
  auto ip = parseIpv4(cidr.substr(0, slash));
  int prefix = -1;
  if (slash != std::string_view::npos) {
    if (auto p = base::parseInt(cidr.substr(slash + 1), 0, 32, "prefix")) prefix = static_cast<int>(*p);
  }
  if (!ip || prefix < 8 || prefix > 30) {
    return makeError(ErrorCode::kInvalidArgument, "invalid service CIDR {:?}: want an IPv4 a.b.c.d/8..30", cidr);
  }
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t(0) << (32 - prefix);
  return Ipv4Cidr{*ip & mask, prefix};
}

bool Ipv4Cidr::contains(uint32_t ip) const {
  uint32_t mask = ~uint32_t(0) << (32 - prefix);
  return (ip & mask) == network;
}

uint32_t Ipv4Cidr::last() const { return (network | ~(~uint32_t(0) << (32 - prefix))) - 1; }

ServiceAllocator::ServiceAllocator(Ipv4Cidr range, int nodePortMin, int nodePortMax)
    : range_(range), portMin_(nodePortMin), portMax_(nodePortMax) {}

namespace {

std::string getString(const json::object& o, std::string_view k) {
  auto it = o.find(k);
  return it != o.end() && it->value().is_string() ? std::string(it->value().as_string()) : std::string();
}

json::object* specOf(json::object& svc) {
  json::value& v = svc["spec"];
  if (v.is_null()) v = json::object();
  return v.is_object() ? &v.as_object() : nullptr;
}

const json::object* specOf(const json::object& svc) {
  auto it = svc.find("spec");
  return it != svc.end() && it->value().is_object() ? &it->value().as_object() : nullptr;
}

}  // namespace

void ServiceAllocator::InUse::add(const InUse& other) {
  for (auto [ip, n] : other.ips) ips[ip] += n;
  for (auto [port, n] : other.nodePorts) nodePorts[port] += n;
}

void ServiceAllocator::InUse::remove(const InUse& other) {
  for (auto [ip, n] : other.ips) {
    auto it = ips.find(ip);
    if (it != ips.end() && (it->second -= n) <= 0) ips.erase(it);
  }
  for (auto [port, n] : other.nodePorts) {
    auto it = nodePorts.find(port);
    if (it != nodePorts.end() && (it->second -= n) <= 0) nodePorts.erase(it);
  }
}

ServiceAllocator::InUse ServiceAllocator::collect(const std::vector<json::object>& services) {
  InUse u;
  for (const json::object& s : services) {
    const json::object* spec = specOf(s);
    if (!spec) continue;
    if (auto ip = parseIpv4(getString(*spec, "clusterIP"))) ++u.ips[*ip];
    auto ports = spec->find("ports");
    if (ports == spec->end() || !ports->value().is_array()) continue;
    for (const json::value& p : ports->value().as_array()) {
      if (!p.is_object()) continue;
      auto np = p.as_object().find("nodePort");
      if (np != p.as_object().end() && np->value().is_int64()) ++u.nodePorts[static_cast<int>(np->value().as_int64())];
    }
  }
  return u;
}

base::Result<ServiceAllocator::Reservation> ServiceAllocator::allocate(json::object& svc, const json::object* old,
                                                                      const std::function<const InUse&()>& inUse) {
  std::lock_guard g(mu_);
  const InUse& used = inUse();
  json::object* spec = specOf(svc);
  if (!spec) return makeError(ErrorCode::kInvalidArgument, "spec: Invalid value: must be an object");
  const json::object* oldSpec = old ? specOf(*old) : nullptr;
  std::string type = getString(*spec, "type");
  if (type.empty()) {
    type = "ClusterIP";
    (*spec)["type"] = type;
  }
  if (type != "ClusterIP" && type != "NodePort" && type != "LoadBalancer" && type != "ExternalName") {
    return makeError(ErrorCode::kInvalidArgument,
                     "spec.type: Unsupported value: {:?}: supported values: \"ClusterIP\", \"ExternalName\", "
                     "\"LoadBalancer\", \"NodePort\"", type);
  }
  Reservation res;
  // ClusterIP: immutable once set.
  std::string ip = getString(*spec, "clusterIP");
  std::string oldIp = oldSpec ? getString(*oldSpec, "clusterIP") : "";
  if (old) {
    if (ip.empty()) ip = oldIp;
    if (ip != oldIp) return makeError(ErrorCode::kInvalidArgument, "spec.clusterIPs[0]: Invalid value: {:?}: may not change once set", ip);
  } else if (type != "ExternalName" && ip != "None") {
    if (ip.empty()) {
      for (uint32_t a = range_.first() + 1; a <= range_.last(); ++a) {
        if (!used.ips.count(a) && !pendingIps_.count(a)) {
          res.ip = a;
          break;
        }
      }
      if (!res.ip) return makeError(ErrorCode::kResourceExhausted, "spec.clusterIPs: Internal error: range is full");
      ip = formatIpv4(*res.ip);
    } else {
      auto want = parseIpv4(ip);
      if (!want) return makeError(ErrorCode::kInvalidArgument, "spec.clusterIPs[0]: Invalid value: {:?}: must be a valid IP address", ip);
      if (!range_.contains(*want) || *want <= range_.network || *want > range_.last()) {
        return makeError(ErrorCode::kInvalidArgument,
                         "spec.clusterIPs: Invalid value: [{:?}]: failed to allocate IP {}: the provided IP ({}) is not in "
                         "the valid range. The range of valid IPs is {}/{}", ip, ip, ip, formatIpv4(range_.network), range_.prefix);
      }
      if (used.ips.count(*want) || pendingIps_.count(*want)) {
        return makeError(ErrorCode::kInvalidArgument,
                         "spec.clusterIPs: Invalid value: [{:?}]: failed to allocate IP {}: provided IP is already allocated", ip, ip);
      }
      res.ip = *want;
    }
  }
  if (!ip.empty()) {
    (*spec)["clusterIP"] = ip;
    (*spec)["clusterIPs"] = json::array{json::value(ip)};
    if (ip != "None") {
      (*spec)["ipFamilies"] = json::array{"IPv4"};
      (*spec)["ipFamilyPolicy"] = "SingleStack";
    }
  }
  if (!spec->contains("sessionAffinity")) (*spec)["sessionAffinity"] = "None";
  if (type != "ExternalName" && !spec->contains("internalTrafficPolicy")) (*spec)["internalTrafficPolicy"] = "Cluster";
  // Ports: protocol and targetPort defaults; nodePorts for NodePort and LoadBalancer.
  bool wantNodePorts = type == "NodePort" || type == "LoadBalancer";
  std::set<int> oldPorts;
  if (oldSpec) {
    if (auto it = oldSpec->find("ports"); it != oldSpec->end() && it->value().is_array()) {
      for (const json::value& p : it->value().as_array()) {
        if (p.is_object()) {
          if (auto np = p.as_object().find("nodePort"); np != p.as_object().end() && np->value().is_int64()) {
            oldPorts.insert(static_cast<int>(np->value().as_int64()));
          }
        }
      }
    }
  }
  auto portsIt = spec->find("ports");
  if (portsIt != spec->end() && portsIt->value().is_array()) {
    json::array& ports = portsIt->value().as_array();
    std::set<int> taken;
    for (size_t i = 0; i < ports.size(); ++i) {
      if (!ports[i].is_object()) continue;
      json::object& p = ports[i].as_object();
      if (!p.contains("protocol")) p["protocol"] = "TCP";
      if (!p.contains("targetPort") && p.contains("port")) p["targetPort"] = p["port"];
      auto np = p.find("nodePort");
      if (!wantNodePorts) {
        if (np != p.end()) p.erase("nodePort");
        continue;
      }
      if (np != p.end() && np->value().is_int64()) {
        int want = static_cast<int>(np->value().as_int64());
        if (want < portMin_ || want > portMax_) {
          return makeError(ErrorCode::kInvalidArgument,
                           "spec.ports[{}].nodePort: Invalid value: {}: provided port is not in the valid range. The "
                           "range of valid ports is {}-{}", i, want, portMin_, portMax_);
        }
        bool mine = oldPorts.count(want) > 0;
        if (!mine && (used.nodePorts.count(want) || pendingPorts_.count(want) || taken.count(want))) {
          return makeError(ErrorCode::kInvalidArgument, "spec.ports[{}].nodePort: Invalid value: {}: provided port is already allocated", i, want);
        }
        taken.insert(want);
        if (!mine) res.nodePorts.push_back(want);
        continue;
      }
      int got = 0;
      for (int candidate = portMin_; candidate <= portMax_; ++candidate) {
        if (!used.nodePorts.count(candidate) && !pendingPorts_.count(candidate) && !taken.count(candidate)) {
          got = candidate;
          break;
        }
      }
      if (!got) return makeError(ErrorCode::kResourceExhausted, "spec.ports[{}].nodePort: Internal error: range is full", i);
      p["nodePort"] = got;
      taken.insert(got);
      res.nodePorts.push_back(got);
    }
  }
  if (res.ip) pendingIps_.insert(*res.ip);
  for (int p : res.nodePorts) pendingPorts_.insert(p);
  return res;
}

void ServiceAllocator::release(const Reservation& r) {
  std::lock_guard g(mu_);
  if (r.ip) pendingIps_.erase(*r.ip);
  for (int p : r.nodePorts) {
    auto it = pendingPorts_.find(p);
    if (it != pendingPorts_.end()) pendingPorts_.erase(it);
  }
}

}  // namespace trellis::apiserver::registry
