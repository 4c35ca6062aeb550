// Names trellis-cni derives from an attachment, shared by the plugin and the
// agent: the host end of a pod's veth pair is "tc" + 4 hex digits of the
// network + 8 of the attachment (container id and interface name), a prefix
// only trellis-cni uses, so GC and metrics find exactly their own links. DEL
// renames a pair it retires to "tx" + the same 12 digits (both ends) before
// the kernel's slow part of deleting it runs in the background.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trellis::cni {

uint64_t fnv1a(std::string_view s);
std::string vethPrefix(const std::string& network);
std::string hostVethName(const std::string& network, const std::string& containerId, const std::string& ifname);
std::string retiredPrefix(const std::string& network);
std::string retiredVethName(const std::string& network, const std::string& containerId, const std::string& ifname);
// Locally administered MACs, stable per attachment ("0a:58:xx:xx:xx:xx" for
// the pod end, "0a:59:..." for the host end) and per bridge ("0a:5a:...").
std::string podMac(const std::string& containerId, const std::string& ifname);
std::string hostVethMac(const std::string& containerId, const std::string& ifname);
std::string bridgeMac(const std::string& bridge);

}  // namespace trellis::cni
