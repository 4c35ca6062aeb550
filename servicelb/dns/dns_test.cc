// The wire format, the zone's answers per the Kubernetes DNS specification,
// and the cache — decoded back by a reader written here, not by the code
// under test.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "servicelb/dns/cache.h"
#include "servicelb/dns/message.h"
#include "servicelb/dns/names.h"
#include "servicelb/dns/zone.h"

namespace trellis::dns {
namespace {

namespace json = boost::json;

// ---- a query builder and a response reader for the tests

std::string wireName(const std::string& dotted) {
  std::string out;
  size_t start = 0;
  while (start < dotted.size()) {
    size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) dot = dotted.size();
    out += static_cast<char>(dot - start);
    out += dotted.substr(start, dot - start);
    start = dot + 1;
  }
  return out + '\0';
}

std::string u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }

std::string query(const std::string& name, uint16_t type, int ednsSize = 0, uint16_t id = 0x4242, uint16_t flags = 0x0100) {
  std::string q = u16(id) + u16(flags) + u16(1) + u16(0) + u16(0) + u16(ednsSize ? 1 : 0);
  q += wireName(name) + u16(type) + u16(kClassIN);
  if (ednsSize) q += std::string(1, '\0') + u16(kOPT) + u16(static_cast<uint16_t>(ednsSize)) + std::string(4, '\0') + u16(0);
  return q;
}

struct Rr {
  std::string name;
  uint16_t type = 0;
  uint32_t ttl = 0;
  std::string data;  // A/AAAA: text; names: dotted; SRV: "prio weight port target"; TXT: text; other: raw
};
struct Msg {
  uint16_t id = 0, flags = 0;
  int rcode() const { return flags & 0xF; }
  bool aa() const { return flags & 0x0400; }
  bool tc() const { return flags & 0x0200; }
  std::vector<Rr> answer, authority, additional;
  size_t size = 0;
};

struct Reader {
  const std::string& m;
  size_t p = 0;
  uint16_t r16() {
    uint16_t v = static_cast<uint16_t>(uint8_t(m.at(p)) << 8 | uint8_t(m.at(p + 1)));
    p += 2;
    return v;
  }
  uint32_t r32() { return uint32_t(r16()) << 16 | r16(); }
  std::string name() {
    std::string out;
    size_t at = p;
    bool jumped = false;
    for (int guard = 0; guard < 100; ++guard) {
      uint8_t l = uint8_t(m.at(at));
      if (l == 0) {
        if (!jumped) p = at + 1;
        return out.empty() ? "." : out;
      }
      if ((l & 0xC0) == 0xC0) {
        size_t to = (l & 0x3F) << 8 | uint8_t(m.at(at + 1));
        if (!jumped) p = at + 2;
        jumped = true;
        at = to;
        continue;
      }
      out += m.substr(at + 1, l) + ".";
      at += 1 + l;
    }
    throw std::runtime_error("name loop");
  }
  Rr rr() {
    Rr r;
    r.name = name();
    r.type = r16();
    r16();
    r.ttl = r32();
    uint16_t len = r16();
    size_t end = p + len;
    if (r.type == kA) {
      r.data = fmt::format("{}.{}.{}.{}", uint8_t(m[p]), uint8_t(m[p + 1]), uint8_t(m[p + 2]), uint8_t(m[p + 3]));
    } else if (r.type == kAAAA) {
      r.data = fmt::format("{:02x}{:02x}..{:02x}{:02x}", uint8_t(m[p]), uint8_t(m[p + 1]), uint8_t(m[p + 14]),
                           uint8_t(m[p + 15]));
    } else if (r.type == kCNAME || r.type == kPTR || r.type == kNS) {
      r.data = name();
    } else if (r.type == kSRV) {
      uint16_t prio = r16(), weight = r16(), port = r16();
      r.data = fmt::format("{} {} {} {}", prio, weight, port, name());
    } else if (r.type == kTXT) {
      r.data = m.substr(p + 1, uint8_t(m[p]));
    } else if (r.type == kSOA) {
      std::string mname = name(), rname = name();
      r16(), r16(), r32(), r32(), r32();
      r.data = mname + " " + rname + " " + std::to_string(r32());
    }
    p = end;
    return r;
  }
};

