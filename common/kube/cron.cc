#include "common/kube/cron.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

namespace trellis::kube {

namespace {

// ---- civil dates (proleptic Gregorian, days since 1970-01-01) ----------------

int64_t daysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

struct Civil {
  int64_t year;
  int month, day, hour, minute, weekday;  // weekday 0 = Sunday
};

Civil civilFromSeconds(int64_t s) {
  int64_t days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
  int64_t rem = s - days * 86400;
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  int64_t y = yoe + era * 400 + (m <= 2);
  int wd = static_cast<int>(((days % 7) + 11) % 7);  // 1970-01-01 was a Thursday
  return {y, m, d, static_cast<int>(rem / 3600), static_cast<int>(rem % 3600 / 60), wd};
}

int64_t secondsFromCivil(int64_t y, int m, int d, int h, int min) {
  return daysFromCivil(y, m, d) * 86400 + h * 3600 + min * 60;
}

// ---- TZif -------------------------------------------------------------------

int64_t bigEndian(const std::string& b, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  if (n == 4) return static_cast<int32_t>(static_cast<uint32_t>(v));
  return static_cast<int64_t>(v);
}

// ---- schedule fields -----------------------------------------------------------

constexpr std::string_view kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::string_view kDays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct Bounds {
  int min, max;
  const std::string_view* names;
  size_t nameCount;
  int nameBase;
};

base::Result<int> number(std::string_view s, const Bounds& b) {
  std::string lower;
  for (char c : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (size_t i = 0; i < b.nameCount; ++i) {
    if (lower == b.names[i]) return static_cast<int>(i) + b.nameBase;
  }
  if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string_view::npos) {
    return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("failed to parse int from {}", s));
  }
  return std::stoi(std::string(s));
}

// One field into a bit set; `star` when it is `*` or `?` (no step).
base::Result<uint64_t> field(std::string_view text, const Bounds& b, bool& star) {
  uint64_t bits = 0;
  star = false;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view part = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    start = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
    std::string_view range = part, stepText;
    if (size_t slash = part.find('/'); slash != std::string_view::npos) {
      range = part.substr(0, slash);
      stepText = part.substr(slash + 1);
    }
    int lo, hi, step = 1;
    if (range == "*" || range == "?") {
      lo = b.min;
      hi = b.max;
      if (stepText.empty() && text.find(',') == std::string_view::npos) star = true;
    } else {
      size_t dash = range.find('-');
      auto a = number(range.substr(0, dash), b);
      if (!a) return a.error();
      lo = hi = *a;
      if (dash != std::string_view::npos) {
        auto z = number(range.substr(dash + 1), b);
        if (!z) return z.error();
        hi = *z;
      } else if (!stepText.empty()) {
        hi = b.max;  // "5/15" means 5-max/15
      }
    }
    if (!stepText.empty()) {
      auto s = number(stepText, Bounds{0, 0, nullptr, 0, 0});
      if (!s) return s.error();
      if (*s <= 0) return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("step of range should be a positive number: {}", part));
      step = *s;
    }
    if (lo < b.min) return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("beginning of range ({}) below minimum ({}): {}", lo, b.min, part));
    if (hi > b.max) return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("end of range ({}) above maximum ({}): {}", hi, b.max, part));
    if (lo > hi) return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("beginning of range ({}) beyond end of range ({}): {}", lo, hi, part));
    for (int v = lo; v <= hi; v += step) bits |= uint64_t{1} << v;
  }
  return bits;
}

bool has(uint64_t bits, int v) { return (bits >> v) & 1; }

}  // namespace

base::Result<TimeZone> TimeZone::load(std::string_view name) {
  if (name.empty() || name == "UTC" || name == "Etc/UTC") return TimeZone{};
  bool odd = std::any_of(name.begin(), name.end(), [](char ch) { return ch == '\\' || ch == '\0'; });
  if (name.front() == '/' || name.find("..") != std::string_view::npos || odd) {
    return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("invalid time zone name {}", name));
  }
  std::string path = "/usr/share/zoneinfo/" + std::string(name);
  std::error_code ec;
  std::ifstream in;
  if (std::filesystem::is_regular_file(path, ec)) in.open(path, std::ios::binary);
  if (!in) return base::Error(base::ErrorCode::kNotFound, fmt::format("unknown time zone {}", name));
  std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto bad = [&] { return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("unknown time zone {}", name)); };
  if (b.size() < 44 || b.compare(0, 4, "TZif") != 0) return bad();
  // Header counts: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt.
  auto counts = [&](size_t at, int64_t c[6]) {
    for (int i = 0; i < 6; ++i) c[i] = bigEndian(b, at + 20 + 4 * static_cast<size_t>(i), 4);
  };
  int64_t c[6];
  counts(0, c);
  size_t at = 44, timeSize = 4;
  if (b[4] >= '2') {  // skip the 32-bit block to the 64-bit one
    at += static_cast<size_t>(c[3] * 5 + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0]);
    if (b.size() < at + 44 || b.compare(at, 4, "TZif") != 0) return bad();
    counts(at, c);
    at += 44;
    timeSize = 8;
  }
  for (int64_t v : c) {
    if (v < 0 || v > 100000) return bad();
  }
  size_t timecnt = static_cast<size_t>(c[3]), typecnt = static_cast<size_t>(c[4]);
  if (typecnt == 0 || b.size() < at + timecnt * (timeSize + 1) + typecnt * 6) return bad();
  TimeZone tz;
  std::vector<int> typeOffset(typecnt);
  size_t types = at + timecnt * (timeSize + 1);
  for (size_t i = 0; i < typecnt; ++i) typeOffset[i] = static_cast<int>(bigEndian(b, types + i * 6, 4));
  tz.initial_ = typeOffset[0];
  for (size_t i = 0; i < timecnt; ++i) {
    size_t type = static_cast<unsigned char>(b[at + timecnt * timeSize + i]);
    if (type >= typecnt) return bad();
    tz.transitions_.push_back(bigEndian(b, at + i * timeSize, timeSize));
    tz.offsets_.push_back(typeOffset[type]);
  }
  if (!std::is_sorted(tz.transitions_.begin(), tz.transitions_.end())) return bad();
  return tz;
}

