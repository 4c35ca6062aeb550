#include "servicelb/dns/zone.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "common/base/ip.h"
#include "common/kube/object.h"

namespace trellis::dns {
namespace json = boost::json;

namespace {

constexpr const char* kSpecVersion = "1.1.0";
// A record type that answers nothing: it keeps a name that has no records of
// its own in existence (svc.<zone>, pod.<zone>).
constexpr uint16_t kPlaceholder = 0;

std::string wireOf(std::string_view dotted) {
  std::string w;
  return toWire(dotted, w) ? w : std::string();
}

// The address's record type and data.
bool addressRecord(const base::IpAddr& ip, uint16_t& type, std::string& rdata) {
  if (ip.v6) {
    uint8_t b[16];
    for (int i = 0; i < 16; ++i) b[i] = static_cast<uint8_t>(ip.value >> (8 * (15 - i)));
    type = kAAAA;
    rdata = rdataAAAA(b);
  } else {
    uint8_t b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(ip.value >> (8 * (3 - i)));
    type = kA;
    rdata = rdataA(b);
  }
  return true;
}

// 10.1.2.3 -> "10-1-2-3"; 2001:db8::1 -> "2001-db8--1" (the spec's pod and
// endpoint label form).
std::string dashed(const base::IpAddr& ip) {
  std::string s = base::formatIp(ip);
  std::replace(s.begin(), s.end(), ip.v6 ? ':' : '.', '-');
  return s;
}

bool isDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return s.front() != '-' && s.back() != '-';
}

std::string lowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  return out;
}

}  // namespace

std::string reverseName(std::string_view text) {
  auto ip = base::parseIp(text);
  if (!ip) return {};
  std::string dotted;
  if (ip->v6) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (int i = 0; i < 32; ++i) {
      dotted += kHex[static_cast<int>((ip->value >> (4 * i)) & 0xF)];
      dotted += '.';
    }
    dotted += "ip6.arpa";
  } else {
    for (int i = 0; i < 4; ++i) dotted += fmt::format("{}.", static_cast<unsigned>((ip->value >> (8 * i)) & 0xFF));
    dotted += "in-addr.arpa";
  }
  return wireOf(dotted);
}

ServiceInfo serviceInfo(const json::object& svc) {
  ServiceInfo info;
  info.ns = kube::str(svc, {"metadata", "namespace"});
  info.name = kube::str(svc, {"metadata", "name"});
  if (kube::str(svc, {"spec", "type"}) == "ExternalName") {
    info.externalName = kube::str(svc, {"spec", "externalName"});
    return info;
  }
  if (auto* ips = kube::array(svc, {"spec", "clusterIPs"})) {
    for (auto& v : *ips) {
      if (v.is_string()) info.clusterIPs.emplace_back(v.get_string());
    }
  }
  if (info.clusterIPs.empty() && !kube::str(svc, {"spec", "clusterIP"}).empty()) {
    info.clusterIPs.emplace_back(kube::str(svc, {"spec", "clusterIP"}));
  }
  if (auto* ps = kube::array(svc, {"spec", "ports"})) {
    for (auto& v : *ps) {
      if (!v.is_object()) continue;
      auto& p = v.as_object();
      std::string_view proto = kube::str(p, {"protocol"});
      info.ports.push_back({std::string(kube::str(p, {"name"})), lowerAscii(proto.empty() ? "TCP" : proto),
                            static_cast<uint16_t>(kube::integer(p, {"port"}))});
    }
  }
  info.publishNotReadyAddresses = kube::boolean(svc, {"spec", "publishNotReadyAddresses"});
  return info;
}

SliceInfo sliceInfo(const json::object& slice) {
  SliceInfo info;
  std::string_view family = kube::str(slice, {"addressType"});
  info.ip = family == "IPv4" || family == "IPv6";
  if (!info.ip) return info;
  if (auto* ps = kube::array(slice, {"ports"})) {
    for (auto& v : *ps) {
      if (v.is_object()) {
        info.ports.emplace_back(kube::str(v.as_object(), {"name"}),
                                static_cast<uint16_t>(kube::integer(v.as_object(), {"port"})));
      }
    }
  }
  if (auto* eps = kube::array(slice, {"endpoints"})) {
    for (auto& v : *eps) {
      if (!v.is_object()) continue;
      auto& e = v.as_object();
      auto* addrs = kube::array(e, {"addresses"});
      if (!addrs) continue;
      bool ready = kube::boolean(e, {"conditions", "ready"}, true);
      for (auto& a : *addrs) {
        auto ip = a.is_string() ? base::parseIp(a.get_string()) : std::nullopt;
        if (!ip || ip->v6 != (family == "IPv6")) continue;
        info.endpoints.push_back({base::formatIp(*ip), std::string(kube::str(e, {"hostname"})), ready});
      }
    }
  }
  return info;
}

