// Maglev's balance and disruption, and LoadBalancer pools and allocation.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "servicelb/maglev.h"
#include "servicelb/pools.h"
#include "servicelb/translate.h"

namespace trellis::servicelb {
namespace {

std::vector<std::string> backends(int n, int from = 0) {
  std::vector<std::string> out;
  for (int i = from; i < from + n; ++i) out.push_back(fmt::format("10.244.{}.{}:8080", i / 200, i % 200 + 2));
  return out;
}

// Which backend (by name) each of `flows` client flows gets.
std::vector<std::string> route(const std::vector<std::string>& names, int flows) {
  auto table = maglevTable(names);
  std::vector<std::string> out;
  for (int f = 0; f < flows; ++f) {
    uint64_t h = stableHash(fmt::format("192.168.{}.{}:{}", f / 60000 % 256, f / 250 % 256, 1024 + f % 60000));
    out.push_back(names[table[h % table.size()]]);
  }
  return out;
}

TEST(Maglev, EveryBackendGetsItsShareAndOrderDoesNotMatter) {
  auto names = backends(10);
  auto table = maglevTable(names);
  ASSERT_EQ(table.size(), kMaglevSize);
  std::map<uint32_t, int> slots;
  for (uint32_t b : table) ++slots[b];
  ASSERT_EQ(slots.size(), 10u);
  for (auto& [b, n] : slots) EXPECT_NEAR(n, kMaglevSize / 10.0, 1.0) << names[b];
  // Shuffled, the same names get the same slots.
  auto shuffled = names;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(3));
  auto again = maglevTable(shuffled);
  for (size_t i = 0; i < table.size(); ++i) ASSERT_EQ(names[table[i]], shuffled[again[i]]) << i;
  EXPECT_TRUE(maglevTable({}).empty());
  EXPECT_EQ(maglevTable({"only"}), std::vector<uint32_t>(kMaglevSize, 0));
}

TEST(Maglev, AddingOneBackendToTenMovesAboutATenthOfTheFlows) {
  constexpr int kFlows = 100000;
  auto before = route(backends(10), kFlows);
  auto after = route(backends(11), kFlows);
  int moved = 0, toNew = 0;
  for (int f = 0; f < kFlows; ++f) {
    moved += before[f] != after[f];
    toNew += after[f] == backends(1, 10)[0];
  }
  double share = double(moved) / kFlows;
  fprintf(stderr, "adding the 11th backend moved %.2f%% of %d flows (%.2f%% to the new one)\n", 100 * share, kFlows,
          100.0 * toNew / kFlows);
  EXPECT_LE(share, 0.15);
  EXPECT_GE(share, 0.05);  // the new backend does get its share
  // Removing one of ten: its flows move; of the others' flows, few do.
  auto nine = backends(10);
  nine.erase(nine.begin() + 4);
  auto fewer = route(nine, kFlows);
  int others = 0, othersMoved = 0;
  for (int f = 0; f < kFlows; ++f) {
    if (before[f] == backends(10)[4]) continue;
    ++others;
    othersMoved += before[f] != fewer[f];
  }
  EXPECT_LE(double(othersMoved) / others, 0.05);
}

TEST(Pools, ParseCidrsRangesAndListsAndRefuseWhatIsWrong) {
  auto pools = parsePools("default: 10.250.79.0/28\nextra: [10.250.80.10-10.250.80.12, 'fd00:1::/126']\n");
  ASSERT_TRUE(pools) << pools.error().message();
  ASSERT_EQ(pools->size(), 2u);
  EXPECT_EQ((*pools)[0].name, "default");
  EXPECT_TRUE((*pools)[0].contains(*base::parseIp("10.250.79.15")));
  EXPECT_FALSE((*pools)[0].contains(*base::parseIp("10.250.79.16")));
  EXPECT_TRUE((*pools)[1].contains(*base::parseIp("10.250.80.12")));
  EXPECT_TRUE((*pools)[1].contains(*base::parseIp("fd00:1::3")));
  for (auto [text, why] : std::vector<std::pair<const char*, const char*>>{
           {"default: 10.250.79.0/33", "is not a CIDR"},
           {"default: 10.0.0.9-10.0.0.1", "first ≤ last"},
           {"default: 10.0.0.1-fd00::1", "one family"},
           {"a: 10.0.0.0/24\nb: 10.0.0.128-10.0.1.1", "overlap at 10.0.0.128"},
           {"default: []", "no addresses"},
           {"default: {x: 1}", "a CIDR, a range or a list"},
           {"- 10.0.0.0/24", "a mapping"},
           {"default: [10.0.0.0/24, 7]", "list items"},
       }) {
    auto r = parsePools(text);
    ASSERT_FALSE(r) << text;
    EXPECT_NE(r.error().message().find(why), std::string::npos) << text << ": " << r.error().message();
  }
}

TEST(Pools, AddressesAreNeverGivenTwice) {
  Allocator a;
  a.setPools(*parsePools("default: 10.250.79.0/30\nblue: 10.250.90.1-10.250.90.2"));
  auto ip = [](const char* s) { return *base::parseIp(s); };
  // The lowest free address, kept while it satisfies the request.
  EXPECT_EQ(base::formatIp(a.assign("ns/a", {}).value()[0]), "10.250.79.0");
  EXPECT_EQ(base::formatIp(a.assign("ns/b", {}).value()[0]), "10.250.79.1");
  EXPECT_EQ(base::formatIp(a.assign("ns/a", {}).value()[0]), "10.250.79.0");
  // A wanted address: given when free, refused when held or outside the pool.
  EXPECT_EQ(base::formatIp(a.assign("ns/c", {.wanted = {ip("10.250.79.3")}}).value()[0]), "10.250.79.3");
  auto taken = a.assign("ns/d", {.wanted = {ip("10.250.79.3")}});
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code(), base::ErrorCode::kAlreadyExists);
  EXPECT_NE(taken.error().message().find("in use by ns/c"), std::string::npos);
  EXPECT_EQ(a.assign("ns/d", {.wanted = {ip("10.1.1.1")}}).error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_EQ(a.assign("ns/d", {.pool = "green"}).error().code(), base::ErrorCode::kNotFound);
  // The pool runs out; a release frees an address for the next.
  EXPECT_EQ(base::formatIp(a.assign("ns/d", {}).value()[0]), "10.250.79.2");
  auto full = a.assign("ns/e", {});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), base::ErrorCode::kResourceExhausted);
  EXPECT_FALSE(a.held("ns/e"));
  a.release("ns/b");
  EXPECT_EQ(base::formatIp(a.assign("ns/e", {}).value()[0]), "10.250.79.1");
  // Another pool by name; moving a Service there gives up its old address.
  EXPECT_EQ(base::formatIp(a.assign("ns/a", {.pool = "blue"}).value()[0]), "10.250.90.1");
  EXPECT_FALSE(a.holder(ip("10.250.79.0")));
  // After a restart: what Services hold is adopted when valid, not when it conflicts.
  Allocator b;
  b.setPools(a.pools());
  EXPECT_TRUE(b.adopt("ns/c", {ip("10.250.79.3")}, {}));
  EXPECT_FALSE(b.adopt("ns/x", {ip("10.250.79.3")}, {}));       // held by ns/c
  EXPECT_FALSE(b.adopt("ns/y", {ip("10.250.90.1")}, {}));       // not in the default pool
  EXPECT_TRUE(b.adopt("ns/y", {ip("10.250.90.1")}, {.pool = "blue"}));
  EXPECT_EQ(*b.holder(ip("10.250.90.1")), "ns/y");
}