int TimeZone::offsetAt(int64_t t) const {
  auto it = std::upper_bound(transitions_.begin(), transitions_.end(), t);
  if (it == transitions_.begin()) return initial_;
  return offsets_[static_cast<size_t>(it - transitions_.begin() - 1)];
}

int64_t TimeZone::toUtc(int64_t local) const {
  // Try the offset in force just before and just after; take the earlier
  // instant whose local time is `local`, else (a gap) shift by the first.
  int a = offsetAt(local - 86400), z = offsetAt(local + 86400);
  int64_t ta = local - a, tz = local - z;
  bool okA = offsetAt(ta) == a, okZ = offsetAt(tz) == z;
  if (okA && okZ) return std::min(ta, tz);
  if (okA) return ta;
  if (okZ) return tz;
  return ta;
}

base::Result<CronSchedule> CronSchedule::parse(std::string_view spec) {
  while (!spec.empty() && std::isspace(static_cast<unsigned char>(spec.front()))) spec.remove_prefix(1);
  while (!spec.empty() && std::isspace(static_cast<unsigned char>(spec.back()))) spec.remove_suffix(1);
  if (spec.empty()) return base::Error(base::ErrorCode::kInvalidArgument, "empty spec string");
  static const std::pair<std::string_view, std::string_view> kMacros[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"}};
  std::string text(spec);
  if (spec.front() == '@') {
    bool found = false;
    for (const auto& [macro, fields] : kMacros) {
      if (spec == macro) {
        text = fields;
        found = true;
      }
    }
    if (!found) return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("unrecognized descriptor: {}", spec));
  }
  std::vector<std::string_view> f;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t sp = rest.find_first_of(" \t");
    f.push_back(rest.substr(0, sp));
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  }
  if (f.size() != 5) {
    return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("expected exactly 5 fields, found {}: {}", f.size(), spec));
  }
  CronSchedule s;
  bool star = false;
  auto set = [&](uint64_t& bits, std::string_view t, Bounds b) -> base::Status {
    auto r = field(t, b, star);
    if (!r) return r.error();
    bits = *r;
    return {};
  };
  if (auto st = set(s.minute_, f[0], {0, 59, nullptr, 0, 0}); !st) return st.error();
  if (auto st = set(s.hour_, f[1], {0, 23, nullptr, 0, 0}); !st) return st.error();
  if (auto st = set(s.dom_, f[2], {1, 31, nullptr, 0, 0}); !st) return st.error();
  s.domStar_ = star;
  if (auto st = set(s.month_, f[3], {1, 12, kMonths, 12, 1}); !st) return st.error();
  if (auto st = set(s.dow_, f[4], {0, 7, kDays, 7, 0}); !st) return st.error();
  s.dowStar_ = star;
  if (has(s.dow_, 7)) s.dow_ = (s.dow_ | 1) & ~(uint64_t{1} << 7);
  return s;
}

int64_t CronSchedule::next(int64_t after, const TimeZone& tz) const {
  // Walk local wall-clock fields, skipping whole months, days and hours that
  // cannot match; convert each candidate back to UTC.
  int64_t local = after + tz.offsetAt(after);
  local = local - (local % 60 + 60) % 60 + 60;
  Civil c = civilFromSeconds(local);
  const int64_t limit = c.year + 5;
  while (c.year <= limit) {
    if (!has(month_, c.month)) {
      c.month += 1;
      if (c.month > 12) c = {c.year + 1, 1, 1, 0, 0, 0};
      c = civilFromSeconds(secondsFromCivil(c.year, c.month, 1, 0, 0));
      continue;
    }
    bool domOk = has(dom_, c.day), dowOk = has(dow_, c.weekday);
    bool dayOk = (domStar_ || dowStar_) ? domOk && dowOk : domOk || dowOk;
    if (!dayOk) {
      c = civilFromSeconds(secondsFromCivil(c.year, c.month, c.day, 0, 0) + 86400);
      continue;
    }
    if (!has(hour_, c.hour)) {
      c = civilFromSeconds(secondsFromCivil(c.year, c.month, c.day, c.hour, 0) + 3600);
      continue;
    }
    if (!has(minute_, c.minute)) {
      c = civilFromSeconds(secondsFromCivil(c.year, c.month, c.day, c.hour, c.minute) + 60);
      continue;
    }
    int64_t t = tz.toUtc(secondsFromCivil(c.year, c.month, c.day, c.hour, c.minute));
    if (t > after) return t;
    c = civilFromSeconds(secondsFromCivil(c.year, c.month, c.day, c.hour, c.minute) + 60);
  }
  return -1;
}

}  // namespace trellis::kube
