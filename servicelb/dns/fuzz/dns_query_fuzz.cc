// Fuzzes what trellis-dns does with a packet from the network: the query
// parser, the zone's answer (into a buffer of every size a client may allow),
// the upstream-response scanner and the cache that replays what it keeps.
#include <cstdint>
#include <cstring>
#include <memory>

#include <boost/json/parse.hpp>

#include "servicelb/dns/cache.h"
#include "servicelb/dns/message.h"
#include "servicelb/dns/zone.h"

using namespace trellis::dns;

namespace {
Zone& zone() {
  static Zone* z = [] {
    auto* zone = new Zone({.domain = "cluster.local", .ttl = 5, .pods = PodRecords::kInsecure});
    auto svc = [](const char* text) { return boost::json::parse(text).as_object(); };
    zone->set("default/web", serviceRecords(svc(R"({"metadata":{"name":"web","namespace":"default"},
        "spec":{"clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10","fd00::10"],
                "ports":[{"name":"http","port":80,"protocol":"TCP"}]}})"), {}, zone->config()));
    auto slice = std::make_shared<const boost::json::object>(boost::json::parse(R"({"addressType":"IPv4",
        "ports":[{"name":"http","port":8080}],"endpoints":[{"addresses":["10.244.0.5"],"hostname":"db-0"},
        {"addresses":["10.244.0.6"],"conditions":{"ready":true}}]})").as_object());
    zone->set("default/db", serviceRecords(svc(R"({"metadata":{"name":"db","namespace":"default"},
        "spec":{"clusterIP":"None","ports":[{"name":"http","port":80}]}})"), {slice}, zone->config()));
    zone->set("default/ext", serviceRecords(svc(R"({"metadata":{"name":"ext","namespace":"default"},
        "spec":{"type":"ExternalName","externalName":"web.default.svc.cluster.local"}})"), {}, zone->config()));
    return zone;
  }();
  return *z;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uint8_t out[kMaxMessage];
  Cache cache(16, 3600, 1800);  // per input: what it replays is what this input stored
  if (size > kMaxMessage) return 0;
  Query q;
  if (parseQuery(data, size, q) == Parsed::kOk) {
    size_t limits[] = {0, 12, 100, q.udpLimit(), kMaxMessage};
    for (size_t limit : limits) {
      Writer w(out, sizeof out);
      if (zone().answer(q, w) == Zone::kAnswered) {
        size_t n = w.finish(q, limit);
        Query again;
        if (n < kHeaderSize || parseQuery(out, n, again) != Parsed::kDrop) __builtin_trap();  // answers are responses
      }
    }
    // The packet, QR set, as an upstream's answer to its own question.
    static uint8_t response[kMaxMessage];
    memcpy(response, data, size);
    response[2] |= 0x80;
    ResponseInfo info;
    if (scanResponse(response, size, q.question, info)) {
      auto now = Cache::Clock::now();
      cache.store(q, response, size, info, now);
      if (size_t n = cache.lookup(q, out, sizeof out, now + std::chrono::seconds(1)); n && n != size) __builtin_trap();
    }
  }
  return 0;
}
