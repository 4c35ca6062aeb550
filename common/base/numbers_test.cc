#include "common/base/numbers.h"

#include <gtest/gtest.h>

namespace trellis::base {
namespace {

TEST(Numbers, ParseIntTakesWholeNumbersInRange) {
  EXPECT_EQ(*parseInt("42", 0, 100), 42);
  EXPECT_EQ(*parseInt("-7", -10, 0), -7);
  for (const char* bad : {"", "x", "4 2", "42x", "+1", " 1", "0x10"}) {
    auto r = parseInt(bad, -100, 100, "prefix");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(parseInt("101", 0, 100).error().code(), ErrorCode::kOutOfRange);
  EXPECT_EQ(parseInt("99999999999999999999999", 0, 100, "prefix").error().message(),
            "prefix 99999999999999999999999 is out of range [0, 100]");
}

TEST(Numbers, ParseHostPort) {
  auto a = parseHostPort("127.0.0.1:9102");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9102);
  auto b = parseHostPort("[::1]:0");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 0);
  for (const char* bad : {"", "9102", ":80", "host:", "host:65536", "host:http", "host:99999999999999999999"}) {
    EXPECT_FALSE(parseHostPort(bad)) << bad;
  }
}

}  // namespace
}  // namespace trellis::base
