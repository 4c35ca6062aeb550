#include "servicelb/translate.h"

#include <netinet/in.h>

#include <algorithm>
#include <string>

#include "common/base/ip.h"
#include "common/kube/object.h"

namespace trellis::servicelb {

std::vector<Entry> clusterIpEntries(const boost::json::object& svc,
                                    const std::vector<std::shared_ptr<const boost::json::object>>& slices) {
  std::vector<Entry> out;
  std::vector<uint32_t> vips;
  if (auto* ips = kube::array(svc, {"spec", "clusterIPs"})) {
    for (auto& v : *ips) {
      auto ip = v.is_string() ? base::parseIp(v.get_string()) : std::nullopt;
      if (ip && !ip->v6) vips.push_back(static_cast<uint32_t>(ip->value));
    }
  }
  auto* ports = kube::array(svc, {"spec", "ports"});
  if (vips.empty() || !ports) return out;
  for (auto& pv : *ports) {
    if (!pv.is_object()) continue;
    auto& p = pv.as_object();
    std::string_view proto = kube::str(p, {"protocol"});
    uint8_t ipProto = proto.empty() || proto == "TCP" ? IPPROTO_TCP : proto == "UDP" ? IPPROTO_UDP : 0;
    if (!ipProto) continue;  // SCTP: not balanced at the socket layer
    std::string_view name = kube::str(p, {"name"});
    std::vector<Backend> backends;
    for (auto& slice : slices) {
      if (kube::str(*slice, {"addressType"}) != "IPv4") continue;
      uint16_t port = 0;
      if (auto* sp = kube::array(*slice, {"ports"})) {
        for (auto& v : *sp) {
          if (v.is_object() && kube::str(v.as_object(), {"name"}) == name &&
              (kube::str(v.as_object(), {"protocol"}).empty() || kube::str(v.as_object(), {"protocol"}) == (proto.empty() ? "TCP" : proto)))
            port = static_cast<uint16_t>(kube::integer(v.as_object(), {"port"}));
        }
      }
      auto* eps = kube::array(*slice, {"endpoints"});
      if (!port || !eps) continue;
      for (auto& ev : *eps) {
        if (!ev.is_object() || !kube::boolean(ev.as_object(), {"conditions", "ready"}, true)) continue;
        auto* addrs = kube::array(ev.as_object(), {"addresses"});
        if (!addrs || addrs->empty() || !(*addrs)[0].is_string()) continue;
        auto ip = base::parseIp((*addrs)[0].get_string());
        if (ip && !ip->v6) backends.push_back({static_cast<uint32_t>(ip->value), port});
      }
    }
    std::sort(backends.begin(), backends.end(),
              [](const Backend& a, const Backend& b) { return std::tie(a.addr, a.port) < std::tie(b.addr, b.port); });
    backends.erase(std::unique(backends.begin(), backends.end(),
                               [](const Backend& a, const Backend& b) { return a.addr == b.addr && a.port == b.port; }),
                   backends.end());
    auto svcPort = static_cast<uint16_t>(kube::integer(p, {"port"}));
    for (uint32_t vip : vips) out.push_back({{vip, svcPort, ipProto}, backends});
  }
  return out;
}

}  // namespace trellis::servicelb