std::vector<Record> serviceRecords(const json::object& svc, const std::vector<std::shared_ptr<const json::object>>& slices,
                                   const ZoneConfig& config) {
  std::vector<SliceInfo> infos;
  for (auto& s : slices) infos.push_back(sliceInfo(*s));
  std::vector<const SliceInfo*> ptrs;
  for (auto& i : infos) ptrs.push_back(&i);
  return serviceRecords(serviceInfo(svc), ptrs, config);
}

std::vector<Record> serviceRecords(const ServiceInfo& svc, const std::vector<const SliceInfo*>& slices,
                                   const ZoneConfig& config) {
  std::vector<Record> out;
  std::string base = wireOf(fmt::format("{}.{}.svc.{}", svc.name, svc.ns, config.domain));
  if (base.empty() || !isDnsLabel(svc.name) || !isDnsLabel(svc.ns)) return out;

  if (!svc.externalName.empty()) {
    std::string target = wireOf(svc.externalName);
    if (target.size() > 1) out.push_back({base, kCNAME, rdataName(target)});
    return out;
  }
  if (svc.clusterIPs.empty()) return out;  // not allocated yet
  // _<port>._<proto>.<base>, for named ports.
  auto srvName = [&](const ServicePort& p) {
    if (!isDnsLabel(p.name)) return std::string();
    return wireOf(fmt::format("_{}._{}.{}.{}.svc.{}", p.name, p.protocol, svc.name, svc.ns, config.domain));
  };

  if (svc.clusterIPs.front() != "None") {
    for (const std::string& text : svc.clusterIPs) {
      auto ip = base::parseIp(text);
      if (!ip) continue;
      Record r{base, 0, {}};
      addressRecord(*ip, r.type, r.rdata);
      out.push_back(std::move(r));
      out.push_back({reverseName(text), kPTR, rdataName(base)});
    }
    for (const ServicePort& p : svc.ports) {
      std::string owner = srvName(p);
      if (!owner.empty()) out.push_back({owner, kSRV, rdataSrv(0, 100, p.port, base)});
    }
    return out;
  }

  // Headless: the ready endpoints (all, with publishNotReadyAddresses).
  struct Endpoint {
    std::string owner;  // <hostname or dashed address>.<base>
    const SliceInfo* slice;
  };
  std::vector<Endpoint> endpoints;
  std::set<std::string_view> seen;
  for (const SliceInfo* slice : slices) {
    if (!slice->ip) continue;
    for (const SliceEndpoint& e : slice->endpoints) {
      if ((!svc.publishNotReadyAddresses && !e.ready) || !seen.insert(e.address).second) continue;
      auto ip = base::parseIp(e.address);
      if (!ip) continue;
      Record r{base, 0, {}};
      addressRecord(*ip, r.type, r.rdata);
      std::string owner = wireOf(isDnsLabel(e.hostname) ? e.hostname : dashed(*ip));
      owner.pop_back();  // the label alone; the service's name follows
      owner += base;
      out.push_back(r);
      out.push_back({owner, r.type, r.rdata});
      out.push_back({reverseName(e.address), kPTR, rdataName(owner)});
      endpoints.push_back({owner, slice});
    }
  }
  for (const ServicePort& p : svc.ports) {
    std::string owner = srvName(p);
    if (owner.empty() || endpoints.empty()) continue;
    auto weight = static_cast<uint16_t>(std::max<size_t>(1, 100 / endpoints.size()));
    for (const Endpoint& e : endpoints) {
      for (auto& [name, port] : e.slice->ports) {
        if (name == p.name) out.push_back({owner, kSRV, rdataSrv(0, weight, port, e.owner)});
      }
    }
  }
  return out;
}

// ---- Zone