Msg parse(const std::string& m) {
  Reader r{m};
  Msg out;
  out.size = m.size();
  out.id = r.r16();
  out.flags = r.r16();
  uint16_t qd = r.r16(), an = r.r16(), ns = r.r16(), ar = r.r16();
  for (int i = 0; i < qd; ++i) {
    r.name();
    r.r32();
  }
  for (int i = 0; i < an; ++i) out.answer.push_back(r.rr());
  for (int i = 0; i < ns; ++i) out.authority.push_back(r.rr());
  for (int i = 0; i < ar; ++i) out.additional.push_back(r.rr());
  EXPECT_EQ(r.p, m.size()) << "trailing bytes";
  return out;
}

std::vector<std::string> datas(const std::vector<Rr>& rrs, uint16_t type) {
  std::vector<std::string> out;
  for (auto& r : rrs) {
    if (r.type == type) out.push_back(r.data);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- the wire format

TEST(Message, ParsesAQueryWithEdnsAndLowercasesItsName) {
  std::string pkt = query("WeB.Default.SVC.cluster.local", kAAAA, 4096);
  Query q;
  ASSERT_EQ(parseQuery(reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(), q), Parsed::kOk);
  EXPECT_EQ(q.id, 0x4242);
  EXPECT_EQ(q.qtype, kAAAA);
  EXPECT_TRUE(q.rd());
  EXPECT_EQ(toDotted(q.lowerName()), "web.default.svc.cluster.local.");
  EXPECT_TRUE(q.edns);
  EXPECT_EQ(q.udpSize, 4096);
  EXPECT_EQ(q.udpLimit(), kMaxUdpSize);
  EXPECT_EQ(q.question.substr(1, 3), "WeB");  // echoed as written
}

TEST(Message, RefusesWhatIsNotAPlainQuery) {
  Query q;
  auto parseText = [&](const std::string& pkt) { return parseQuery(reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(), q); };
  EXPECT_EQ(parseText("short"), Parsed::kDrop);
  EXPECT_EQ(parseText(query("a.b", kA, 0, 1, 0x8100)), Parsed::kDrop);  // a response
  EXPECT_EQ(parseText(query("a.b", kA, 0, 1, 0x2800)), Parsed::kNotImp);  // UPDATE
  std::string two = query("a.b", kA);
  two[5] = 2;
  EXPECT_EQ(parseText(two), Parsed::kFormErr);
  std::string cut = query("a.b", kA);
  cut.resize(cut.size() - 3);
  EXPECT_EQ(parseText(cut), Parsed::kFormErr);
  std::string pointer = u16(1) + u16(0) + u16(1) + u16(0) + u16(0) + u16(0) + "\xC0\x0C" + u16(1) + u16(1);
  EXPECT_EQ(parseText(pointer), Parsed::kFormErr);
  std::string v1 = query("a.b", kA, 1232);
  v1[v1.size() - 5] = 1;  // EDNS version 1
  EXPECT_EQ(parseText(v1), Parsed::kBadVers);
  std::string twoOpt = query("a.b", kA, 1232);
  twoOpt[11] = 2;
  twoOpt += std::string(1, '\0') + u16(kOPT) + u16(512) + std::string(4, '\0') + u16(0);
  EXPECT_EQ(parseText(twoOpt), Parsed::kFormErr);
  std::string longLabel = query(std::string(64, 'a') + ".b", kA);
  EXPECT_EQ(parseText(longLabel), Parsed::kFormErr);
}

TEST(Message, NamesInWireForm) {
  std::string w;
  ASSERT_TRUE(toWire("Web.NS.svc.cluster.local.", w));
  EXPECT_EQ(toDotted(w), "web.ns.svc.cluster.local.");
  EXPECT_EQ(labelCount(w), 5);
  EXPECT_EQ(firstLabel(w), "web");
  EXPECT_EQ(toDotted(parentOf(w)), "ns.svc.cluster.local.");
  std::string zone;
  toWire("cluster.local", zone);
  EXPECT_TRUE(isWithin(w, zone));
  EXPECT_TRUE(isWithin(zone, zone));
  std::string other;
  toWire("xcluster.local", other);
  EXPECT_FALSE(isWithin(other, zone));
  EXPECT_FALSE(toWire("a..b", w));
  EXPECT_FALSE(toWire(std::string(64, 'x'), w));
  EXPECT_EQ(toDotted(reverseName("10.96.0.10")), "10.0.96.10.in-addr.arpa.");
  EXPECT_EQ(toDotted(reverseName("fd00::1")).substr(0, 8), "1.0.0.0.");
  EXPECT_EQ(toDotted(reverseName("fd00::1")).substr(56), "0.0.d.f.ip6.arpa.");
}

// ---- the zone

class ZoneTest : public ::testing::Test {
 protected:
  ZoneTest() : zone_({.domain = "cluster.local", .ttl = 7}) {}

  void service(const std::string& json, const std::vector<std::string>& slices = {}) {
    auto svc = json::parse(json).as_object();
    std::vector<std::shared_ptr<const json::object>> ss;
    for (auto& s : slices) ss.push_back(std::make_shared<const json::object>(json::parse(s).as_object()));
    std::string key = fmt::format("{}/{}", kube_str(svc, "namespace"), kube_str(svc, "name"));
    zone_.set(key, serviceRecords(svc, ss, zone_.config()));
  }
  static std::string kube_str(const json::object& o, const char* field) {
    return std::string(o.at("metadata").as_object().at(field).as_string());
  }

  Msg ask(const std::string& name, uint16_t type, int edns = 0, size_t limit = 0) {
    std::string pkt = query(name, type, edns);
    Query q;
    EXPECT_EQ(parseQuery(reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(), q), Parsed::kOk);
    uint8_t buf[kMaxMessage];
    Writer w(buf, sizeof buf);
    answered_ = zone_.answer(q, w) == Zone::kAnswered;
    if (!answered_) return {};
    size_t n = w.finish(q, limit ? limit : q.udpLimit());
    return parse(std::string(reinterpret_cast<char*>(buf), n));
  }

  Zone zone_;
  bool answered_ = false;
};

constexpr const char* kWeb = R"({"metadata":{"name":"web","namespace":"shop"},
  "spec":{"clusterIP":"10.96.0.20","clusterIPs":["10.96.0.20","fd00::20"],
          "ports":[{"name":"http","port":80,"protocol":"TCP"},{"name":"dns","port":53,"protocol":"UDP"},{"port":9000}]}})";