TEST(Translate, ClusterIpPortsGetTheReadyEndpointsOnTheirNamedPorts) {
  auto svc = boost::json::parse(R"({"metadata":{"name":"web","namespace":"shop"},
    "spec":{"clusterIP":"10.96.0.20","clusterIPs":["10.96.0.20","fd00::20"],
            "ports":[{"name":"http","port":80,"protocol":"TCP"},{"name":"dns","port":53,"protocol":"UDP"},
                     {"name":"s","port":9,"protocol":"SCTP"}]}})").as_object();
  auto slice = [](const char* text) { return std::make_shared<const boost::json::object>(boost::json::parse(text).as_object()); };
  std::vector<std::shared_ptr<const boost::json::object>> slices{
      slice(R"({"addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"},{"name":"dns","port":5353,"protocol":"UDP"}],
                "endpoints":[{"addresses":["10.244.0.9"]},{"addresses":["10.244.0.5"],"conditions":{"ready":true}},
                             {"addresses":["10.244.0.7"],"conditions":{"ready":false}}]})"),
      slice(R"({"addressType":"IPv4","ports":[{"name":"http","port":8080}],"endpoints":[{"addresses":["10.244.0.5"]}]})"),
      slice(R"({"addressType":"IPv6","ports":[{"name":"http","port":8080}],"endpoints":[{"addresses":["fd00::5"]}]})")};
  auto entries = clusterIpEntries(svc, slices);
  ASSERT_EQ(entries.size(), 2u);  // IPv4 only; SCTP is not for the socket layer
  EXPECT_EQ(entries[0].frontend, (Frontend{0x0A600014, 80, 6}));
  ASSERT_EQ(entries[0].backends.size(), 2u);  // ready ones, once each, in address order
  EXPECT_EQ(entries[0].backends[0].addr, 0x0AF40005u);
  EXPECT_EQ(entries[0].backends[0].port, 8080);
  EXPECT_EQ(entries[0].backends[1].addr, 0x0AF40009u);
  EXPECT_EQ(entries[1].frontend, (Frontend{0x0A600014, 53, 17}));
  ASSERT_EQ(entries[1].backends.size(), 2u);
  EXPECT_EQ(entries[1].backends[0].port, 5353);
  auto headless = boost::json::parse(R"({"spec":{"clusterIP":"None","ports":[{"port":80}]}})").as_object();
  EXPECT_TRUE(clusterIpEntries(headless, slices).empty());
}

}  // namespace
}  // namespace trellis::servicelb
