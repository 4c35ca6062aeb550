#include "cni/plugin/portmap.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/ip.h"
#include "common/linux/nftables.h"

namespace trellis::cni {

namespace json = boost::json;

std::variant<std::vector<PortMapping>, Error> parsePortMappings(const json::object& config) {
  std::vector<PortMapping> out;
  const json::value* caps = config.if_contains("capabilities");
  const json::value* enabled = caps && caps->is_object() ? caps->get_object().if_contains("portMappings") : nullptr;
  if (!enabled || !enabled->is_bool() || !enabled->get_bool()) return out;
  const json::value* rc = config.if_contains("runtimeConfig");
  const json::value* pm = rc && rc->is_object() ? rc->get_object().if_contains("portMappings") : nullptr;
  if (!pm || pm->is_null()) return out;
  if (!pm->is_array()) return Error{ErrorCode::kInvalidConfig, "runtimeConfig.portMappings: not a list", ""};
  size_t i = 0;
  for (const json::value& e : pm->get_array()) {
    std::string field = fmt::format("runtimeConfig.portMappings[{}]", i++);
    if (!e.is_object()) return Error{ErrorCode::kInvalidConfig, field + ": not an object", ""};
    const json::object& o = e.get_object();
    PortMapping m;
    auto port = [&](const char* key, int& into) -> bool {
      const json::value* v = o.if_contains(key);
      if (!v || !v->is_int64() || v->get_int64() < 1 || v->get_int64() > 65535) return false;
      into = static_cast<int>(v->get_int64());
      return true;
    };
    if (!port("hostPort", m.hostPort) || !port("containerPort", m.containerPort)) {
      return Error{ErrorCode::kInvalidConfig, field + ": hostPort and containerPort must be ports (1-65535)", ""};
    }
    if (const json::value* p = o.if_contains("protocol"); p && p->is_string() && !p->get_string().empty()) {
      std::string proto(p->get_string());
      for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (proto != "tcp" && proto != "udp") {
        return Error{ErrorCode::kUnsupportedField, fmt::format("{}.protocol: {:?} (tcp and udp are supported)", field, proto), ""};
      }
      m.protocol = proto;
    }
    if (const json::value* h = o.if_contains("hostIP"); h && h->is_string() && !h->get_string().empty() &&
                                                      h->get_string() != "0.0.0.0" && h->get_string() != "::") {
      return Error{ErrorCode::kUnsupportedField,
                   fmt::format("{}.hostIP: {:?} (mappings apply to every address of the node)", field,
                               std::string(h->get_string())),
                   ""};
    }
    out.push_back(m);
  }
  return out;
}

namespace {

// One mapping of a state file, if every field is there and in range.
std::optional<PortMapping> mappingFromJson(const json::value& v) {
  if (!v.is_object()) return std::nullopt;
  const json::object& o = v.get_object();
  auto port = [&](const char* key) -> int {
    const json::value* p = o.if_contains(key);
    return p && p->is_int64() && p->get_int64() >= 1 && p->get_int64() <= 65535 ? static_cast<int>(p->get_int64()) : 0;
  };
  const json::value* proto = o.if_contains("protocol");
  PortMapping m{port("hostPort"), port("containerPort"), ""};
  if (!m.hostPort || !m.containerPort || !proto || !proto->is_string()) return std::nullopt;
  m.protocol = std::string(proto->get_string());
  if (m.protocol != "tcp" && m.protocol != "udp") return std::nullopt;
  return m;
}

}  // namespace

PortMaps::PortMaps(std::string dir, std::string table) : dir_(std::move(dir)), table_(std::move(table)) {}

namespace {

std::string fileFor(const std::string& dir, const Attachment& a) { return dir + "/" + a.first + "." + a.second + ".json"; }

Error ioError(const std::string& what) { return Error{ErrorCode::kIo, what, ""}; }

}  // namespace

std::optional<Error> PortMaps::set(const Attachment& a, const std::vector<std::string>& podIps,
                                   const std::vector<PortMapping>& mappings) {
  std::error_code ec;
  if (mappings.empty() && !std::filesystem::exists(dir_)) return std::nullopt;  // never had any
  std::filesystem::create_directories(dir_, ec);
  if (ec) return ioError(fmt::format("creating {}: {}", dir_, ec.message()));
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  if (mappings.empty()) {
    // Nothing to map: only a change if the attachment had mappings.
    return std::filesystem::remove(fileFor(dir_, a), ec) ? rebuild() : std::nullopt;
  } else {
    json::array ips, maps;
    for (const std::string& ip : podIps) ips.emplace_back(ip);
    for (const PortMapping& m : mappings) {
      maps.push_back(json::object{{"hostPort", m.hostPort}, {"containerPort", m.containerPort}, {"protocol", m.protocol}});
    }
    std::string path = fileFor(dir_, a), tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << json::serialize(json::object{{"ips", ips}, {"portMappings", maps}});
      if (!out) return ioError("writing " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) return ioError("renaming " + tmp);
  }
  return rebuild();
}

std::optional<Error> PortMaps::remove(const Attachment& a) {
  if (!std::filesystem::exists(dir_)) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  std::error_code ec;
  bool had = std::filesystem::remove(fileFor(dir_, a), ec);
  return had ? rebuild() : std::nullopt;
}

std::optional<Error> PortMaps::gc(const std::set<Attachment>& valid) {
  if (!std::filesystem::exists(dir_)) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (!name.ends_with(".json")) continue;
    std::string stem = name.substr(0, name.size() - 5);
    size_t dot = stem.rfind('.');
    if (dot == std::string::npos) continue;
    if (!valid.count({stem.substr(0, dot), stem.substr(dot + 1)})) std::filesystem::remove(e.path(), ec);
  }
  return rebuild();
}

