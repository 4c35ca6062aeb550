#include "common/base/log.h"

#include <gtest/gtest.h>

namespace trellis::base {
namespace {

TEST(Log, FormatsLogfmtWithQuotingAndEscapes) {
  Logger log("http");
  std::string line = log.format(LogLevel::kWarn, "bad request", {{"conn", 12}, {"reason", "bare \"LF\"\n"}, {"empty", ""}});
  EXPECT_NE(line.find(" level=warn logger=http msg=\"bad request\" conn=12 reason=\"bare \\\"LF\\\"\\n\" empty=\"\"\n"),
            std::string::npos)
      << line;
  EXPECT_EQ(line.rfind("ts=", 0), 0u);
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
}

TEST(Log, ControlCharactersAreEscaped) {
  Logger log("x");
  std::string line = log.format(LogLevel::kInfo, "m", {{"v", std::string("a\x01" "b")}});
  EXPECT_NE(line.find("v=\"a\\x01b\""), std::string::npos) << line;
}

TEST(Log, ParseLevel) {
  LogLevel l;
  ASSERT_TRUE(parseLogLevel("debug", l));
  EXPECT_EQ(l, LogLevel::kDebug);
  EXPECT_FALSE(parseLogLevel("verbose", l));
}

TEST(Log, ThresholdFilters) {
  setLogLevel(LogLevel::kWarn);
  Logger log("x");
  EXPECT_FALSE(log.enabled(LogLevel::kInfo));
  EXPECT_TRUE(log.enabled(LogLevel::kError));
  setLogLevel(LogLevel::kInfo);
}

}  // namespace
}  // namespace trellis::base
