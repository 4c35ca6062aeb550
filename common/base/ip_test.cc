#include "common/base/ip.h"

#include <gtest/gtest.h>

namespace trellis::base {
namespace {

TEST(Ip, CidrsParseToCanonicalValues) {
  auto c = parseCidr("10.1.2.3/24");
  ASSERT_TRUE(c);
  EXPECT_EQ(formatCidr(*c), "10.1.2.0/24");
  EXPECT_TRUE(c->contains(*parseIp("10.1.2.200")));
  EXPECT_FALSE(c->contains(*parseIp("10.1.3.1")));
  EXPECT_EQ(formatCidr(*parseCidr("fd00:0:0:0::1/64")), "fd00::/64");
  EXPECT_EQ(formatCidr(*parseCidr("0.0.0.0/0")), "0.0.0.0/0");
  for (const char* bad : {"10.0.0.0", "10.0.0.0/", "10.0.0.0/33", "fd00::/129", "10.0.0.0/99999999999",
                          "10.0.0.0/-1", "10.0.0.0/24; flush ruleset", "x/24", "/24", "10.0.0.0/2 4"}) {
    auto r = parseCidr(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << bad;
    }
  }
}

TEST(Ip, AddressesRoundTrip) {
  EXPECT_EQ(formatIp(*parseIp("192.168.0.1")), "192.168.0.1");
  EXPECT_EQ(formatIp(*parseIp("FD00::0001")), "fd00::1");
  EXPECT_FALSE(parseIp("256.0.0.1"));
  EXPECT_FALSE(parseIp(std::string(100, '1')));
}

}  // namespace
}  // namespace trellis::base
