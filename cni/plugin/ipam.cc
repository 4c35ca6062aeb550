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

#include "cni/plugin/naming.h"
#include "common/base/ip.h"

namespace trellis::cni {

namespace json = boost::json;
using u128 = unsigned __int128;

namespace {

using Addr = base::IpAddr;
using Cidr = base::IpCidr;

std::optional<Addr> parseAddr(const std::string& s) { return base::parseIp(s); }
std::string formatAddr(const Addr& a) { return base::formatIp(a); }
std::optional<Cidr> parseCidr(const std::string& s) {
  auto c = base::parseCidr(s);
  return c ? std::optional<Cidr>(*c) : std::nullopt;
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


// A small value kept as a symlink's target: created with its content in one
// atomic step (symlink() fails with EEXIST like O_EXCL) and needing no fsync
// of its own (a directory fsync covers it).
std::optional<std::string> readValue(const std::string& path) {
  char buf[512];
  ssize_t n = readlink(path.c_str(), buf, sizeof buf);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  if (errno != EINVAL) return std::nullopt;
  // A regular file (host-local's format, and this store's older one).
  std::ifstream in(path);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The attachment an allocation entry holds ("containerID\nifname\n").
Attachment attachmentOf(const std::string& value) {
  std::istringstream in(value);
  std::string id, ifname;
  std::getline(in, id);
  std::getline(in, ifname);
  if (!id.empty() && id.back() == '\r') id.pop_back();
  return {id, ifname};
}

std::string entryValue(const Attachment& a) { return a.first + "\n" + a.second + "\n"; }

bool isAddressFile(const std::string& name) { return parseAddr(name).has_value(); }

// The index of an attachment's addresses: "att-" + 16 hex digits of a hash
// of the attachment, holding "ip[,ip]".
constexpr std::string_view kIndexPrefix = "att-";
std::string indexName(const Attachment& a) { return fmt::format("{}{:016x}", kIndexPrefix, fnv1a(entryValue(a))); }

// Replaces the symlink `path` with one holding `value` (atomically: a
// temporary link renamed over it).
bool replaceValue(const std::string& path, const std::string& value) {
  std::string tmp = path + ".tmp";
  unlink(tmp.c_str());
  if (symlink(value.c_str(), tmp.c_str()) != 0) return false;
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// An index: "containerID\nifname\nip[,ip]" — the attachment, then its
// addresses. Allocation entries are hard links to it.
std::string indexValue(const Attachment& a, const std::vector<std::string>& ips) {
  std::string list;
  for (const std::string& ip : ips) list += (list.empty() ? "" : ",") + ip;
  return entryValue(a) + list;
}

std::vector<std::string> addressesOf(const std::string& indexValue) {
  std::vector<std::string> out;
  std::istringstream in(indexValue);
  std::string line;
  for (int i = 0; i < 3 && std::getline(in, line); ++i) {
    if (i < 2) continue;
    std::istringstream list(line);
    for (std::string ip; std::getline(list, ip, ',');) {
      if (!ip.empty()) out.push_back(ip);
    }
  }
  return out;
}

// The round-robin hints, one line per range set ("where the search
// continues"), kept in the lock file: rewritten in place, no new file.
std::vector<std::string> readHints(int fd) {
  char buf[4096];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  std::vector<std::string> out;
  std::istringstream in(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void writeHints(int fd, const std::vector<std::string>& hints) {
  std::string text;
  for (const std::string& h : hints) text += h + "\n";
  if (pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size())) {
    static_cast<void>(ftruncate(fd, static_cast<off_t>(text.size())));
  }
}

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
  if (std::string d = str(ipam, "dataDir"); !d.empty()) {
    if (d[0] != '/') return configError(fmt::format("ipam: dataDir {:?} must be an absolute path", d));
    cfg.dataDir = d;
  }
  return cfg;
}

Ipam::Ipam(IpamConfig config, std::string network)
    : config_(std::move(config)), dir_(config_.dataDir + "/" + network) {}

std::vector<std::pair<std::string, Attachment>> Ipam::allocations() const {
  std::vector<std::pair<std::string, Attachment>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (!isAddressFile(name)) continue;
    if (auto v = readValue(e.path().string())) out.emplace_back(name, attachmentOf(*v));
  }
  return out;
}

std::variant<Result, Error> Ipam::allocate(const std::string& containerId, const std::string& ifname) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Error{ErrorCode::kIo, fmt::format("creating {}: {}", dir_, ec.message()), ""};
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("lock " + dir_);
  const Attachment me{containerId, ifname};
  // What the attachment already holds, from its index: only entries that
  // really are its own count (the index is written before the entries, so
  // after a crash it may name addresses that were never taken, or that
  // another attachment took since).
  const std::string index = dir_ + "/" + indexName(me);
  std::vector<Addr> held, untaken;  // listed and ours; listed and free (a crash came between)
  std::optional<std::string> oldIndex = readValue(index);
  if (oldIndex) {
    for (const std::string& ip : addressesOf(*oldIndex)) {
      auto a = parseAddr(ip);
      if (!a) continue;
      auto v = readValue(dir_ + "/" + ip);
      if (v && attachmentOf(*v) == me) held.push_back(*a);
      if (!v && errno == ENOENT) untaken.push_back(*a);
    }
  }
  std::vector<std::string> hints = readHints(lock.fd());
  hints.resize(std::max(hints.size(), config_.rangeSets.size()));
  Result result;
  std::vector<std::string> all, toCreate;
  for (size_t s = 0; s < config_.rangeSets.size(); ++s) {
    std::vector<Resolved> ranges;
    for (const IpRange& r : config_.rangeSets[s]) ranges.push_back(std::get<Resolved>(resolve(r, "")));
    auto rangeOf = [&](const Addr& a) -> const Resolved* {
      for (const Resolved& r : ranges) {
        if (a.v6 == r.first.v6 && a.value >= r.first.value && a.value <= r.last.value) return &r;
      }
      return nullptr;
    };
    // Already holds one in this set: the same again.
    std::optional<std::pair<Addr, const Resolved*>> chosen;
    for (const Addr& a : held) {
      if (const Resolved* r = rangeOf(a)) chosen = {{a, r}};
    }
    for (const Addr& a : untaken) {
      const Resolved* r = rangeOf(a);
      if (!chosen && r && a.value != r->gateway.value) {
        chosen = {{a, r}};  // what an interrupted ADD of this attachment meant to take
        toCreate.push_back(formatAddr(a));
      }
    }
    if (!chosen) {
      // Round robin after the last address handed out in this set.
      std::optional<Addr> last = parseAddr(hints[s]);
      size_t startRange = 0;
      u128 startOffset = 0;
      for (size_t i = 0; last && i < ranges.size(); ++i) {
        if (last->v6 == ranges[i].first.v6 && last->value >= ranges[i].first.value && last->value <= ranges[i].last.value) {
          startRange = i;
          startOffset = last->value - ranges[i].first.value + 1;
        }
      }
      // Walk every candidate once, wrapping around the set. Under the lock,
      // a missing entry is a free address.
      for (size_t k = 0; k <= ranges.size() && !chosen; ++k) {
        const Resolved& r = ranges[(startRange + k) % ranges.size()];
        u128 count = r.last.value - r.first.value + 1;
        u128 begin = k == 0 ? startOffset : 0;
        u128 end = k == ranges.size() ? startOffset : count;  // the wrapped first range, up to where we began
        for (u128 off = begin; off < end && off < count && !chosen; ++off) {
          Addr a{r.first.v6, r.first.value + off};
          if (a.value == r.gateway.value) continue;
          struct stat st;
          std::string path = dir_ + "/" + formatAddr(a);
          if (lstat(path.c_str(), &st) == 0) continue;
          if (errno != ENOENT) return ioError("stat " + path);
          chosen = {{a, &r}};
          toCreate.push_back(formatAddr(a));
          hints[s] = formatAddr(a);
        }
      }
      if (!chosen) {
        return Error{ErrorCode::kTryAgainLater,
                     fmt::format("no free address in range set {} of network {}", s, dir_), ""};
      }
    }
    all.push_back(formatAddr(chosen->first));
    const Resolved& r = *chosen->second;
    result.ips.push_back(IpConfig{fmt::format("{}/{}", all.back(), r.subnet.prefix), formatAddr(r.gateway), -1});
  }
  if (!toCreate.empty()) {
    // The index first, then the entries as hard links to it (directory
    // entries only: creating an inode costs this much more on ext4). A
    // crash in between leaves an index naming addresses that are not (all)
    // taken — which the next ADD, DEL or GC of the attachment sorts out —
    // but never an entry that no index leads to.
    std::string value = indexValue(me, all);
    bool written = oldIndex ? replaceValue(index, value) : symlink(value.c_str(), index.c_str()) == 0;
    if (!written) return ioError("write " + index);
    for (const std::string& ip : toCreate) {
      std::string path = dir_ + "/" + ip;
      if (link(index.c_str(), path.c_str()) != 0) return ioError("create " + path);
    }
    writeHints(lock.fd(), hints);
  }
  result.routes = config_.routes;
  return result;
}

std::optional<Error> Ipam::release(const std::string& containerId, const std::string& ifname) {
  struct stat st;
  if (stat(dir_.c_str(), &st) != 0) return std::nullopt;  // nothing was ever allocated
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("lock " + dir_);
  const Attachment me{containerId, ifname};
  const std::string index = dir_ + "/" + indexName(me);
  // The index names every entry of the attachment; without one (entries
  // in host-local's format, or an index hash shared with another
  // attachment) every entry is looked at.
  std::vector<std::string> candidates;
  auto listed = readValue(index);
  if (listed && attachmentOf(*listed) == me) {
    for (const std::string& ip : addressesOf(*listed)) {
      auto v = readValue(dir_ + "/" + ip);
      if (v && attachmentOf(*v) == me) candidates.push_back(ip);
    }
  } else {
    for (const auto& [ip, who] : allocations()) {
      if (who == me) candidates.push_back(ip);
    }
  }
  for (const std::string& ip : candidates) {
    std::string path = dir_ + "/" + ip;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return ioError("unlink " + path);
  }
  if (listed && attachmentOf(*listed) == me) unlink(index.c_str());
  return std::nullopt;
}

std::optional<Error> Ipam::gc(const std::set<Attachment>& valid) {
  struct stat st;
  if (stat(dir_.c_str(), &st) != 0) return std::nullopt;
  FileLock lock(dir_ + "/lock");
  if (!lock.ok()) return ioError("lock " + dir_);
  std::set<std::string> liveIndexes;
  for (const auto& [ip, who] : allocations()) {
    if (valid.count(who)) {
      liveIndexes.insert(indexName(who));
      continue;
    }
    std::string path = dir_ + "/" + ip;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return ioError("unlink " + path);
  }
  // Indexes of attachments that hold nothing any more, and temporaries.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (!name.starts_with(kIndexPrefix) || liveIndexes.count(name)) continue;
    unlink(e.path().c_str());
  }
  return std::nullopt;
}

}  // namespace trellis::cni