TEST_F(ZoneTest, AClusterIpServiceHasItsAddressesSrvAndPtr) {
  service(kWeb);
  Msg a = ask("web.shop.svc.cluster.local", kA);
  EXPECT_EQ(a.rcode(), kNoError);
  EXPECT_TRUE(a.aa());
  EXPECT_EQ(datas(a.answer, kA), std::vector<std::string>{"10.96.0.20"});
  EXPECT_EQ(a.answer[0].ttl, 7u);
  EXPECT_EQ(a.answer[0].name, "web.shop.svc.cluster.local.");
  EXPECT_EQ(datas(ask("web.shop.svc.cluster.local", kAAAA).answer, kAAAA), std::vector<std::string>{"fd00..0020"});
  EXPECT_EQ(datas(ask("_http._tcp.web.shop.svc.cluster.local", kSRV).answer, kSRV),
            std::vector<std::string>{"0 100 80 web.shop.svc.cluster.local."});
  Msg srv = ask("_dns._udp.web.shop.svc.cluster.local", kSRV);
  EXPECT_EQ(datas(srv.answer, kSRV), std::vector<std::string>{"0 100 53 web.shop.svc.cluster.local."});
  EXPECT_EQ(datas(srv.additional, kA), std::vector<std::string>{"10.96.0.20"});  // the target's address
  EXPECT_EQ(datas(ask("20.0.96.10.in-addr.arpa", kPTR).answer, kPTR),
            std::vector<std::string>{"web.shop.svc.cluster.local."});
  EXPECT_EQ(ask("_http._udp.web.shop.svc.cluster.local", kSRV).rcode(), kNXDomain);  // wrong protocol
  // Letter case as the client wrote it comes back; the name matches regardless.
  EXPECT_EQ(datas(ask("WEB.Shop.svc.Cluster.Local", kA).answer, kA), std::vector<std::string>{"10.96.0.20"});
}

