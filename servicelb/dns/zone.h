// The cluster zone: every name the Kubernetes DNS-Based Service Discovery
// specification (1.1.0) gives Services and their endpoints, held in memory
// and answered without calling anyone.
//
//   dns::Zone zone({.domain = "cluster.local", .ttl = 5});
//   zone.set("ns/web", dns::serviceRecords(*svc, slices, zone.config()));  // on each change
//   if (zone.answer(query, writer) == dns::Zone::kNotOurs) forward(query);
//
// Records come from sources (one per Service); set() replaces what a source
// gives, touching only the names it changes. Names that exist only because
// something lies below them (`ns.svc.cluster.local`) answer NODATA, names
// that do not exist NXDOMAIN, both with the zone's SOA for negative caching
// (RFC 2308). Reverse names (in-addr.arpa, ip6.arpa) that are not the
// cluster's fall through to the upstream resolvers, as CoreDNS's default
// Corefile does.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/json/object.hpp>

#include "servicelb/dns/message.h"
#include "servicelb/dns/names.h"

namespace trellis::dns {

enum class PodRecords { kDisabled, kInsecure, kVerified };

struct ZoneConfig {
  std::string domain = "cluster.local";
  uint32_t ttl = 5;
  PodRecords pods = PodRecords::kInsecure;
};

struct Record {
  std::string owner;  // wire form, lowercase
  uint16_t type = 0;
  std::string rdata;
  bool operator==(const Record&) const = default;
};

// What of a Service and an EndpointSlice makes records: kept per object by
// the watcher (a few hundred bytes each, where the objects take kilobytes).
struct ServicePort {
  std::string name, protocol;  // protocol lowercase: "tcp"
  uint16_t port = 0;
  bool operator==(const ServicePort&) const = default;
};
struct ServiceInfo {
  std::string ns, name;
  std::string externalName;             // type ExternalName
  std::vector<std::string> clusterIPs;  // "None" first: headless
  std::vector<ServicePort> ports;
  bool publishNotReadyAddresses = false;
  bool operator==(const ServiceInfo&) const = default;
};
struct SliceEndpoint {
  std::string address, hostname;
  bool ready = true;
  bool operator==(const SliceEndpoint&) const = default;
};
struct SliceInfo {
  bool ip = false;  // addressType IPv4 or IPv6 (FQDN slices give no records)
  std::vector<std::pair<std::string, uint16_t>> ports;  // name -> port
  std::vector<SliceEndpoint> endpoints;
  bool operator==(const SliceInfo&) const = default;
};
ServiceInfo serviceInfo(const boost::json::object& service);
SliceInfo sliceInfo(const boost::json::object& slice);

// The records one Service and its EndpointSlices give (pure).
std::vector<Record> serviceRecords(const ServiceInfo& service, const std::vector<const SliceInfo*>& slices,
                                   const ZoneConfig& config);
// The same from the objects.
std::vector<Record> serviceRecords(const boost::json::object& service,
                                   const std::vector<std::shared_ptr<const boost::json::object>>& slices,
                                   const ZoneConfig& config);

// "d.c.b.a.in-addr.arpa" / nibbles ".ip6.arpa" of an address, in wire form;
// "" when `ip` is not one.
std::string reverseName(std::string_view ip);

class Zone {
 public:
  explicit Zone(ZoneConfig config);

  const ZoneConfig& config() const { return config_; }
  // Replaces what `source` gives; returns whether anything changed.
  bool set(const std::string& source, std::vector<Record> records);
  // The address ns.dns.<zone> answers with (the kube-dns Service's).
  void setNameserverAddress(std::string_view ip);
  // In PodRecords::kVerified, whether a pod in `ns` has `ip`.
  void setPodCheck(std::function<bool(std::string_view ns, std::string_view ip)> check);

  enum Outcome { kAnswered, kNotOurs };
  // Writes the whole answer to `q` when the name is the zone's (or a reverse
  // name it holds); otherwise kNotOurs and `w` is untouched.
  Outcome answer(const Query& q, Writer& w) const;

  size_t names() const;
  size_t sources() const;
  const std::string& zoneWire() const { return zoneWire_; }

 private:
  template <typename Fn>
  void forEachCounted(std::string_view owner, Fn&& fn) const;
  void add(const Record& r);
  void remove(const Record& r);
  void answerPod(const Query& q, Writer& w, std::string_view name) const;
  void negative(const Query& q, Writer& w, uint16_t rcode) const;
  void writeRecords(const Query& q, Writer& w, NameTable::Node node) const;

  ZoneConfig config_;
  std::string zoneWire_, podZoneWire_, svcZoneWire_;
  std::string soa_;
  mutable std::shared_mutex mu_;
  NameTable names_;
  std::unordered_map<std::string, std::string> sources_;  // source -> its records, packed
  std::function<bool(std::string_view, std::string_view)> podCheck_;
};

}  // namespace trellis::dns
