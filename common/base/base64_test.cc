#include "common/base/base64.h"

#include <gtest/gtest.h>

namespace trellis::base {
namespace {

TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"}};
  for (auto [plain, encoded] : vectors) {
    EXPECT_EQ(base64Encode(plain), encoded);
    EXPECT_EQ(base64Decode(encoded), std::string(plain));
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(base64Decode(base64Encode(all)), all);
}

TEST(Base64, RejectsWhatIsNotBase64) {
  EXPECT_FALSE(base64Decode("Zm9"));       // not a multiple of 4
  EXPECT_FALSE(base64Decode("Zm9v!A=="));  // outside the alphabet
  EXPECT_FALSE(base64Decode("Zg==Zm9v"));  // data after padding
  EXPECT_FALSE(base64Decode("Z==="));      // too much padding
}

}  // namespace
}  // namespace trellis::base
