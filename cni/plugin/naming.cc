#include "cni/plugin/naming.h"

#include <fmt/format.h>

namespace trellis::cni {

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string vethPrefix(const std::string& network) {
  return fmt::format("tc{:04x}", static_cast<uint32_t>(fnv1a("net/" + network) & 0xffff));
}

std::string hostVethName(const std::string& network, const std::string& containerId, const std::string& ifname) {
  return fmt::format("{}{:08x}", vethPrefix(network), static_cast<uint32_t>(fnv1a(containerId + "/" + ifname)));
}

std::string podMac(const std::string& containerId, const std::string& ifname) {
  uint64_t h = fnv1a("mac/" + containerId + "/" + ifname);
  return fmt::format("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", (h >> 24) & 0xff, (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
}

}  // namespace trellis::cni
