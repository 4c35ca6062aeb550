// Names trellis-cni derives from an attachment, shared by the plugin and the
// agent: the host end of a pod's veth pair is "tc" + 4 hex digits of the
// network + 8 of the attachment (container id and interface name), a prefix
// only trellis-cni uses, so GC and metrics find exactly their own links.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trellis::cni {

uint64_t fnv1a(std::string_view s);
std::string vethPrefix(const std::string& network);
std::string hostVethName(const std::string& network, const std::string& containerId, const std::string& ifname);
// A locally administered MAC stable per attachment: "0a:58:xx:xx:xx:xx".
std::string podMac(const std::string& containerId, const std::string& ifname);

}  // namespace trellis::cni
