#include "common/base/ip.h"

#include <arpa/inet.h>

#include "common/base/numbers.h"

namespace trellis::base {

std::optional<IpAddr> parseIp(std::string_view text) {
  if (text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  std::string s(text);
  IpAddr a;
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    for (int i = 0; i < 4; ++i) a.value = (a.value << 8) | buf[i];
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    a.v6 = true;
    for (int i = 0; i < 16; ++i) a.value = (a.value << 8) | buf[i];
    return a;
  }
  return std::nullopt;
}

std::string formatIp(const IpAddr& a) {
  unsigned char buf[16];
  char out[INET6_ADDRSTRLEN];
  int n = a.v6 ? 16 : 4;
  u128 v = a.value;
  for (int i = n - 1; i >= 0; --i) {
    buf[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
  inet_ntop(a.v6 ? AF_INET6 : AF_INET, buf, out, sizeof out);
  return out;
}

Result<IpCidr> parseCidr(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return makeError(ErrorCode::kInvalidArgument, "{:?} is not a CIDR (ADDRESS/PREFIX)", text);
  auto a = parseIp(text.substr(0, slash));
  if (!a) return makeError(ErrorCode::kInvalidArgument, "{:?} is not a CIDR: no IP address before the '/'", text);
  int bits = a->v6 ? 128 : 32;
  auto prefix = parseInt(text.substr(slash + 1), 0, bits, "prefix length");
  if (!prefix) return makeError(ErrorCode::kInvalidArgument, "{:?} is not a CIDR: {}", text, prefix.error().message());
  IpCidr c{*a, static_cast<int>(*prefix)};
  u128 mask = c.prefix == 0 ? 0 : (~u128(0) << (bits - c.prefix));
  if (!a->v6) mask &= 0xffffffffu;
  c.network.value &= mask;
  return c;
}

std::string formatCidr(const IpCidr& c) { return formatIp(c.network) + "/" + std::to_string(c.prefix); }

}  // namespace trellis::base
