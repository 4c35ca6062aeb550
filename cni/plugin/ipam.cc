#include "cni/plugin/ipam.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace trellis::cni {

namespace json = boost::json;
using u128 = unsigned __int128;

namespace {

struct Addr {
  bool v6 = false;
  u128 value = 0;
};

std::optional<Addr> parseAddr(const std::string& s) {
  Addr a;
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    for (int i = 0; i < 4; ++i) a.value = (a.value << 8) | buf[i];
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    a.v6 = true;
    for (int i = 0; i < 16; ++i) a.value = (a.value << 8) | buf[i];
    return a;
  }
  return std::nullopt;
}

std::string formatAddr(const Addr& a) {
  unsigned char buf[16];
  char out[INET6_ADDRSTRLEN];
  int n = a.v6 ? 16 : 4;
  u128 v = a.value;
  for (int i = n - 1; i >= 0; --i) {
    buf[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
  inet_ntop(a.v6 ? AF_INET6 : AF_INET, buf, out, sizeof out);
  return out;
}

struct Cidr {
  Addr network;
  int prefix = 0;
  int bits() const { return network.v6 ? 128 : 32; }
  u128 size() const { return prefix == 0 && network.v6 ? ~u128(0) : (u128(1) << (bits() - prefix)); }
  bool contains(const Addr& a) const {
    if (a.v6 != network.v6) return false;
    return a.value >= network.value && a.value - network.value < size();
  }
};

std::optional<Cidr> parseCidr(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto a = parseAddr(s.substr(0, slash));
  if (!a) return std::nullopt;
  int prefix = 0;
  std::string p = s.substr(slash + 1);
  if (p.empty() || p.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  prefix = std::stoi(p);
  int bits = a->v6 ? 128 : 32;
  if (prefix < 0 || prefix > bits) return std::nullopt;
  Cidr c{*a, prefix};
  u128 mask = prefix == 0 ? 0 : (~u128(0) << (bits - prefix));
  if (!a->v6) mask &= 0xffffffffu;
  c.network.value &= mask;
  return c;
}

// A range ready to allocate from.
struct Resolved {
  Cidr subnet;
  Addr first, last, gateway;
};

std::string str(const json::object& o, std::string_view k) {
  const json::value* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

Error configError(std::string msg) { return Error{ErrorCode::kInvalidConfig, std::move(msg), ""}; }

std::variant<Resolved, Error> resolve(const IpRange& r, const std::string& field) {
  auto subnet = parseCidr(r.subnet);
  if (!subnet) return configError(fmt::format("ipam: {}.subnet {:?} is not a CIDR", field, r.subnet));
  int hostBits = subnet->bits() - subnet->prefix;
  if (hostBits < 2) return configError(fmt::format("ipam: {}.subnet {:?} has no room for addresses", field, r.subnet));
  Resolved out{*subnet, {}, {}, {}};
  out.first = Addr{subnet->network.v6, subnet->network.value + 1};
  out.last = Addr{subnet->network.v6, subnet->network.value + subnet->size() - (subnet->network.v6 ? 1 : 2)};
  out.gateway = out.first;
  auto within = [&](const std::string& s, const char* name, Addr& into) -> std::optional<Error> {
    if (s.empty()) return std::nullopt;
    auto a = parseAddr(s);
    if (!a || !subnet->contains(*a)) {
      return configError(fmt::format("ipam: {}.{} {:?} is not an address in {}", field, name, s, r.subnet));
    }
    into = *a;
    return std::nullopt;
  };
  if (auto e = within(r.rangeStart, "rangeStart", out.first)) return *e;
  if (auto e = within(r.rangeEnd, "rangeEnd", out.last)) return *e;
  if (auto e = within(r.gateway, "gateway", out.gateway)) return *e;
  if (out.first.value > out.last.value) {
    return configError(fmt::format("ipam: {}: rangeStart is after rangeEnd", field));
  }
  return out;
}

Error ioError(const std::string& what) { return Error{ErrorCode::kIo, what + ": " + std::strerror(errno), ""}; }

std::optional<Error> fsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ioError("open " + dir);
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return ioError("fsync " + dir);
  return std::nullopt;
}

// Reads "containerID\nifname" from an allocation file.
Attachment readAttachment(const std::string& path) {
  std::ifstream in(path);
  std::string id, ifname;
  std::getline(in, id);
  std::getline(in, ifname);
  if (!id.empty() && id.back() == '\r') id.pop_back();
  return {id, ifname};
}

bool isAddressFile(const std::string& name) { return parseAddr(name).has_value(); }

}  // namespace

FileLock::FileLock(const std::string& path) : fd_(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
  if (fd_ >= 0) {
    while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) close(fd_);  // releases the lock
}

std::variant<IpamConfig, Error> parseIpamConfig(const json::object& ipam) {
  IpamConfig cfg;
  auto rangeOf = [](const json::object& o) {
    return IpRange{str(o, "subnet"), str(o, "rangeStart"), str(o, "rangeEnd"), str(o, "gateway")};
  };
  if (const json::value* ranges = ipam.if_contains("ranges"); ranges && !ranges->is_null()) {
    if (!ranges->is_array()) return configError("ipam.ranges: not a list");
    size_t i = 0;
    for (const json::value& set : ranges->get_array()) {
      if (!set.is_array() || set.get_array().empty()) return configError(fmt::format("ipam.ranges[{}]: not a list of ranges", i));
      std::vector<IpRange> rs;
      for (const json::value& r : set.get_array()) {
        if (!r.is_object()) return configError(fmt::format("ipam.ranges[{}]: a range is not an object", i));
        rs.push_back(rangeOf(r.get_object()));
      }
      cfg.rangeSets.push_back(std::move(rs));
      ++i;
    }
  } else if (!str(ipam, "subnet").empty()) {
    cfg.rangeSets.push_back({rangeOf(ipam)});
  }
  if (cfg.rangeSets.empty()) return configError("ipam: no ranges and no subnet");
  // Every range must resolve, and a set must not mix address families.
  for (size_t i = 0; i < cfg.rangeSets.size(); ++i) {
    std::optional<bool> v6;
    for (size_t j = 0; j < cfg.rangeSets[i].size(); ++j) {
      auto r = resolve(cfg.rangeSets[i][j], fmt::format("ranges[{}][{}]", i, j));
      if (std::holds_alternative<Error>(r)) return std::get<Error>(r);
      bool fam = std::get<Resolved>(r).subnet.network.v6;
      if (v6 && *v6 != fam) return configError(fmt::format("ipam.ranges[{}]: mixes IPv4 and IPv6 ranges", i));
      v6 = fam;
    }
  }
  if (const json::value* routes = ipam.if_contains("routes"); routes && routes->is_array()) {
    for (const json::value& r : routes->get_array()) {
      if (!r.is_object() || !parseCidr(str(r.get_object(), "dst"))) {
        return configError("ipam.routes: each route needs a dst in CIDR notation");
      }
      Route rt;
      rt.dst = str(r.get_object(), "dst");
      rt.gw = str(r.get_object(), "gw");
      cfg.routes.push_back(std::move(rt));
    }
  }
  if (std::string d = str(ipam, "dataDir"); !d.empty()) cfg.dataDir = d;
  return cfg;
}

Ipam::Ipam(IpamConfig config, std::string network)
    : config_(std::move(config)), dir_(config_.dataDir + "/" + network) {}

std::vector<std::pair<std::string, Attachment>> Ipam::allocations() const {
  std::vector<std::pair<std::string, Attachment>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (isAddressFile(name)) out.emplace_back(name, readAttachment(e.path().string()));
  }
  return out;
}

std::variant<Result, Error> Ipam::allocate(const std::string& containerId, const std::string& ifname) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Error{ErrorCode::kIo, fmt::format("creating {}: {}", dir_, ec.message()), ""};
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("lock " + dir_);
  auto existing = allocations();
  Result result;
  for (size_t s = 0; s < config_.rangeSets.size(); ++s) {
    std::vector<Resolved> ranges;
    for (const IpRange& r : config_.rangeSets[s]) ranges.push_back(std::get<Resolved>(resolve(r, "")));
    // Already holds one in this set: the same again.
    std::optional<std::pair<Addr, const Resolved*>> chosen;
    for (const auto& [ip, who] : existing) {
      if (who != Attachment{containerId, ifname}) continue;
      auto a = parseAddr(ip);
      for (const Resolved& r : ranges) {
        if (a && a->value >= r.first.value && a->value <= r.last.value && a->v6 == r.first.v6) chosen = {{*a, &r}};
      }
    }
    if (!chosen) {
      // Round robin after the last address handed out in this set.
      std::string lastFile = fmt::format("{}/last_reserved.{}", dir_, s);
      std::optional<Addr> last;
      if (std::ifstream in(lastFile); in) {
        std::string l;
        std::getline(in, l);
        last = parseAddr(l);
      }
      size_t startRange = 0;
      u128 startOffset = 0;
      for (size_t i = 0; last && i < ranges.size(); ++i) {
        if (last->v6 == ranges[i].first.v6 && last->value >= ranges[i].first.value && last->value <= ranges[i].last.value) {
          startRange = i;
          startOffset = last->value - ranges[i].first.value + 1;
        }
      }
      // Walk every candidate once, wrapping around the set.
      for (size_t k = 0; k <= ranges.size() && !chosen; ++k) {
        const Resolved& r = ranges[(startRange + k) % ranges.size()];
        u128 count = r.last.value - r.first.value + 1;
        u128 begin = k == 0 ? startOffset : 0;
        u128 end = k == ranges.size() ? startOffset : count;  // the wrapped first range, up to where we began
        for (u128 off = begin; off < end && off < count && !chosen; ++off) {
          Addr a{r.first.v6, r.first.value + off};
          if (a.value == r.gateway.value) continue;
          std::string path = dir_ + "/" + formatAddr(a);
          int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
          if (fd < 0) {
            if (errno == EEXIST) continue;
            return ioError("create " + path);
          }
          std::string content = containerId + "\n" + ifname + "\n";
          bool ok = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && fsync(fd) == 0;
          close(fd);
          if (!ok) {
            unlink(path.c_str());
            return ioError("write " + path);
          }
          chosen = {{a, &r}};
        }
      }
      if (!chosen) {
        return Error{ErrorCode::kTryAgainLater,
                     fmt::format("no free address in range set {} of network {}", s, dir_), ""};
      }
      if (auto e = fsyncDir(dir_)) return *e;
      std::string tmp = lastFile + ".tmp";
      {
        std::ofstream out(tmp, std::ios::trunc);
        out << formatAddr(chosen->first) << "\n";
      }
      std::rename(tmp.c_str(), lastFile.c_str());  // a hint only: losing it costs a longer search
    }
    const Resolved& r = *chosen->second;
    result.ips.push_back(IpConfig{fmt::format("{}/{}", formatAddr(chosen->first), r.subnet.prefix),
                                  formatAddr(r.gateway), -1});
  }
  result.routes = config_.routes;
  return result;
}

std::optional<Error> Ipam::release(const std::string& containerId, const std::string& ifname) {
  struct stat st;
  if (stat(dir_.c_str(), &st) != 0) return std::nullopt;  // nothing was ever allocated
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("lock " + dir_);
  bool removed = false;
  for (const auto& [ip, who] : allocations()) {
    if (who != Attachment{containerId, ifname}) continue;
    std::string path = dir_ + "/" + ip;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return ioError("unlink " + path);
    removed = true;
  }
  if (removed) return fsyncDir(dir_);
  return std::nullopt;
}

std::optional<Error> Ipam::gc(const std::set<Attachment>& valid) {
  struct stat st;
  if (stat(dir_.c_str(), &st) != 0) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("lock " + dir_);
  bool removed = false;
  for (const auto& [ip, who] : allocations()) {
    if (valid.count(who)) continue;
    std::string path = dir_ + "/" + ip;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return ioError("unlink " + path);
    removed = true;
  }
  if (removed) return fsyncDir(dir_);
  return std::nullopt;
}

}  // namespace trellis::cni
