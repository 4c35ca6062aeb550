#include "cni/plugin/node_rules.h"

#include <fcntl.h>
#include <linux/netfilter.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "cni/plugin/naming.h"
#include "common/linux/nftables.h"

namespace trellis::cni {

namespace {

// Bumped whenever the script below changes: stamps of another layout do not count.
constexpr int kLayout = 1;

std::string script(const std::string& t, const NodeRulesWanted& w) {
  std::string s = fmt::format(
      "add table inet {0}\n"
      "add map inet {0} hostports4 {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n"
      "add map inet {0} hostports6 {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}\n"
      "add chain inet {0} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n"
      "add chain inet {0} output {{ type nat hook output priority -100; policy accept; }}\n"
      "flush chain inet {0} prerouting\n"
      "flush chain inet {0} output\n",
      t);
  for (const char* chain : {"prerouting", "output"}) {
    s += fmt::format("add rule inet {} {} fib daddr type local dnat ip to meta l4proto . th dport map @hostports4\n", t, chain);
    s += fmt::format("add rule inet {} {} fib daddr type local dnat ip6 to meta l4proto . th dport map @hostports6\n", t, chain);
  }
  if (!w.masquerade) return s;
  s += fmt::format(
      "add set inet {0} masq4 {{ type ipv4_addr; flags interval; auto-merge; }}\n"
      "add set inet {0} cluster4 {{ type ipv4_addr; flags interval; auto-merge; }}\n"
      "add set inet {0} masq6 {{ type ipv6_addr; flags interval; auto-merge; }}\n"
      "add set inet {0} cluster6 {{ type ipv6_addr; flags interval; auto-merge; }}\n"
      "add chain inet {0} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
      "flush chain inet {0} postrouting\n"
      "add rule inet {0} postrouting ip saddr @masq4 ip daddr != @cluster4 masquerade\n"
      "add rule inet {0} postrouting ip6 saddr @masq6 ip6 daddr != @cluster6 masquerade\n",
      t);
  // Only canonical CIDRs (parsed and rendered by the caller) reach the text.
  auto element = [&](const char* set, const std::string& cidr) {
    bool v6 = cidr.find(':') != std::string::npos;
    s += fmt::format("add element inet {} {}{} {{ {} }}\n", t, set, v6 ? "6" : "4", cidr);
  };
  for (const std::string& c : w.podSubnets) element("masq", c);
  for (const std::string& c : w.clusterCidrs.empty() ? w.podSubnets : w.clusterCidrs) element("cluster", c);
  return s;
}

}  // namespace

NodeRules::NodeRules(std::string table, std::string stampDir) : table_(std::move(table)), stampDir_(std::move(stampDir)) {}

std::string NodeRules::stampPath(const NodeRulesWanted& w) const {
  std::string what = fmt::format("{}|{}", kLayout, w.masquerade);
  for (const std::string& c : w.podSubnets) what += "|" + c;
  what += "|";
  for (const std::string& c : w.clusterCidrs) what += "|" + c;
  struct stat ns{};
  ::stat("/proc/thread-self/ns/net", &ns);  // the stamp is this namespace's
  return fmt::format("{}/nft-{}-{}-{:016x}", stampDir_, table_, static_cast<unsigned long long>(ns.st_ino), fnv1a(what));
}

base::Status NodeRules::ensure(sys::NftNetlink& nl, const NodeRulesWanted& wanted, bool* made) {
  *made = false;
  std::string stamp = stampPath(wanted);
  auto handle = nl.tableHandle(NFPROTO_INET, table_);
  if (handle) {
    unsigned long long recorded = 0;
    if (FILE* f = std::fopen(stamp.c_str(), "r")) {
      bool read = std::fscanf(f, "%llu", &recorded) == 1;
      std::fclose(f);
      if (read && recorded == *handle) return {};  // made before, and still the same table
    }
  } else if (handle.error().code() != base::ErrorCode::kNotFound) {
    return std::move(handle).error();
  }
  if (auto st = sys::nftApply(script(table_, wanted)); !st) return st;
  *made = true;
  handle = nl.tableHandle(NFPROTO_INET, table_);
  if (!handle) return std::move(handle).error();
  // The stamp is a cache: without it the next ADD makes the objects again.
  std::error_code ec;
  std::filesystem::create_directories(stampDir_, ec);
  std::string tmp = stamp + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fprintf(f, "%llu\n", static_cast<unsigned long long>(*handle));
    std::fclose(f);
    std::rename(tmp.c_str(), stamp.c_str());
  }
  return {};
}

}  // namespace trellis::cni
