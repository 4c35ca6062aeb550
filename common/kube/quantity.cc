#include "common/kube/quantity.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>

namespace trellis::kube {

namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }

base::Error formatError() { return base::Error(base::ErrorCode::kInvalidArgument, std::string(kQuantityFormatError)); }
base::Error suffixError() { return base::Error(base::ErrorCode::kInvalidArgument, std::string(kQuantitySuffixError)); }

// The pieces parseQuantityString finds: sign, integer digits (leading
// zeros stripped), fraction digits and the suffix text.
struct Pieces {
  bool positive = true;
  std::string_view num, denom, suffix;
};

base::Result<Pieces> split(std::string_view s) {
  Pieces p;
  size_t pos = 0, end = s.size();
  if (pos < end && (s[0] == '-' || s[0] == '+')) p.positive = s[pos++] == '+';
  while (pos < end && s[pos] == '0') ++pos;
  if (pos == end) return p;  // "", "-", "000": zero
  size_t start = pos;
  while (pos < end && isDigit(s[pos])) ++pos;
  p.num = s.substr(start, pos - start);
  if (pos < end && s[pos] == '.') {
    start = ++pos;
    while (pos < end && isDigit(s[pos])) ++pos;
    p.denom = s.substr(start, pos - start);
  }
  size_t suffixStart = pos;
  while (pos < end && std::string_view("eEinumkKMGTP").find(s[pos]) != std::string_view::npos) ++pos;
  if (pos < end && (s[pos] == '-' || s[pos] == '+')) ++pos;
  while (pos < end && isDigit(s[pos])) ++pos;
  if (pos != end) return formatError();
  p.suffix = s.substr(suffixStart);
  return p;
}

struct Suffix {
  int base = 10;
  int32_t exponent = 0;
};

base::Result<Suffix> interpret(std::string_view s) {
  static constexpr std::pair<std::string_view, Suffix> kKnown[] = {
      {"", {10, 0}},  {"n", {10, -9}}, {"u", {10, -6}}, {"m", {10, -3}},  {"k", {10, 3}},   {"M", {10, 6}},
      {"G", {10, 9}}, {"T", {10, 12}}, {"P", {10, 15}}, {"E", {10, 18}},  {"Ki", {2, 10}},  {"Mi", {2, 20}},
      {"Gi", {2, 30}}, {"Ti", {2, 40}}, {"Pi", {2, 50}}, {"Ei", {2, 60}}};
  for (const auto& [text, suffix] : kKnown) {
    if (s == text) return suffix;
  }
  if (s.size() > 1 && (s[0] == 'e' || s[0] == 'E')) {
    std::string_view digits = s.substr(1);
    if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);  // strconv.ParseInt takes a '+'
    int64_t e = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), e);
    if (ec != std::errc() || ptr != digits.data() + digits.size() || digits.empty()) return suffixError();
    return Suffix{10, static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(e)))};  // Go's int32(parsed)
  }
  return suffixError();
}

}  // namespace

base::Result<long double> parseQuantity(std::string_view text) {
  if (text.empty()) return formatError();
  auto pieces = split(text);
  if (!pieces) return std::move(pieces).error();
  auto suffix = interpret(pieces->suffix);
  if (!suffix) return std::move(suffix).error();
  constexpr long double kMax = static_cast<long double>(std::numeric_limits<int64_t>::max());
  // The significant digits as an integer and the power of ten they stand at.
  std::string_view num = pieces->num, denom = pieces->denom;
  long double digits = 0;
  int64_t shift = -static_cast<int64_t>(denom.size());
  int magnitude = 0;  // digits counted into `digits`
  for (std::string_view part : {num, denom}) {
    for (char c : part) {
      if (magnitude < 40) {
        digits = digits * 10 + (c - '0');
        if (digits != 0) ++magnitude;
      } else {
        ++shift;  // beyond long double's precision: only the scale matters
      }
    }
  }
  if (digits == 0) return 0.0L;
  // The value in nano-units is digits x base^exponent x 10^(shift + 9);
  // dividing by an exact power of ten (not multiplying by an inexact
  // inverse) keeps every whole number of nano-units exact, so the round-up
  // below changes only values that really have a finer fraction.
  int64_t e10 = shift + 9 + (suffix->base == 10 ? suffix->exponent : 0);
  int binary = suffix->base == 2 ? suffix->exponent : 0;
  constexpr long double kMaxNanos = kMax * 1e9L;
  long double nanos;
  if (magnitude + e10 + binary * 0.302 > 30) {
    nanos = kMaxNanos;
  } else if (magnitude + e10 < -2) {
    nanos = 1;  // rounded up to the smallest amount
  } else {
    nanos = std::ldexp(digits, binary);
    nanos = e10 >= 0 ? nanos * std::pow(10.0L, static_cast<long double>(e10))
                     : std::ceil(nanos / std::pow(10.0L, static_cast<long double>(-e10)));
  }
  long double value = std::min(nanos, kMaxNanos) / 1e9L;
  return pieces->positive ? value : -value;
}

}  // namespace trellis::kube
