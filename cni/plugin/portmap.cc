#include "cni/plugin/portmap.h"

#include <fcntl.h>
#include <linux/netfilter.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/ip.h"

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

// A state file as values; nullopt when it is torn or not this plugin's.
std::optional<PortState> readState(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code jec;
  json::value v = json::parse(text.str(), jec);
  if (jec || !v.is_object()) return std::nullopt;
  const json::value* ips = v.get_object().if_contains("ips");
  const json::value* maps = v.get_object().if_contains("portMappings");
  if (!ips || !ips->is_array() || !maps || !maps->is_array()) return std::nullopt;
  PortState st;
  for (const json::value& ip : ips->get_array()) {
    // Re-validated as values: a state file is data, never trusted text.
    if (auto a = ip.is_string() ? base::parseIp(ip.get_string()) : std::nullopt) st.podIps.push_back(base::formatIp(*a));
  }
  for (const json::value& m : maps->get_array()) {
    if (auto mapping = mappingFromJson(m)) st.mappings.push_back(*mapping);
  }
  return st;
}

std::optional<Error> writeState(const std::string& path, const PortState& st) {
  json::array ips, maps;
  for (const std::string& ip : st.podIps) ips.emplace_back(ip);
  for (const PortMapping& m : st.mappings) {
    maps.push_back(json::object{{"hostPort", m.hostPort}, {"containerPort", m.containerPort}, {"protocol", m.protocol}});
  }
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json::serialize(json::object{{"ips", ips}, {"portMappings", maps}});
    if (!out) return ioError("writing " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return ioError("renaming " + tmp);
  return std::nullopt;
}

std::optional<Error> nftError(const base::Error& e) { return Error{ErrorCode::kIo, e.message(), ""}; }

}  // namespace

std::vector<std::pair<std::string, sys::NftElement>> PortMaps::elementsOf(const PortState& s) {
  std::vector<std::pair<std::string, sys::NftElement>> out;
  for (const std::string& ip : s.podIps) {
    auto addr = base::parseIp(ip);
    if (!addr) continue;
    for (const PortMapping& m : s.mappings) {
      uint8_t proto = m.protocol == "udp" ? 17 : 6;
      sys::NftElement e{sys::nftConcat({sys::nftProto(proto), sys::nftPort(static_cast<uint16_t>(m.hostPort))}),
                        sys::nftConcat({sys::nftAddr(*addr), sys::nftPort(static_cast<uint16_t>(m.containerPort))})};
      out.emplace_back(addr->v6 ? "hostports6" : "hostports4", std::move(e));
    }
  }
  return out;
}

namespace {

// Groups a state's elements per map for one batch each.
template <typename Fn>
base::Status perMap(const PortState& s, Fn fn) {
  std::vector<sys::NftElement> v4, v6;
  for (auto& [map, e] : PortMaps::elementsOf(s)) (map == "hostports6" ? v6 : v4).push_back(std::move(e));
  if (auto st = fn("hostports4", v4); !st) return st;
  return fn("hostports6", v6);
}

}  // namespace

std::optional<Error> PortMaps::unmap(sys::NftNetlink& nl, const PortState& s) {
  auto st = perMap(s, [&](const char* map, const std::vector<sys::NftElement>& els) {
    return nl.deleteElements(NFPROTO_INET, table_, map, els);
  });
  return st ? std::nullopt : nftError(st.error());
}

std::optional<Error> PortMaps::set(sys::NftNetlink& nl, const Attachment& a, const std::vector<std::string>& podIps,
                                   const std::vector<PortMapping>& mappings) {
  std::error_code ec;
  if (mappings.empty() && !std::filesystem::exists(dir_)) return std::nullopt;  // never had any
  std::filesystem::create_directories(dir_, ec);
  if (ec) return ioError(fmt::format("creating {}: {}", dir_, ec.message()));
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  std::string path = fileFor(dir_, a);
  if (auto old = readState(path)) {
    // A repeated ADD: its earlier elements go first (the pod's address may differ).
    if (auto e = unmap(nl, *old)) return e;
  }
  if (mappings.empty()) {
    std::filesystem::remove(path, ec);
    return std::nullopt;
  }
  PortState st{podIps, mappings};
  if (auto e = writeState(path, st)) return e;
  auto added = perMap(st, [&](const char* map, const std::vector<sys::NftElement>& els) {
    return nl.addElements(NFPROTO_INET, table_, map, els);
  });
  if (!added) {
    static_cast<void>(unmap(nl, st));  // what this ADD did of it
    std::filesystem::remove(path, ec);
    if (added.error().code() == base::ErrorCode::kConflict) {
      std::string which;
      for (const PortMapping& m : mappings) which += fmt::format("{}{}/{}", which.empty() ? "" : ", ", m.hostPort, m.protocol);
      return Error{ErrorCode::kInvalidConfig, "a hostPort of " + which + " is already mapped to another pod", ""};
    }
    return nftError(added.error());
  }
  return std::nullopt;
}

std::optional<Error> PortMaps::remove(const Attachment& a) {
  if (!std::filesystem::exists(dir_)) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  std::string path = fileFor(dir_, a);
  if (!std::filesystem::exists(path)) return std::nullopt;
  if (auto old = readState(path)) {
    auto nl = sys::NftNetlink::open();
    if (!nl) return nftError(nl.error());
    if (auto e = unmap(**nl, *old)) return e;
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return std::nullopt;
}

std::optional<Error> PortMaps::gc(const std::set<Attachment>& valid) {
  if (!std::filesystem::exists(dir_)) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  std::unique_ptr<sys::NftNetlink> nl;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (!name.ends_with(".json")) continue;
    std::string stem = name.substr(0, name.size() - 5);
    size_t dot = stem.rfind('.');
    if (dot == std::string::npos || valid.count({stem.substr(0, dot), stem.substr(dot + 1)})) continue;
    if (auto old = readState(e.path().string())) {
      if (!nl) {
        auto opened = sys::NftNetlink::open();
        if (!opened) return nftError(opened.error());
        nl = std::move(*opened);
      }
      if (auto err = unmap(*nl, *old)) return err;
    }
    std::filesystem::remove(e.path(), ec);
  }
  return std::nullopt;
}

std::optional<Error> PortMaps::restoreAll(sys::NftNetlink& nl) {
  if (!std::filesystem::exists(dir_)) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("locking " + dir_);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (!e.path().filename().string().ends_with(".json")) continue;
    auto st = readState(e.path().string());
    if (!st) continue;  // torn: its attachment is added again or collected
    auto added = perMap(*st, [&](const char* map, const std::vector<sys::NftElement>& els) {
      return nl.addElements(NFPROTO_INET, table_, map, els);
    });
    if (!added && added.error().code() != base::ErrorCode::kConflict) return nftError(added.error());
  }
  return std::nullopt;
}

std::optional<PortState> PortMaps::recorded(const Attachment& a) const { return readState(fileFor(dir_, a)); }

}  // namespace trellis::cni
