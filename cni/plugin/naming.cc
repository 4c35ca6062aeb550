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

namespace {

uint32_t attachmentHash(const std::string& containerId, const std::string& ifname) {
  return static_cast<uint32_t>(fnv1a(containerId + "/" + ifname));
}

std::string macFrom(uint8_t second, std::string_view key) {
  uint64_t h = fnv1a(key);
  return fmt::format("0a:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", second, (h >> 24) & 0xff, (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
}

}  // namespace

std::string hostVethName(const std::string& network, const std::string& containerId, const std::string& ifname) {
  return fmt::format("{}{:08x}", vethPrefix(network), attachmentHash(containerId, ifname));
}

std::string retiredPrefix(const std::string& network) { return "tx" + vethPrefix(network).substr(2); }

std::string retiredVethName(const std::string& network, const std::string& containerId, const std::string& ifname) {
  return fmt::format("{}{:08x}", retiredPrefix(network), attachmentHash(containerId, ifname));
}

std::string podMac(const std::string& containerId, const std::string& ifname) {
  return macFrom(0x58, "mac/" + containerId + "/" + ifname);
}

std::string hostVethMac(const std::string& containerId, const std::string& ifname) {
  return macFrom(0x59, "mac/" + containerId + "/" + ifname);
}

std::string bridgeMac(const std::string& bridge) { return macFrom(0x5a, "bridge/" + bridge); }

}  // namespace trellis::cni