TEST_F(ZoneTest, NxdomainAndNodataAsTheSpecificationSays) {
  service(kWeb);
  Msg nx = ask("nosuch.shop.svc.cluster.local", kA);
  EXPECT_EQ(nx.rcode(), kNXDomain);
  EXPECT_TRUE(nx.answer.empty());
  ASSERT_EQ(nx.authority.size(), 1u);
  EXPECT_EQ(nx.authority[0].type, kSOA);
  EXPECT_EQ(nx.authority[0].name, "cluster.local.");
  EXPECT_EQ(nx.authority[0].data, "ns.dns.cluster.local. hostmaster.cluster.local. 7");  // negative TTL: the minimum
  // The name exists with other types: NODATA (NOERROR, no answer, the SOA).
  Msg nodata = ask("web.shop.svc.cluster.local", kTXT);
  EXPECT_EQ(nodata.rcode(), kNoError);
  EXPECT_TRUE(nodata.answer.empty());
  EXPECT_EQ(nodata.authority.size(), 1u);
  // Names with something below them exist too.
  for (const char* ent : {"shop.svc.cluster.local", "svc.cluster.local", "_tcp.web.shop.svc.cluster.local",
                          "pod.cluster.local"}) {
    EXPECT_EQ(ask(ent, kA).rcode(), kNoError) << ent;
  }
  EXPECT_EQ(ask("emptyns.svc.cluster.local", kA).rcode(), kNXDomain);
  EXPECT_EQ(ask("x.web.shop.svc.cluster.local", kA).rcode(), kNXDomain);
  // The zone's own records.
  EXPECT_EQ(datas(ask("dns-version.cluster.local", kTXT).answer, kTXT), std::vector<std::string>{"1.1.0"});
  EXPECT_EQ(ask("cluster.local", kSOA).answer.size(), 1u);
  EXPECT_EQ(datas(ask("cluster.local", kNS).answer, kNS), std::vector<std::string>{"ns.dns.cluster.local."});
  // Outside the zone: not ours (forwarded), and so are reverse names the zone does not hold.
  ask("example.com", kA);
  EXPECT_FALSE(answered_);
  ask("1.0.0.127.in-addr.arpa", kPTR);
  EXPECT_FALSE(answered_);
  // Zone transfers are refused.
  EXPECT_EQ(ask("cluster.local", kAXFR).rcode(), kRefused);
}

TEST_F(ZoneTest, AHeadlessServiceHasItsReadyEndpoints) {
  service(R"({"metadata":{"name":"db","namespace":"shop"},
    "spec":{"clusterIP":"None","ports":[{"name":"pg","port":5432,"protocol":"TCP"}]}})",
          {R"({"addressType":"IPv4","ports":[{"name":"pg","port":15432,"protocol":"TCP"}],"endpoints":[
             {"addresses":["10.244.1.5"],"hostname":"db-0","conditions":{"ready":true}},
             {"addresses":["10.244.1.6"],"hostname":"db-1"},
             {"addresses":["10.244.1.7"],"conditions":{"ready":true}},
             {"addresses":["10.244.1.8"],"hostname":"db-3","conditions":{"ready":false}}]})"});
  EXPECT_EQ(datas(ask("db.shop.svc.cluster.local", kA).answer, kA),
            (std::vector<std::string>{"10.244.1.5", "10.244.1.6", "10.244.1.7"}));
  EXPECT_EQ(datas(ask("db-0.db.shop.svc.cluster.local", kA).answer, kA), std::vector<std::string>{"10.244.1.5"});
  EXPECT_EQ(datas(ask("10-244-1-7.db.shop.svc.cluster.local", kA).answer, kA), std::vector<std::string>{"10.244.1.7"});
  EXPECT_EQ(ask("db-3.db.shop.svc.cluster.local", kA).rcode(), kNXDomain);  // not ready
  EXPECT_EQ(datas(ask("_pg._tcp.db.shop.svc.cluster.local", kSRV).answer, kSRV),
            (std::vector<std::string>{"0 33 15432 10-244-1-7.db.shop.svc.cluster.local.",
                                      "0 33 15432 db-0.db.shop.svc.cluster.local.",
                                      "0 33 15432 db-1.db.shop.svc.cluster.local."}));
  EXPECT_EQ(datas(ask("5.1.244.10.in-addr.arpa", kPTR).answer, kPTR),
            std::vector<std::string>{"db-0.db.shop.svc.cluster.local."});
  // The endpoint turns unready: its names go, the rest stay.
  service(R"({"metadata":{"name":"db","namespace":"shop"},"spec":{"clusterIP":"None"}})",
          {R"({"addressType":"IPv4","endpoints":[{"addresses":["10.244.1.6"],"hostname":"db-1"}]})"});
  EXPECT_EQ(ask("db-0.db.shop.svc.cluster.local", kA).rcode(), kNXDomain);
  EXPECT_EQ(datas(ask("db.shop.svc.cluster.local", kA).answer, kA), std::vector<std::string>{"10.244.1.6"});
  ask("5.1.244.10.in-addr.arpa", kPTR);
  EXPECT_FALSE(answered_);
}

