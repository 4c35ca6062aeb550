#include "apiserver-lite/registry/allocator.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

namespace trellis::apiserver::registry {
namespace {

namespace json = boost::json;

json::object svc(std::string_view s) { return json::parse(s).as_object(); }

TEST(Allocator, CidrParsing) {
  auto c = Ipv4Cidr::parse("10.96.0.0/12");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(formatIpv4(c->first()), "10.96.0.1");
  EXPECT_EQ(formatIpv4(c->last()), "10.111.255.254");
  EXPECT_TRUE(c->contains(*parseIpv4("10.100.1.1")));
  EXPECT_FALSE(c->contains(*parseIpv4("10.112.0.1")));
  EXPECT_FALSE(Ipv4Cidr::parse("10.96.0.0").ok());
  EXPECT_FALSE(Ipv4Cidr::parse("10.96.0.0/40").ok());
  EXPECT_FALSE(Ipv4Cidr::parse("bogus/12").ok());
}

TEST(Allocator, AllocatesDistinctAndChecksGivenValues) {
  ServiceAllocator a(*Ipv4Cidr::parse("10.0.0.0/29"), 30000, 30002);  // usable: .2 .. .6 (.1 reserved)
  std::vector<json::object> stored;
  ServiceAllocator::InUse used;
  auto inUse = [&]() -> const ServiceAllocator::InUse& { return used = ServiceAllocator::collect(stored); };
  auto s1 = svc(R"({"spec":{"type":"NodePort","ports":[{"port":80}]}})");
  auto r1 = a.allocate(s1, nullptr, inUse);
  ASSERT_TRUE(r1.ok()) << r1.error().message();
  EXPECT_EQ(s1["spec"].as_object()["clusterIP"].as_string(), "10.0.0.2");
  auto& p = s1["spec"].as_object()["ports"].as_array()[0].as_object();
  EXPECT_EQ(p["nodePort"].as_int64(), 30000);
  EXPECT_EQ(p["protocol"].as_string(), "TCP");
  EXPECT_EQ(p["targetPort"].as_int64(), 80);
  // Reserved but not stored yet: the next one must not get the same.
  auto s2 = svc(R"({"spec":{"ports":[{"port":80}]}})");
  auto r2 = a.allocate(s2, nullptr, inUse);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(s2["spec"].as_object()["clusterIP"].as_string(), "10.0.0.3");
  EXPECT_FALSE(s2["spec"].as_object()["ports"].as_array()[0].as_object().contains("nodePort"));  // ClusterIP type
  stored = {s1, s2};
  a.release(*r1);
  a.release(*r2);
  auto taken = svc(R"({"spec":{"clusterIP":"10.0.0.2"}})");
  auto e = a.allocate(taken, nullptr, inUse);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("provided IP is already allocated"), std::string::npos);
  auto outside = svc(R"({"spec":{"clusterIP":"192.168.0.1"}})");
  EXPECT_NE(a.allocate(outside, nullptr, inUse).error().message().find("not in the valid range"), std::string::npos);
  auto portTaken = svc(R"({"spec":{"type":"NodePort","ports":[{"port":1,"nodePort":30000}]}})");
  EXPECT_NE(a.allocate(portTaken, nullptr, inUse).error().message().find("spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated"),
            std::string::npos);
  auto portRange = svc(R"({"spec":{"type":"NodePort","ports":[{"port":1,"nodePort":80}]}})");
  EXPECT_NE(a.allocate(portRange, nullptr, inUse).error().message().find("not in the valid range"), std::string::npos);
  auto headless = svc(R"({"spec":{"clusterIP":"None"}})");
  ASSERT_TRUE(a.allocate(headless, nullptr, inUse).ok());
  EXPECT_EQ(headless["spec"].as_object()["clusterIPs"].as_array()[0].as_string(), "None");
  // Fill the range: .4 .5 .6 then exhausted.
  for (int i = 0; i < 3; ++i) {
    auto s = svc(R"({"spec":{}})");
    ASSERT_TRUE(a.allocate(s, nullptr, inUse).ok());
  }
  auto full = svc(R"({"spec":{}})");
  EXPECT_EQ(a.allocate(full, nullptr, inUse).error().code(), base::ErrorCode::kResourceExhausted);
}

TEST(Allocator, UpdatesKeepTheirIpAndPorts) {
  ServiceAllocator a(*Ipv4Cidr::parse("10.0.0.0/24"));
  auto old = svc(R"({"spec":{"type":"NodePort","clusterIP":"10.0.0.9","ports":[{"port":80,"nodePort":30123}]}})");
  ServiceAllocator::InUse none;
  auto inUse = [&]() -> const ServiceAllocator::InUse& { return none; };
  auto upd = svc(R"({"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30123}]}})");
  ASSERT_TRUE(a.allocate(upd, &old, inUse).ok());
  EXPECT_EQ(upd["spec"].as_object()["clusterIP"].as_string(), "10.0.0.9");
  auto moved = svc(R"({"spec":{"clusterIP":"10.0.0.10"}})");
  EXPECT_NE(a.allocate(moved, &old, inUse).error().message().find("may not change once set"), std::string::npos);
}

}  // namespace
}  // namespace trellis::apiserver::registry