Zone::Zone(ZoneConfig config) : config_(std::move(config)) {
  zoneWire_ = wireOf(config_.domain);
  svcZoneWire_ = wireOf("svc." + config_.domain);
  podZoneWire_ = wireOf("pod." + config_.domain);
  std::string ns = wireOf("ns.dns." + config_.domain);
  std::string host = wireOf("hostmaster." + config_.domain);
  // CoreDNS's SOA: refresh 2h, retry 30m, expire 1d, minimum = the TTL.
  soa_ = rdataSoa(ns, host, static_cast<uint32_t>(time(nullptr)), 7200, 1800, 86400, config_.ttl);
  set("", {{zoneWire_, kSOA, soa_},
           {zoneWire_, kNS, rdataName(ns)},
           {wireOf("dns-version." + config_.domain), kTXT, rdataTxt(kSpecVersion)},
           {svcZoneWire_, kPlaceholder, {}},
           {podZoneWire_, kPlaceholder, {}}});
}

void Zone::setNameserverAddress(std::string_view ip) {
  auto a = base::parseIp(ip);
  std::vector<Record> rs;
  if (a) {
    Record r{wireOf("ns.dns." + config_.domain), 0, {}};
    addressRecord(*a, r.type, r.rdata);
    rs.push_back(std::move(r));
  }
  set("@nameserver", std::move(rs));
}

void Zone::setPodCheck(std::function<bool(std::string_view, std::string_view)> check) {
  std::unique_lock lock(mu_);
  podCheck_ = std::move(check);
}

