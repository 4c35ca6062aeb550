// IP addresses and CIDR prefixes as values: parsed from text once, checked,
// and rendered back in canonical form wherever they go next (a path, an
// nftables set, a netlink message) — never pasted through as the text a
// user wrote.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/base/result.h"

namespace trellis::base {

using u128 = unsigned __int128;

struct IpAddr {
  bool v6 = false;
  u128 value = 0;  // host order; an IPv4 address in the low 32 bits
  bool operator==(const IpAddr&) const = default;
};

// A prefix with its host bits cleared ("10.1.2.3/24" is 10.1.2.0/24).
struct IpCidr {
  IpAddr network;
  int prefix = 0;
  int bits() const { return network.v6 ? 128 : 32; }
  // Addresses in the prefix (2^128 - 1 for ::/0, which has one more).
  u128 size() const { return prefix == 0 && network.v6 ? ~u128(0) : (u128(1) << (bits() - prefix)); }
  bool contains(const IpAddr& a) const {
    return a.v6 == network.v6 && a.value >= network.value && a.value - network.value < size();
  }
};

std::optional<IpAddr> parseIp(std::string_view text);
std::string formatIp(const IpAddr& a);
// "ADDR/LEN" with LEN in [0, 32] or [0, 128]; kInvalidArgument naming what is wrong.
Result<IpCidr> parseCidr(std::string_view text);
// "network/prefix", e.g. "10.1.2.0/24", "fd00::/64".
std::string formatCidr(const IpCidr& c);

}  // namespace trellis::base
