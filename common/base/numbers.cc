#include "common/base/numbers.h"

#include <charconv>

namespace trellis::base {

Result<int64_t> parseInt(std::string_view text, int64_t min, int64_t max, std::string_view what) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != text.data() + text.size()) {
    return makeError(ErrorCode::kInvalidArgument, "{} {:?} is not a whole number", what, text);
  }
  if (ec == std::errc::result_out_of_range || v < min || v > max) {
    return makeError(ErrorCode::kOutOfRange, "{} {} is out of range [{}, {}]", what, text, min, max);
  }
  return v;
}

Result<HostPort> parseHostPort(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return makeError(ErrorCode::kInvalidArgument, "{:?} is not HOST:PORT", text);
  }
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto port = parseInt(text.substr(colon + 1), 0, 65535, "port");
  if (!port) return std::move(port).error().wrap("{:?}", text);
  return HostPort{std::string(host), static_cast<uint16_t>(*port)};
}

}  // namespace trellis::base