TEST_F(ZoneTest, ExternalNameIsACnameAndPodsHaveDashedNames) {
  service(kWeb);
  service(R"({"metadata":{"name":"ext","namespace":"shop"},"spec":{"type":"ExternalName","externalName":"web.shop.svc.cluster.local"}})");
  service(R"({"metadata":{"name":"out","namespace":"shop"},"spec":{"type":"ExternalName","externalName":"www.example.com."}})");
  Msg a = ask("ext.shop.svc.cluster.local", kA);
  ASSERT_EQ(a.answer.size(), 2u);
  EXPECT_EQ(a.answer[0].type, kCNAME);
  EXPECT_EQ(a.answer[0].data, "web.shop.svc.cluster.local.");
  EXPECT_EQ(a.answer[1].name, "web.shop.svc.cluster.local.");  // followed inside the zone
  EXPECT_EQ(a.answer[1].data, "10.96.0.20");
  Msg out = ask("out.shop.svc.cluster.local", kA);
  EXPECT_EQ(datas(out.answer, kCNAME), std::vector<std::string>{"www.example.com."});
  EXPECT_EQ(out.answer.size(), 1u);

  EXPECT_EQ(datas(ask("10-244-0-9.shop.pod.cluster.local", kA).answer, kA), std::vector<std::string>{"10.244.0.9"});
  EXPECT_EQ(datas(ask("fd00--9.shop.pod.cluster.local", kAAAA).answer, kAAAA), std::vector<std::string>{"fd00..0009"});
  EXPECT_EQ(ask("10-244-0-9.shop.pod.cluster.local", kAAAA).rcode(), kNoError);  // NODATA
  EXPECT_EQ(ask("10-244-0-999.shop.pod.cluster.local", kA).rcode(), kNXDomain);
  EXPECT_EQ(ask("10-244-0-9.x.shop.pod.cluster.local", kA).rcode(), kNXDomain);
}

TEST_F(ZoneTest, VerifiedPodRecordsNeedThePod) {
  Zone verified({.domain = "cluster.local", .ttl = 5, .pods = PodRecords::kVerified});
  verified.setPodCheck([](std::string_view ns, std::string_view ip) { return ns == "shop" && ip == "10.244.0.9"; });
  auto ask1 = [&](const std::string& name) {
    std::string pkt = query(name, kA);
    Query q;
    parseQuery(reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(), q);
    uint8_t buf[4096];
    Writer w(buf, sizeof buf);
    verified.answer(q, w);
    return parse(std::string(reinterpret_cast<char*>(buf), w.finish(q, 512))).rcode();
  };
  EXPECT_EQ(ask1("10-244-0-9.shop.pod.cluster.local"), kNoError);
  EXPECT_EQ(ask1("10-244-0-8.shop.pod.cluster.local"), kNXDomain);
  EXPECT_EQ(ask1("10-244-0-9.other.pod.cluster.local"), kNXDomain);
}