namespace {

void put16(std::string& s, size_t v) {
  s += static_cast<char>(v >> 8);
  s += static_cast<char>(v);
}
size_t get16(std::string_view s, size_t at) { return size_t(uint8_t(s[at])) << 8 | uint8_t(s[at + 1]); }

// A source's records in one string: [owner length:1][owner][type:2][length:2][rdata] each.
std::string pack(const std::vector<Record>& records) {
  std::string out;
  for (const Record& r : records) {
    if (r.owner.empty() || r.owner.size() > kMaxNameWire) continue;
    out += static_cast<char>(r.owner.size());
    out += r.owner;
    put16(out, r.type);
    put16(out, r.rdata.size());
    out += r.rdata;
  }
  return out;
}

std::vector<Record> unpack(std::string_view packed) {
  std::vector<Record> out;
  for (size_t p = 0; p < packed.size();) {
    size_t n = uint8_t(packed[p]);
    Record r;
    r.owner = packed.substr(p + 1, n);
    p += 1 + n;
    r.type = static_cast<uint16_t>(get16(packed, p));
    size_t len = get16(packed, p + 2);
    r.rdata = packed.substr(p + 4, len);
    p += 4 + len;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

bool Zone::set(const std::string& source, std::vector<Record> records) {
  std::string packed = pack(records);
  std::unique_lock lock(mu_);
  auto it = sources_.find(source);
  if (it == sources_.end()) {
    if (packed.empty()) return false;
    it = sources_.emplace(source, std::string()).first;
  }
  if (it->second == packed) return false;
  for (const Record& r : unpack(it->second)) remove(r);
  for (const Record& r : records) add(r);
  if (packed.empty()) {
    sources_.erase(it);
  } else {
    it->second = std::move(packed);
    it->second.shrink_to_fit();
  }
  return true;
}

// Owners in the zone count for every name up to the zone's (so names with
// only something below them exist); reverse names count for themselves.
template <typename Fn>
void Zone::forEachCounted(std::string_view owner, Fn&& fn) const {
  if (!isWithin(owner, zoneWire_)) {
    fn(owner);
    return;
  }
  for (std::string_view n = owner;; n = parentOf(n)) {
    fn(n);
    if (n.size() <= zoneWire_.size()) break;
  }
}

void Zone::add(const Record& r) {
  if (r.owner.empty()) return;
  forEachCounted(r.owner, [&](std::string_view n) { names_.addRefs(n, 1); });
  names_.appendRecord(r.owner, r.type, r.rdata);
}

void Zone::remove(const Record& r) {
  if (!names_.removeRecord(r.owner, r.type, r.rdata)) return;
  forEachCounted(r.owner, [&](std::string_view n) { names_.addRefs(n, -1); });
}

size_t Zone::names() const {
  std::shared_lock lock(mu_);
  return names_.size();
}

size_t Zone::sources() const {
  std::shared_lock lock(mu_);
  return sources_.size();
}

void Zone::negative(const Query& q, Writer& w, uint16_t rcode) const {
  w.startResponse(q, rcode, true);
  // The SOA's owner is the zone: a suffix of the question's name.
  auto at = static_cast<uint16_t>(0xC000 | (kHeaderSize + q.nameLen - zoneWire_.size()));
  w.record(Writer::kAuthority, at, kSOA, config_.ttl, soa_);
}

void Zone::writeRecords(const Query& q, Writer& w, NameTable::Node node) const {
  bool srv = false;
  node.forEach([&](uint16_t type, std::string_view rdata) {
    if (type == kPlaceholder || (q.qtype != kANY && type != q.qtype)) return;
    w.record(Writer::kAnswer, kQuestionName, type, config_.ttl, rdata);
    srv |= type == kSRV;
  });
  if (!srv) return;
  // The targets' addresses, so a client need not ask again (after every answer:
  // sections do not interleave).
  node.forEach([&](uint16_t type, std::string_view rdata) {
    if (type != kSRV || rdata.size() <= 6) return;
    std::string_view target = rdata.substr(6);
    auto t = names_.find(target);
    if (!t) return;
    t.forEach([&](uint16_t at, std::string_view addr) {
      if (at == kA || at == kAAAA) w.recordNamed(Writer::kAdditional, target, at, config_.ttl, addr);
    });
  });
}

Zone::Outcome Zone::answer(const Query& q, Writer& w) const {
  std::string_view name = q.lowerName();
  bool inZone = isWithin(name, zoneWire_);
  std::shared_lock lock(mu_);
  if (!inZone) {
    // Reverse names of the cluster's addresses; the rest is not ours.
    if ((q.qtype != kPTR && q.qtype != kANY) || q.qclass != kClassIN) return kNotOurs;
    auto node = names_.find(name);
    if (!node || node.records().empty()) return kNotOurs;
    w.startResponse(q, kNoError, true);
    writeRecords(q, w, node);
    return kAnswered;
  }
  if (q.qclass != kClassIN && q.qclass != kANY) {
    w.startResponse(q, kRefused, false);
    return kAnswered;
  }
  if (q.qtype == kAXFR || q.qtype == kIXFR) {  // no zone transfers
    w.startResponse(q, kRefused, false);
    return kAnswered;
  }
  auto node = names_.find(name);
  if (!node) {
    answerPod(q, w, name);
    return kAnswered;
  }
  w.startResponse(q, kNoError, true);
  writeRecords(q, w, node);
  if (w.size() > kHeaderSize + q.question.size()) return kAnswered;  // something was written
  // A CNAME answers every type (ExternalName); its target is followed when it is ours.
  bool cname = false;
  node.forEach([&](uint16_t type, std::string_view target) {
    if (type != kCNAME || cname) return;
    cname = true;
    w.record(Writer::kAnswer, kQuestionName, kCNAME, config_.ttl, target);
    auto t = names_.find(target);
    if (!t) return;
    t.forEach([&](uint16_t at, std::string_view rdata) {
      if (at == q.qtype) w.recordNamed(Writer::kAnswer, target, at, config_.ttl, rdata);
    });
  });
  if (!cname) negative(q, w, kNoError);  // NODATA: the name exists
  return kAnswered;
}

void Zone::answerPod(const Query& q, Writer& w, std::string_view name) const {
  // <address>.<namespace>.pod.<zone>
  std::string_view nsName = parentOf(name);
  if (config_.pods == PodRecords::kDisabled || parentOf(nsName) != podZoneWire_) {
    negative(q, w, kNXDomain);
    return;
  }
  // The address with dashes for its dots (IPv4) or colons (IPv6), in canonical form.
  std::string text(firstLabel(name));
  std::replace(text.begin(), text.end(), '-', '.');
  auto ip = base::parseIp(text);
  if (!ip) {
    std::replace(text.begin(), text.end(), '.', ':');
    ip = base::parseIp(text);
  }
  if (!ip || base::formatIp(*ip) != text ||
      (config_.pods == PodRecords::kVerified && (!podCheck_ || !podCheck_(firstLabel(nsName), text)))) {
    negative(q, w, kNXDomain);
    return;
  }
  uint16_t type;
  std::string rdata;
  addressRecord(*ip, type, rdata);
  if (q.qtype != type && q.qtype != kANY) {
    negative(q, w, kNoError);
    return;
  }
  w.startResponse(q, kNoError, true);
  w.record(Writer::kAnswer, kQuestionName, type, config_.ttl, rdata);
}

}  // namespace trellis::dns
