// libFuzzer target: a CNI invocation — environment and network
// configuration — through the plugin's parsing, as trellis-cni's main does
// before it touches the node: the invocation, the plugin's own keys, IPAM,
// port mappings and bandwidth. The input is the environment (NAME=value
// lines) and the configuration, split at the first empty line. Any answer
// is fine; an exception, a crash or a sanitizer report is not.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "cni/plugin/bandwidth.h"
#include "cni/plugin/netconf.h"
#include "cni/plugin/portmap.h"

using namespace trellis::cni;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t split = in.find("\n\n");
  std::string_view envText = in.substr(0, split), config = split == std::string_view::npos ? "" : in.substr(split + 2);
  std::map<std::string, std::string> env;
  while (!envText.empty()) {
    size_t nl = envText.find('\n');
    std::string_view line = envText.substr(0, nl);
    size_t eq = line.find('=');
    if (eq != std::string_view::npos) env[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
    envText = nl == std::string_view::npos ? "" : envText.substr(nl + 1);
  }
  auto inv = parseInvocation(env, config);
  if (std::holds_alternative<Error>(inv)) return 0;
  const auto& c = std::get<Invocation>(inv).config;
  auto nc = parseNetConf(c);
  if (std::holds_alternative<NetConf>(nc)) {
    // What reaches nftables and paths is canonical: checked, not trusted.
    for (const std::string& cidr : std::get<NetConf>(nc).clusterCidrs) {
      if (cidr.find_first_not_of("0123456789abcdef.:/") != std::string::npos) __builtin_trap();
    }
  }
  auto ipam = ipamOf(c);
  if (std::holds_alternative<IpamConfig>(ipam) && std::get<IpamConfig>(ipam).dataDir[0] != '/') __builtin_trap();
  (void)parsePortMappings(c);
  (void)parseBandwidth(c);
  (void)resultFromJson(c);
  return 0;
}
