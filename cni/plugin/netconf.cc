#include "cni/plugin/netconf.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/base/ip.h"

namespace trellis::cni {

namespace json = boost::json;

namespace {

// The MTU of the interface the IPv4 default route leaves by (1500 when
// there is none).
int uplinkMtu() {
  std::ifstream routes("/proc/net/route");
  std::string line;
  std::getline(routes, line);  // header
  while (std::getline(routes, line)) {
    std::istringstream fields(line);
    std::string ifname, dst;
    fields >> ifname >> dst;
    if (dst != "00000000") continue;
    std::ifstream mtu("/sys/class/net/" + ifname + "/mtu");
    int value = 0;
    if (mtu >> value && value >= 576) return value;
  }
  return 1500;
}

}  // namespace

std::variant<NetConf, Error> parseNetConf(const json::object& c) {
  NetConf n;
  if (const json::value* v = c.if_contains("bridge"); v && !v->is_null()) {
    if (!v->is_string() || ifnameProblem(std::string(v->get_string()))) {
      return Error{ErrorCode::kInvalidConfig, "bridge: must be an interface name (1-15 characters, no '/', ':' or spaces)", ""};
    }
    n.bridge = std::string(v->get_string());
  }
  auto boolean = [&](const char* key, bool& into) -> std::optional<Error> {
    const json::value* v = c.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_bool()) return Error{ErrorCode::kInvalidConfig, fmt::format("{}: must be true or false", key), ""};
    into = v->get_bool();
    return std::nullopt;
  };
  if (auto e = boolean("isGateway", n.isGateway)) return *e;
  if (auto e = boolean("hairpinMode", n.hairpin)) return *e;
  if (auto e = boolean("ipMasq", n.ipMasq)) return *e;
  if (const json::value* v = c.if_contains("clusterCIDR"); v && !v->is_null()) {
    // Parsed into values and rendered again: only canonical CIDRs reach nftables.
    std::string problem;
    auto add = [&](const json::value& x) -> bool {
      if (!x.is_string()) return false;
      auto c = base::parseCidr(x.get_string());
      if (!c) {
        problem = ": " + c.error().message();
        return false;
      }
      n.clusterCidrs.push_back(base::formatCidr(*c));
      return true;
    };
    bool ok = v->is_array() ? std::all_of(v->get_array().begin(), v->get_array().end(), add) : add(*v);
    if (!ok) return Error{ErrorCode::kInvalidConfig, "clusterCIDR: must be a CIDR or a list of CIDRs" + problem, ""};
  }
  if (const json::value* v = c.if_contains("nftTable"); v && !v->is_null()) {
    std::string t = v->is_string() ? std::string(v->get_string()) : "";
    bool ok = !t.empty() && t.size() <= 32 &&
              std::all_of(t.begin(), t.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; });
    if (!ok) return Error{ErrorCode::kInvalidConfig, "nftTable: must be 1-32 letters, digits or '_'", ""};
    n.nftTable = t;
  }
  if (const json::value* v = c.if_contains("readyFile"); v && !v->is_null()) {
    if (!v->is_string() || v->get_string().empty() || v->get_string()[0] != '/') {
      return Error{ErrorCode::kInvalidConfig, "readyFile: must be an absolute path", ""};
    }
    n.readyFile = v->get_string();
  }
  if (const json::value* v = c.if_contains("mtu"); v && !v->is_null()) {
    if (!v->is_int64() || v->get_int64() < 0 || v->get_int64() > 65535) {
      return Error{ErrorCode::kInvalidConfig, "mtu: must be a number from 0 to 65535", ""};
    }
    n.mtu = static_cast<int>(v->get_int64());
  }
  if (const json::value* v = c.if_contains("overlay"); v && !v->is_null()) {
    if (!v->is_string() || (v->get_string() != "vxlan" && v->get_string() != "none")) {
      return Error{ErrorCode::kInvalidConfig, "overlay: must be \"vxlan\" or \"none\"", ""};
    }
    n.overlayOverhead = v->get_string() == "vxlan" ? 50 : 0;
  }
  if (n.mtu == 0) n.mtu = uplinkMtu() - n.overlayOverhead;
  return n;
}

std::variant<IpamConfig, Error> ipamOf(const json::object& c) {
  const json::value* ipam = c.if_contains("ipam");
  if (!ipam || !ipam->is_object()) return Error{ErrorCode::kInvalidConfig, "ipam: missing", ""};
  const json::value* type = ipam->get_object().if_contains("type");
  std::string t = type && type->is_string() ? std::string(type->get_string()) : "";
  if (!t.empty() && t != "host-local" && t != "trellis-cni") {
    return Error{ErrorCode::kUnsupportedField, fmt::format("ipam.type: {:?} is not supported (the built-in IPAM takes "
                                                           "\"host-local\" configurations)", t), ""};
  }
  return parseIpamConfig(ipam->get_object());
}

}  // namespace trellis::cni
