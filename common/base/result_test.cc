#include "common/base/result.h"

#include <gtest/gtest.h>

namespace trellis::base {
namespace {

Result<int> parsePositive(int v) {
  if (v <= 0) return makeError(ErrorCode::kInvalidArgument, "{} is not positive", v);
  return v;
}

TEST(Result, CarriesValueOrError) {
  auto ok = parsePositive(3);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 3);
  auto bad = parsePositive(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "-1 is not positive");
}

TEST(Result, WrapAddsContextInFront) {
  Error e = makeError(ErrorCode::kNotFound, "no such file");
  Error wrapped = std::move(e).wrap("loading {}", "cert.pem").wrap("starting");
  EXPECT_EQ(wrapped.message(), "starting: loading cert.pem: no such file");
  EXPECT_EQ(wrapped.code(), ErrorCode::kNotFound);
}

TEST(Result, FromErrnoNamesCallAndMapsCode) {
  Error e = Error::fromErrno(ENOENT, "open /x");
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_EQ(e.message(), "open /x: No such file or directory");
  EXPECT_EQ(Error::fromErrno(EACCES, "x").code(), ErrorCode::kPermissionDenied);
}

TEST(Status, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  Status f = makeError(ErrorCode::kConflict, "stale");
  EXPECT_FALSE(f.ok());
  EXPECT_EQ(errorCodeName(f.error().code()), "Conflict");
}

}  // namespace
}  // namespace trellis::base
