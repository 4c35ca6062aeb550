#include "cni/plugin/protocol.h"

#include <algorithm>
#include <cctype>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

namespace trellis::cni {

namespace json = boost::json;

namespace {

std::string str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

int integer(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_int64() ? static_cast<int>(v->get_int64()) : 0;
}

std::vector<std::string> strings(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_array()) return out;
  for (const json::value& e : v->get_array()) {
    if (e.is_string()) out.emplace_back(e.get_string());
  }
  return out;
}

json::array toArray(const std::vector<std::string>& v) {
  json::array a;
  for (const std::string& s : v) a.emplace_back(s);
  return a;
}

Error envError(std::string msg) { return Error{ErrorCode::kInvalidEnvironment, std::move(msg), ""}; }

bool validContainerId(std::string_view id) {
  if (id.empty() || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}


}  // namespace

std::optional<std::string> ifnameProblem(std::string_view n) {
  if (n.empty()) return "is empty";
  if (n.size() > 15) return "is longer than 15 characters";
  if (n == "." || n == "..") return "may not be '.' or '..'";
  for (char c : n) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c))) {
      return "may not contain '/', ':' or whitespace";
    }
  }
  return std::nullopt;
}

json::object Error::toJson(std::string_view cniVersion) const {
  json::object o{{"cniVersion", cniVersion}, {"code", static_cast<int>(code)}, {"msg", msg}};
  if (!details.empty()) o["details"] = details;
  return o;
}

