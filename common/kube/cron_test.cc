#include "common/kube/cron.h"

#include <gtest/gtest.h>

namespace trellis::kube {
namespace {

// 2026-12-07T10:07:30Z, a Monday.
constexpr int64_t kMonday = 1796638050;

int64_t next(std::string_view spec, int64_t after, const TimeZone& tz = {}) {
  auto s = CronSchedule::parse(spec);
  EXPECT_TRUE(s.ok()) << spec << ": " << (s ? "" : s.error().message());
  return s ? s->next(after, tz) : -2;
}

TEST(Cron, KnowsTheReferenceInstant) {
  ASSERT_EQ(kMonday % 86400, 10 * 3600 + 7 * 60 + 30);
  EXPECT_EQ((kMonday / 86400 + 4) % 7, 1);  // Monday
}

TEST(Cron, FieldsStepsRangesAndLists) {
  int64_t day = kMonday - kMonday % 86400;
  EXPECT_EQ(next("*/15 * * * *", kMonday), day + 10 * 3600 + 15 * 60);
  EXPECT_EQ(next("* * * * *", kMonday), day + 10 * 3600 + 8 * 60);
  EXPECT_EQ(next("5,40 10-11 * * *", kMonday), day + 10 * 3600 + 40 * 60);
  EXPECT_EQ(next("0 9 * * *", kMonday), day + 86400 + 9 * 3600);
  EXPECT_EQ(next("@hourly", kMonday), day + 11 * 3600);
  EXPECT_EQ(next("@daily", kMonday), day + 86400);
  EXPECT_EQ(next("0 0 * * SUN", kMonday), day + 6 * 86400);
  EXPECT_EQ(next("0 0 * * 7", kMonday), day + 6 * 86400);
  EXPECT_EQ(next("30 12 * * tue-wed", kMonday), day + 86400 + 12 * 3600 + 1800);
  EXPECT_EQ(next("0 0 1 jan *", kMonday), 1798761600);  // 2027-01-01
  // The instant itself is not "after".
  EXPECT_EQ(next("* * * * *", day + 600), day + 660);
}

TEST(Cron, DayOfMonthOrDayOfWeekWhenBothRestricted) {
  int64_t day = kMonday - kMonday % 86400;  // the 7th
  EXPECT_EQ(next("0 0 9 * FRI", kMonday), day + 2 * 86400);   // the 9th comes before Friday the 11th
  EXPECT_EQ(next("0 0 * 12 FRI", kMonday), day + 4 * 86400);  // Friday the 11th (day-of-month is *)
  EXPECT_EQ(next("0 0 30 2 *", kMonday), -1);                  // never
}

TEST(Cron, BadSpecsAreErrorsThatSayWhy) {
  for (const char* bad : {"", "* * * *", "* * * * * *", "61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
                          "*/0 * * * *", "5-1 * * * *", "@fortnightly", "x * * * *", "* * * * MOON"}) {
    auto s = CronSchedule::parse(bad);
    EXPECT_FALSE(s.ok()) << bad;
    if (!s) {
      EXPECT_FALSE(s.error().message().empty());
    }
  }
}

TEST(Cron, TimeZonesFromTheSystemDatabase) {
  auto ny = TimeZone::load("America/New_York");
  ASSERT_TRUE(ny.ok()) << ny.error().message();
  EXPECT_EQ(ny->offsetAt(kMonday), -5 * 3600);           // EST in December
  EXPECT_EQ(ny->offsetAt(1783000000), -4 * 3600);        // EDT in July 2026
  int64_t day = kMonday - kMonday % 86400;
  // 09:00 in New York on 2026-12-07 is 14:00Z.
  EXPECT_EQ(next("0 9 * * *", kMonday, *ny), day + 14 * 3600);
  // 2027-03-14 02:30 does not exist in New York (clocks jump 02:00 → 03:00):
  // the run lands in the hour after the gap, once.
  int64_t beforeGap = 1805004000;  // 2027-03-14T06:00Z, 01:00 EST
  int64_t t = next("30 2 14 3 *", beforeGap, *ny);
  EXPECT_GE(t, beforeGap);
  EXPECT_LE(t, beforeGap + 2 * 3600);
  EXPECT_FALSE(TimeZone::load("Mars/Olympus_Mons").ok());
  EXPECT_FALSE(TimeZone::load("../../etc/passwd").ok());
  EXPECT_FALSE(TimeZone::load("/etc/passwd").ok());
  EXPECT_FALSE(TimeZone::load("America").ok());
  EXPECT_TRUE(TimeZone::load("UTC").ok());
}

}  // namespace
}  // namespace trellis::kube
