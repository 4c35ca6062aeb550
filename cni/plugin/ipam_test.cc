#include "cni/plugin/ipam.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include <set>
#include <thread>

#include <boost/json/parse.hpp>

#include "common/testing/testing.h"

namespace trellis::cni {
namespace {

namespace json = boost::json;

IpamConfig config(std::string_view text, const std::string& dir) {
  auto cfg = parseIpamConfig(json::parse(text).as_object());
  EXPECT_TRUE(std::holds_alternative<IpamConfig>(cfg)) << std::get<Error>(cfg).msg;
  IpamConfig c = std::get<IpamConfig>(cfg);
  c.dataDir = dir;
  return c;
}

std::string addressOf(const std::variant<Result, Error>& r, size_t i = 0) {
  if (!std::holds_alternative<Result>(r)) return "error: " + std::get<Error>(r).msg;
  return std::get<Result>(r).ips.at(i).address;
}

TEST(Ipam, DistinctIdempotentExhaustedAndReleased) {
  testing::TempDir d;
  Ipam ipam(config(R"({"ranges":[[{"subnet":"10.0.0.0/29"}]],"routes":[{"dst":"0.0.0.0/0"}]})", d.path()), "net");
  std::set<std::string> seen;
  for (int i = 0; i < 5; ++i) {
    auto r = ipam.allocate("c" + std::to_string(i), "eth0");
    ASSERT_TRUE(std::holds_alternative<Result>(r)) << addressOf(r);
    EXPECT_TRUE(seen.insert(addressOf(r)).second) << addressOf(r);
    EXPECT_EQ(std::get<Result>(r).ips[0].gateway, "10.0.0.1");
    EXPECT_EQ(std::get<Result>(r).routes.at(0).dst, "0.0.0.0/0");
  }
  EXPECT_EQ(seen, (std::set<std::string>{"10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"}));
  EXPECT_EQ(addressOf(ipam.allocate("c2", "eth0")), "10.0.0.4/29");  // the same attachment: the same address
  auto full = ipam.allocate("c9", "eth0");
  ASSERT_TRUE(std::holds_alternative<Error>(full));
  EXPECT_EQ(std::get<Error>(full).code, ErrorCode::kTryAgainLater);
  EXPECT_FALSE(ipam.release("c2", "eth0"));
  EXPECT_FALSE(ipam.release("c2", "eth0"));  // idempotent
  EXPECT_EQ(addressOf(ipam.allocate("c9", "eth0")), "10.0.0.4/29");
  EXPECT_EQ(ipam.allocations().size(), 5u);
}

// The states a crash can leave between the store's steps (index written,
// entry not; an index that another attachment's entries took over; entries
// in the older regular-file format with no index) all converge.
TEST(Ipam, CrashLeftoversConverge) {
  testing::TempDir d;
  Ipam ipam(config(R"({"subnet":"10.4.0.0/28"})", d.path()), "net");
  std::string dir = d.path() + "/net";
  auto first = ipam.allocate("a", "eth0");
  ASSERT_EQ(addressOf(first), "10.4.0.2/28");
  std::string index;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with("att-")) index = e.path().string();
  }
  ASSERT_FALSE(index.empty());
  // Crash after the index, before the entry: the next ADD takes it again.
  ASSERT_EQ(unlink((dir + "/10.4.0.2").c_str()), 0);
  EXPECT_EQ(addressOf(ipam.allocate("a", "eth0")), "10.4.0.2/28");
  EXPECT_EQ(ipam.allocations().size(), 1u);
  // The index names an address another attachment holds now: a new one.
  ASSERT_EQ(unlink((dir + "/10.4.0.2").c_str()), 0);
  ASSERT_EQ(symlink("b\neth0\n", (dir + "/10.4.0.2").c_str()), 0);
  EXPECT_EQ(addressOf(ipam.allocate("a", "eth0")), "10.4.0.3/28");
  EXPECT_FALSE(ipam.release("a", "eth0"));
  ASSERT_EQ(ipam.allocations().size(), 1u);
  EXPECT_EQ(ipam.allocations()[0].second, (Attachment{"b", "eth0"}));
  // An entry as a regular file, with no index: DEL still finds it.
  testing::writeFile(dir + "/10.4.0.9", "c\neth1\n");
  EXPECT_FALSE(ipam.release("c", "eth1"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/10.4.0.9"));
  // GC drops b's entry and every index that leads nowhere.
  EXPECT_FALSE(ipam.gc({}));
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    EXPECT_TRUE(name == "lock" || name.starts_with("last_reserved")) << name;
  }
}

TEST(Ipam, ConcurrentAllocatorsNeverShareAnAddress) {
  testing::TempDir d;
  IpamConfig c = config(R"({"ranges":[[{"subnet":"10.1.0.0/24"}]]})", d.path());
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<std::string> got;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Ipam ipam(c, "net");  // its own lock fd, as a separate plugin process has
      for (int i = 0; i < 12; ++i) {
        auto r = ipam.allocate("t" + std::to_string(t) + "-" + std::to_string(i), "eth0");
        std::lock_guard g(mu);
        got.push_back(addressOf(r));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> unique(got.begin(), got.end());
  EXPECT_EQ(got.size(), 96u);
  EXPECT_EQ(unique.size(), 96u);
  EXPECT_EQ(unique.count("10.1.0.1/24"), 0u);  // the gateway is never handed out
}

TEST(Ipam, GcKeepsValidAttachmentsAndRemovesTheRest) {
  testing::TempDir d;
  Ipam ipam(config(R"({"subnet":"10.2.0.0/24"})", d.path()), "net");
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(std::holds_alternative<Result>(ipam.allocate(id, "eth0")));
  testing::writeFile(d.file("net/10.2.0.200"), "");  // a crash between create and write
  EXPECT_FALSE(ipam.gc({{"a", "eth0"}, {"c", "eth0"}}));
  std::set<std::string> left;
  for (auto& [ip, who] : ipam.allocations()) left.insert(who.first);
  EXPECT_EQ(left, (std::set<std::string>{"a", "c"}));
}

TEST(Ipam, DualStackAndRangeBounds) {
  testing::TempDir d;
  Ipam ipam(config(R"({"ranges":[[{"subnet":"10.3.0.0/24","rangeStart":"10.3.0.100","rangeEnd":"10.3.0.101"}],
                                  [{"subnet":"fd00:10::/64","gateway":"fd00:10::1"}]]})",
                   d.path()),
            "net");
  auto r = ipam.allocate("x", "eth0");
  ASSERT_TRUE(std::holds_alternative<Result>(r)) << addressOf(r);
  EXPECT_EQ(addressOf(r, 0), "10.3.0.100/24");
  EXPECT_EQ(addressOf(r, 1), "fd00:10::2/64");
  EXPECT_EQ(addressOf(ipam.allocate("y", "eth0"), 0), "10.3.0.101/24");
  EXPECT_TRUE(std::holds_alternative<Error>(ipam.allocate("z", "eth0")));  // the v4 range is full
}

TEST(Ipam, BadConfigNamesTheField) {
  auto msg = [](std::string_view text) {
    auto cfg = parseIpamConfig(json::parse(text).as_object());
    return std::holds_alternative<Error>(cfg) ? std::get<Error>(cfg).msg : std::string("no error");
  };
  EXPECT_EQ(msg(R"({})"), "ipam: no ranges and no subnet");
  EXPECT_EQ(msg(R"({"ranges":[[{"subnet":"10.0.0.0/33"}]]})"), "ipam: ranges[0][0].subnet \"10.0.0.0/33\" is not a CIDR");
  EXPECT_EQ(msg(R"({"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]})"), "ipam.ranges[0]: mixes IPv4 and IPv6 ranges");
  EXPECT_EQ(msg(R"({"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.9.0.1"}]]})"),
            "ipam: ranges[0][0].rangeStart \"10.9.0.1\" is not an address in 10.0.0.0/24");
  EXPECT_EQ(msg(R"({"subnet":"10.0.0.0/31"})"), "ipam: ranges[0][0].subnet \"10.0.0.0/31\" has no room for addresses");
}

}  // namespace
}  // namespace trellis::cni