// Called with the lock held: the map becomes exactly the state files' mappings.
std::optional<Error> PortMaps::rebuild() {
  std::string elements4, elements6;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (!e.path().filename().string().ends_with(".json")) continue;
    std::ifstream in(e.path());
    std::stringstream text;
    text << in.rdbuf();
    boost::system::error_code jec;
    json::value v = json::parse(text.str(), jec);
    if (jec || !v.is_object()) continue;  // torn write: its attachment is re-added or collected
    const json::value* ips = v.get_object().if_contains("ips");
    const json::value* maps = v.get_object().if_contains("portMappings");
    if (!ips || !ips->is_array() || !maps || !maps->is_array()) continue;
    for (const json::value& ip : ips->get_array()) {
      if (!ip.is_string()) continue;
      bool v6 = ip.get_string().find(':') != std::string_view::npos;
      auto addr = base::parseIp(ip.get_string());
      if (!addr) continue;  // not written by this plugin
      for (const json::value& m : maps->get_array()) {
        // Re-validated as values: a state file is data, never trusted text for nft.
        auto mapping = mappingFromJson(m);
        if (!mapping) continue;
        std::string& into = v6 ? elements6 : elements4;
        into += fmt::format("{}{} . {} : {} . {}", into.empty() ? "" : ", ", mapping->protocol, mapping->hostPort,
                            base::formatIp(*addr), mapping->containerPort);
      }
    }
  }
  const std::string& t = table_;
  std::string script = fmt::format(
      "add table inet {0}\n"
      "add map inet {0} hostports4 {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n"
      "add map inet {0} hostports6 {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}\n"
      "flush map inet {0} hostports4\n"
      "flush map inet {0} hostports6\n"
      "add chain inet {0} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n"
      "add chain inet {0} output {{ type nat hook output priority -100; policy accept; }}\n"
      "flush chain inet {0} prerouting\n"
      "flush chain inet {0} output\n",
      t);
  for (const char* chain : {"prerouting", "output"}) {
    script += fmt::format("add rule inet {} {} fib daddr type local dnat ip to meta l4proto . th dport map @hostports4\n", t, chain);
    script += fmt::format("add rule inet {} {} fib daddr type local dnat ip6 to meta l4proto . th dport map @hostports6\n", t, chain);
  }
  if (!elements4.empty()) script += fmt::format("add element inet {} hostports4 {{ {} }}\n", t, elements4);
  if (!elements6.empty()) script += fmt::format("add element inet {} hostports6 {{ {} }}\n", t, elements6);
  if (auto st = sys::nftApply(script); !st) return Error{ErrorCode::kIo, st.error().message(), ""};
  return std::nullopt;
}

}  // namespace trellis::cni