TEST_F(ZoneTest, TooLargeForUdpIsTruncatedAndWholeOverTcp) {
  std::string eps;
  for (int i = 0; i < 100; ++i) eps += fmt::format("{}{{\"addresses\":[\"10.244.2.{}\"]}}", i ? "," : "", i + 1);
  service(R"({"metadata":{"name":"big","namespace":"shop"},"spec":{"clusterIP":"None"}})",
          {R"({"addressType":"IPv4","endpoints":[)" + eps + "]}"});
  Msg udp = ask("big.shop.svc.cluster.local", kA);  // no EDNS: 512 bytes
  EXPECT_TRUE(udp.tc());
  EXPECT_TRUE(udp.answer.empty());
  EXPECT_LE(udp.size, 512u);
  Msg edns = ask("big.shop.svc.cluster.local", kA, 4096);  // 100 × 16 bytes > 1232
  EXPECT_TRUE(edns.tc());
  ASSERT_EQ(edns.additional.size(), 1u);  // OPT stays
  EXPECT_EQ(edns.additional[0].type, kOPT);
  Msg tcp = ask("big.shop.svc.cluster.local", kA, 0, kMaxMessage);
  EXPECT_FALSE(tcp.tc());
  EXPECT_EQ(tcp.answer.size(), 100u);
}

TEST_F(ZoneTest, ASourceRemovedTakesExactlyItsNames) {
  size_t base = zone_.names();
  service(kWeb);
  service(R"({"metadata":{"name":"web2","namespace":"shop"},"spec":{"clusterIP":"10.96.0.21"}})");
  EXPECT_GT(zone_.names(), base);
  EXPECT_FALSE(zone_.set("shop/web", serviceRecords(json::parse(kWeb).as_object(), {}, zone_.config())));  // unchanged
  zone_.set("shop/web", {});
  EXPECT_EQ(ask("web.shop.svc.cluster.local", kA).rcode(), kNXDomain);
  EXPECT_EQ(datas(ask("web2.shop.svc.cluster.local", kA).answer, kA), std::vector<std::string>{"10.96.0.21"});
  zone_.set("shop/web2", {});
  EXPECT_EQ(zone_.names(), base);
  EXPECT_EQ(ask("shop.svc.cluster.local", kA).rcode(), kNXDomain);  // the namespace has nothing left
}

// ---- the name table, against a std::map doing the same

TEST(NameTable, MatchesAMapThroughGrowthAndBackwardShiftDeletes) {
  NameTable table;
  std::map<std::string, std::pair<int, std::string>> want;  // name -> (refs, records)
  std::mt19937 rng(7);
  for (int step = 0; step < 200000; ++step) {
    std::string name = "n" + std::to_string(rng() % 3000);
    int op = static_cast<int>(rng() % 3);
    if (op < 2) {
      table.addRefs(name, 1);
      ++want[name].first;
      std::string rdata(rng() % 5, static_cast<char>('a' + rng() % 26));
      table.appendRecord(name, 1, rdata);
      want[name].second += std::string("\x00\x01", 2) + static_cast<char>(0) + static_cast<char>(rdata.size()) + rdata;
    } else if (auto it = want.find(name); it != want.end()) {
      // Remove its first record, then one ref.
      auto node = table.find(name);
      ASSERT_TRUE(node);
      std::string first;
      node.forEach([&](uint16_t, std::string_view r) {
        if (first.empty()) first = std::string(1, '\x01') + std::string(r);
      });
      if (!first.empty()) {
        ASSERT_TRUE(table.removeRecord(name, 1, first.substr(1)));
        it->second.second.erase(0, 4 + first.size() - 1);
      }
      table.addRefs(name, -1);
      if (--it->second.first == 0) want.erase(it);
    }
  }
  EXPECT_EQ(table.size(), want.size());
  for (auto& [name, v] : want) {
    auto node = table.find(name);
    ASSERT_TRUE(node) << name;
    EXPECT_EQ(node.refs(), static_cast<uint32_t>(v.first));
    EXPECT_EQ(node.records(), v.second) << name;
  }
  for (int i = 0; i < 3000; ++i) {
    std::string name = "n" + std::to_string(i);
    EXPECT_EQ(static_cast<bool>(table.find(name)), want.count(name) == 1) << name;
  }
}

// ---- upstream answers and the cache