const std::vector<std::string>& supportedVersions() {
  static const std::vector<std::string> v{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
  return v;
}

std::string_view latestVersion() { return supportedVersions().back(); }

json::object versionInfo() {
  return json::object{{"cniVersion", latestVersion()}, {"supportedVersions", toArray(supportedVersions())}};
}

bool validNetworkName(std::string_view name) {
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (name.empty() || name.size() > 200 || !alnum(name[0])) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

int compareVersions(std::string_view a, std::string_view b) {
  auto parts = [](std::string_view v) {
    std::vector<int> out;
    size_t start = 0;
    while (start <= v.size()) {
      size_t dot = v.find('.', start);
      std::string_view p = v.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
      int n = 0;
      for (char c : p) n = std::isdigit(static_cast<unsigned char>(c)) ? n * 10 + (c - '0') : n;
      out.push_back(n);
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
    while (out.size() < 3) out.push_back(0);
    return out;
  };
  auto pa = parts(a), pb = parts(b);
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

std::variant<Invocation, Error> parseInvocation(const std::map<std::string, std::string>& env,
                                                std::string_view stdinText) {
  auto get = [&](const char* name) -> std::string {
    auto it = env.find(name);
    return it == env.end() ? std::string() : it->second;
  };
  Invocation inv;
  std::string command = get("CNI_COMMAND");
  static const std::pair<std::string_view, Command> kCommands[] = {
      {"ADD", Command::kAdd}, {"DEL", Command::kDel}, {"CHECK", Command::kCheck},
      {"STATUS", Command::kStatus}, {"GC", Command::kGc}, {"VERSION", Command::kVersion}};
  bool known = false;
  for (const auto& [name, c] : kCommands) {
    if (command == name) {
      inv.command = c;
      known = true;
    }
  }
  if (command.empty()) return envError("CNI_COMMAND is not set");
  if (!known) return envError(fmt::format("CNI_COMMAND {:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION", command));
  if (inv.command == Command::kVersion) return inv;

  bool perContainer = inv.command == Command::kAdd || inv.command == Command::kDel || inv.command == Command::kCheck;
  if (perContainer) {
    inv.containerId = get("CNI_CONTAINERID");
    if (inv.containerId.empty()) return envError("CNI_CONTAINERID is not set");
    if (!validContainerId(inv.containerId)) {
      return envError(fmt::format("CNI_CONTAINERID {:?} is invalid: it must match [A-Za-z0-9][A-Za-z0-9_.-]*",
                                  inv.containerId));
    }
    inv.ifname = get("CNI_IFNAME");
    if (inv.ifname.empty()) return envError("CNI_IFNAME is not set");
    if (auto problem = ifnameProblem(inv.ifname)) {
      return envError(fmt::format("CNI_IFNAME {:?} {}", inv.ifname, *problem));
    }
    inv.netns = get("CNI_NETNS");
    if (inv.netns.empty() && inv.command != Command::kDel) return envError("CNI_NETNS is not set");
    std::string args = get("CNI_ARGS");
    size_t start = 0;
    while (start < args.size()) {
      size_t semi = args.find(';', start);
      std::string kv = args.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
      size_t eq = kv.find('=');
      if (!kv.empty()) {
        if (eq == std::string::npos || eq == 0) return envError(fmt::format("CNI_ARGS: {:?} is not KEY=VALUE", kv));
        inv.args[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      if (semi == std::string::npos) break;
      start = semi + 1;
    }
  }
  std::string path = get("CNI_PATH");
  size_t start = 0;
  while (start < path.size()) {
    size_t colon = path.find(':', start);
    std::string p = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!p.empty()) inv.path.push_back(p);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }

  boost::system::error_code ec;
  json::value cfg = json::parse(stdinText, ec);
  if (ec || !cfg.is_object()) {
    return Error{ErrorCode::kDecode, "the network configuration on stdin is not a JSON object",
                 ec ? ec.message() : "not an object"};
  }
  inv.config = std::move(cfg.get_object());
  inv.cniVersion = str(inv.config, "cniVersion");
  if (inv.cniVersion.empty()) return Error{ErrorCode::kInvalidConfig, "the network configuration has no cniVersion", ""};
  const auto& sv = supportedVersions();
  if (std::find(sv.begin(), sv.end(), inv.cniVersion) == sv.end()) {
    std::string list;
    for (const std::string& v : sv) list += (list.empty() ? "" : ", ") + v;
    return Error{ErrorCode::kIncompatibleVersion,
                 fmt::format("incompatible CNI versions; config is {:?}, plugin supports [{}]", inv.cniVersion, list), ""};
  }
  if ((inv.command == Command::kStatus || inv.command == Command::kGc) && compareVersions(inv.cniVersion, "1.1.0") < 0) {
    return Error{ErrorCode::kIncompatibleVersion,
                 fmt::format("{} needs cniVersion 1.1.0 or later, the configuration has {}", command, inv.cniVersion), ""};
  }
  std::string name = str(inv.config, "name");
  if (name.empty()) return Error{ErrorCode::kInvalidConfig, "the network configuration has no name", ""};
  if (!validNetworkName(name)) {
    return Error{ErrorCode::kInvalidConfig,
                 fmt::format("network name {:?} is invalid: it must start with a letter or digit, followed by letters, "
                             "digits, '_', '.' or '-' (at most 200 characters)", name),
                 ""};
  }
  if (str(inv.config, "type").empty()) return Error{ErrorCode::kInvalidConfig, "the network configuration has no type", ""};
  return inv;
}

json::object toJson(const Result& r, std::string_view version) {
  bool v1 = compareVersions(version, "1.0.0") >= 0;
  bool v11 = compareVersions(version, "1.1.0") >= 0;
  json::object out{{"cniVersion", version}};
  json::array interfaces;
  for (const Interface& i : r.interfaces) {
    json::object o{{"name", i.name}};
    if (!i.mac.empty()) o["mac"] = i.mac;
    if (v11 && i.mtu > 0) o["mtu"] = i.mtu;
    if (!i.sandbox.empty()) o["sandbox"] = i.sandbox;
    interfaces.push_back(std::move(o));
  }
  if (!interfaces.empty()) out["interfaces"] = std::move(interfaces);
  json::array ips;
  for (const IpConfig& ip : r.ips) {
    json::object o;
    if (!v1) o["version"] = ip.v6() ? "6" : "4";
    o["address"] = ip.address;
    if (!ip.gateway.empty()) o["gateway"] = ip.gateway;
    if (ip.interface >= 0) o["interface"] = ip.interface;
    ips.push_back(std::move(o));
  }
  if (!ips.empty()) out["ips"] = std::move(ips);
  json::array routes;
  for (const Route& rt : r.routes) {
    json::object o{{"dst", rt.dst}};
    if (!rt.gw.empty()) o["gw"] = rt.gw;
    if (v11) {
      if (rt.mtu > 0) o["mtu"] = rt.mtu;
      if (rt.advmss > 0) o["advmss"] = rt.advmss;
      if (rt.priority > 0) o["priority"] = rt.priority;
      if (rt.table > 0) o["table"] = rt.table;
      if (rt.scope >= 0) o["scope"] = rt.scope;
    }
    routes.push_back(std::move(o));
  }
  if (!routes.empty()) out["routes"] = std::move(routes);
  json::object dns;
  if (!r.dns.nameservers.empty()) dns["nameservers"] = toArray(r.dns.nameservers);
  if (!r.dns.domain.empty()) dns["domain"] = r.dns.domain;
  if (!r.dns.search.empty()) dns["search"] = toArray(r.dns.search);
  if (!r.dns.options.empty()) dns["options"] = toArray(r.dns.options);
  out["dns"] = std::move(dns);
  return out;
}

std::variant<Result, Error> resultFromJson(const json::object& obj) {
  auto bad = [](std::string msg) { return Error{ErrorCode::kDecode, std::move(msg), ""}; };
  std::string version = str(obj, "cniVersion");
  const auto& sv = supportedVersions();
  if (!version.empty() && std::find(sv.begin(), sv.end(), version) == sv.end()) {
    return Error{ErrorCode::kIncompatibleVersion, fmt::format("prevResult has unsupported cniVersion {:?}", version), ""};
  }
  Result r;
  if (const json::value* v = obj.if_contains("interfaces"); v && !v->is_null()) {
    if (!v->is_array()) return bad("prevResult.interfaces is not a list");
    for (const json::value& e : v->get_array()) {
      if (!e.is_object()) return bad("prevResult.interfaces has a non-object entry");
      const json::object& o = e.get_object();
      r.interfaces.push_back(Interface{str(o, "name"), str(o, "mac"), str(o, "sandbox"), integer(o, "mtu")});
    }
  }
  if (const json::value* v = obj.if_contains("ips"); v && !v->is_null()) {
    if (!v->is_array()) return bad("prevResult.ips is not a list");
    for (const json::value& e : v->get_array()) {
      if (!e.is_object()) return bad("prevResult.ips has a non-object entry");
      const json::object& o = e.get_object();
      IpConfig ip{str(o, "address"), str(o, "gateway"), -1};
      if (const json::value* i = o.if_contains("interface"); i && i->is_int64()) ip.interface = static_cast<int>(i->get_int64());
      if (ip.address.empty() || ip.address.find('/') == std::string::npos) {
        return bad(fmt::format("prevResult.ips: address {:?} is not a CIDR", ip.address));
      }
      if (ip.interface >= static_cast<int>(r.interfaces.size())) {
        return bad(fmt::format("prevResult.ips: interface index {} is out of range", ip.interface));
      }
      r.ips.push_back(std::move(ip));
    }
  }
  if (const json::value* v = obj.if_contains("routes"); v && !v->is_null()) {
    if (!v->is_array()) return bad("prevResult.routes is not a list");
    for (const json::value& e : v->get_array()) {
      if (!e.is_object()) return bad("prevResult.routes has a non-object entry");
      const json::object& o = e.get_object();
      const json::value* scope = o.if_contains("scope");
      r.routes.push_back(Route{str(o, "dst"), str(o, "gw"), integer(o, "mtu"), integer(o, "advmss"),
                               integer(o, "priority"), integer(o, "table"),
                               scope && scope->is_int64() ? static_cast<int>(scope->get_int64()) : -1});
    }
  }
  if (const json::value* v = obj.if_contains("dns"); v && v->is_object()) {
    const json::object& o = v->get_object();
    r.dns = Dns{strings(o, "nameservers"), str(o, "domain"), strings(o, "search"), strings(o, "options")};
  }
  return r;
}

}  // namespace trellis::cni
