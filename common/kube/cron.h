// Cron schedules as CronJobs write them, and IANA time zones.
//
// A schedule is the standard five fields (minute hour day-of-month month
// day-of-week), each `*`, values, ranges `a-b`, steps `*/n` or `a-b/n`,
// lists, month and weekday names (JAN, MON; 7 is Sunday too), `?` as `*`,
// or one of the macros @yearly (@annually), @monthly, @weekly, @daily
// (@midnight), @hourly. As in Vixie cron and robfig/cron (which
// kube-controller-manager uses), when both day-of-month and day-of-week are
// restricted a day matching either runs.
//
// A TimeZone is read from the system's TZif files (/usr/share/zoneinfo,
// Debian's tzdata); times past the file's last transition keep its last
// offset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/result.h"

namespace trellis::kube {

class TimeZone {
 public:
  TimeZone() = default;  // UTC
  // kNotFound for a name that is not a zone ("Mars/Olympus"); kInvalidArgument
  // for names with path tricks ("../etc/passwd") or unreadable files.
  static base::Result<TimeZone> load(std::string_view name);
  // Offset from UTC in seconds at the instant `unixSeconds`.
  int offsetAt(int64_t unixSeconds) const;
  // The instant whose local time is `localSeconds` (seconds since the epoch
  // of the local wall clock); in a gap or overlap, the earlier offset wins.
  int64_t toUtc(int64_t localSeconds) const;

 private:
  std::vector<int64_t> transitions_;  // ascending
  std::vector<int> offsets_;          // offset after transitions_[i]
  int initial_ = 0;                   // offset before the first transition
};

class CronSchedule {
 public:
  // kInvalidArgument with robfig/cron's wording where it has one.
  static base::Result<CronSchedule> parse(std::string_view spec);
  // The first scheduled instant strictly after `afterUnix` in `tz`, or -1
  // when none comes within five years (February 30th).
  int64_t next(int64_t afterUnix, const TimeZone& tz) const;

 private:
  uint64_t minute_ = 0, hour_ = 0, dom_ = 0, month_ = 0, dow_ = 0;
  bool domStar_ = false, dowStar_ = false;
};

}  // namespace trellis::kube