std::string upstreamAnswer(const std::string& name, uint16_t id, uint32_t ttl, bool nx = false) {
  std::string m = u16(id) + u16(nx ? 0x8183 : 0x8180) + u16(1) + u16(nx ? 0 : 1) + u16(nx ? 1 : 0) + u16(0);
  m += wireName(name) + u16(kA) + u16(kClassIN);
  if (nx) {
    std::string soa = wireName("ns.example.com") + wireName("root.example.com") + std::string(16, '\0') + u16(0) + u16(60);
    m += wireName("example.com") + u16(kSOA) + u16(kClassIN) + u16(0) + u16(static_cast<uint16_t>(ttl)) +
         u16(static_cast<uint16_t>(soa.size())) + soa;
  } else {
    m += "\xC0\x0C" + u16(kA) + u16(kClassIN) + u16(0) + u16(static_cast<uint16_t>(ttl)) + u16(4) + "\x5D\xB8\xD8\x22";
  }
  return m;
}

TEST(Cache, ServesAgedCopiesWithTheClientsIdAndCase) {
  Cache cache(2, 3600, 1800);
  std::string pkt = query("WWW.example.com", kA, 0, 7);
  Query q;
  ASSERT_EQ(parseQuery(reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(), q), Parsed::kOk);
  std::string up = upstreamAnswer("www.example.com", 999, 300);
  ResponseInfo info;
  ASSERT_TRUE(scanResponse(reinterpret_cast<const uint8_t*>(up.data()), up.size(), q.question, info));
  EXPECT_EQ(info.minTtl, 300u);
  EXPECT_FALSE(info.negative);
  auto t0 = Cache::Clock::now();
  cache.store(q, reinterpret_cast<const uint8_t*>(up.data()), up.size(), info, t0);
  uint8_t buf[4096];
  size_t n = cache.lookup(q, buf, sizeof buf, t0 + std::chrono::seconds(100));
  ASSERT_EQ(n, up.size());
  std::string got(reinterpret_cast<char*>(buf), n);
  Msg m = parse(got);
  EXPECT_EQ(m.id, 7);
  EXPECT_EQ(got.substr(13, 3), "WWW");
  EXPECT_EQ(m.answer.at(0).ttl, 200u);
  EXPECT_EQ(cache.lookup(q, buf, sizeof buf, t0 + std::chrono::seconds(301)), 0u);  // expired
  // An answer to another question is not taken.
  std::string other = upstreamAnswer("mail.example.com", 1, 300);
  EXPECT_FALSE(scanResponse(reinterpret_cast<const uint8_t*>(other.data()), other.size(), q.question, info));
}

TEST(Cache, NegativeAnswersLiveForTheSoaMinimumAndTheOldestGoesFirst) {
  Cache cache(2, 3600, 1800);
  std::deque<std::string> packets;  // what each Query's question points into
  auto stored = [&](const std::string& name, const std::string& up) {
    const std::string& pkt = packets.emplace_back(query(name, kA));
    Query q;
    parseQuery(reinterpret_cast<const uint8_t*>(pkt.data()), pkt.size(), q);
    ResponseInfo info;
    EXPECT_TRUE(scanResponse(reinterpret_cast<const uint8_t*>(up.data()), up.size(), q.question, info));
    return std::pair{q, info};
  };
  auto t0 = Cache::Clock::now();
  std::string nx = upstreamAnswer("gone.example.com", 1, 900, true);
  auto [qn, in] = stored("gone.example.com", nx);
  EXPECT_TRUE(in.negative);
  EXPECT_EQ(in.minTtl, 60u);  // min(SOA TTL 900, MINIMUM 60)
  cache.store(qn, reinterpret_cast<const uint8_t*>(nx.data()), nx.size(), in, t0);
  uint8_t buf[4096];
  EXPECT_GT(cache.lookup(qn, buf, sizeof buf, t0 + std::chrono::seconds(59)), 0u);
  EXPECT_EQ(cache.lookup(qn, buf, sizeof buf, t0 + std::chrono::seconds(61)), 0u);
  std::vector<std::string> names = {"a.example.com", "b.example.com", "c.example.com"};
  std::vector<Query> qs;
  for (auto& n : names) {
    std::string up = upstreamAnswer(n, 1, 300);
    auto [q, info] = stored(n, up);
    cache.store(q, reinterpret_cast<const uint8_t*>(up.data()), up.size(), info, t0);
    qs.push_back(q);
  }
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.lookup(qs[0], buf, sizeof buf, t0), 0u);  // evicted
  EXPECT_GT(cache.lookup(qs[2], buf, sizeof buf, t0), 0u);
}

}  // namespace
}  // namespace trellis::dns
