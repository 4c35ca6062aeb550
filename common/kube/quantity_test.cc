#include "common/kube/quantity.h"

#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace trellis::kube {
namespace {

long double value(std::string_view q) {
  auto r = parseQuantity(q);
  EXPECT_TRUE(r) << q << ": " << (r ? "" : r.error().message());
  return r ? *r : -12345;
}
std::string error(std::string_view q) {
  auto r = parseQuantity(q);
  return r ? "parsed" : r.error().message();
}

TEST(Quantity, SuffixesAndForms) {
  EXPECT_EQ(value("1Gi"), 1073741824.0L);
  EXPECT_EQ(value("500M"), 5e8L);
  EXPECT_NEAR(static_cast<double>(value("100m")), 0.1, 1e-12);
  EXPECT_EQ(value("1.5Ki"), 1536.0L);
  EXPECT_EQ(value("2e3"), 2000.0L);
  EXPECT_EQ(value("2E+3"), 2000.0L);
  EXPECT_EQ(value("12e-3"), value("12m"));
  EXPECT_EQ(value("1Ei"), 1152921504606846976.0L);
  EXPECT_EQ(value("-1.5"), -1.5L);
  EXPECT_EQ(value("+7k"), 7000.0L);
  EXPECT_EQ(value(".5"), 0.5L);
  EXPECT_EQ(value("5."), 5.0L);  // apimachinery takes "1." (and "1.G")
  EXPECT_EQ(value("1.G"), 1e9L);
  EXPECT_EQ(value("007"), 7.0L);
}

TEST(Quantity, WhatApimachineryReadsAsZero) {
  for (const char* q : {"0", "000", "-", "+", ".", "Gi", "0.0"}) EXPECT_EQ(value(q), 0.0L) << q;
}

TEST(Quantity, LimitsOfRangeAndPrecision) {
  constexpr long double kMax = static_cast<long double>(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(value("1e99999999999"), value("1e1215752191"));  // the exponent kept as an int32, as Go does
  EXPECT_EQ(value("1e30"), kMax);                             // capped
  EXPECT_EQ(value("99999999999999999999999999999999999999999999Ei"), kMax);
  EXPECT_EQ(value("-1e30"), -kMax);
  EXPECT_EQ(value("1n"), 1e-9L);
  EXPECT_EQ(value("1e-15"), 1e-9L);     // rounded up to a nano-unit
  EXPECT_EQ(value("0.0000000001"), 1e-9L);
  EXPECT_EQ(value("-1e-15"), -1e-9L);   // away from zero
  EXPECT_EQ(value("1.0000000001"), 1.000000001L);
}

TEST(Quantity, ErrorsAreApimachinerysWords) {
  const std::string format(kQuantityFormatError), suffix(kQuantitySuffixError);
  EXPECT_EQ(error(""), format);
  EXPECT_EQ(error("1.5.5Gi"), format);
  EXPECT_EQ(error("1GB"), format);
  EXPECT_EQ(error("1 Gi"), format);
  EXPECT_EQ(error("abc"), format);
  EXPECT_EQ(error("1e-"), suffix);
  EXPECT_EQ(error("1e"), suffix);
  EXPECT_EQ(error("1Gii"), suffix);
  EXPECT_EQ(error("1ki"), suffix);
  EXPECT_EQ(error("1e99999999999999999999"), suffix);  // beyond int64: strconv.ParseInt fails
  EXPECT_EQ(error("1e+-3"), format);
}

}  // namespace
}  // namespace trellis::kube
