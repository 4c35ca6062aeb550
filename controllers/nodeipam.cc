// nodeipam: each Node gets spec.podCIDR(s) — one subnet of every
// --cluster-cidr (IPv4 and/or IPv6, in the flag's order) — the lowest one
// no node holds. What is taken is read from the Nodes themselves, so a
// deleted node's subnets are free again and a restart forgets nothing.
// One worker: two nodes never race for a subnet.
#include <map>
#include <set>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kNodes;

const base::Logger& log() {
  static base::Logger l("nodeipam");
  return l;
}

std::vector<std::string> podCidrsOf(const json::object& node) {
  std::vector<std::string> out;
  if (const json::array* a = kube::array(node, {"spec", "podCIDRs"})) {
    for (const json::value& v : *a) {
      if (v.is_string()) out.emplace_back(v.get_string());
    }
  }
  if (out.empty() && !kube::str(node, {"spec", "podCIDR"}).empty()) out.emplace_back(kube::str(node, {"spec", "podCIDR"}));
  return out;
}

class NodeIpam : public Reconciler {
 public:
  explicit NodeIpam(Context& ctx)
      : Reconciler(ctx, "nodeipam", [this](const std::string& key) { return reconcile(key); }, 1),
        events_(ctx.recorders.get("cidrAllocator")),
        nodes_(ctx.informers.get(kNodes)) {
    controller_.watch(*nodes_);
  }

 private:
  base::Status reconcile(const std::string& name) {
    kube::ObjectPtr node = nodes_->get(name);
    if (!node) {
      pending_.erase(name);
      return {};
    }
    if (!podCidrsOf(*node).empty()) {
      pending_.erase(name);
      return {};
    }
    if (pending_.count(name) || ctx_.options.clusterCidrs.empty()) return {};
    std::set<std::string> taken;
    for (const kube::ObjectPtr& n : nodes_->list()) {
      for (std::string& c : podCidrsOf(*n)) taken.insert(std::move(c));
    }
    for (const auto& [n, cidrs] : pending_) taken.insert(cidrs.begin(), cidrs.end());

    std::vector<std::string> cidrs;
    for (const base::IpCidr& cluster : ctx_.options.clusterCidrs) {
      int mask = cluster.network.v6 ? ctx_.options.nodeCidrMaskV6 : ctx_.options.nodeCidrMaskV4;
      auto free = firstFree(cluster, mask, taken);
      if (!free) {
        events_.record(*node, "Normal", "CIDRNotAvailable", fmt::format("Node {} status is now: CIDRNotAvailable", name));
        return base::makeError(base::ErrorCode::kResourceExhausted, "no /{} left in {} for node {}", mask,
                               base::formatCidr(cluster), name);
      }
      cidrs.push_back(*free);
    }
    json::array list;
    for (const std::string& c : cidrs) list.push_back(json::string(c));
    json::object patch{{"spec", json::object{{"podCIDR", cidrs[0]}, {"podCIDRs", std::move(list)}}}};
    auto res = ctx_.client.patch(kNodes, "", name, kube::PatchType::kMerge, json::serialize(patch));
    if (!res) return res.error();
    pending_[name] = cidrs;
    log().info("allocated", {{"node", name}, {"podCIDRs", fmt::format("{}", fmt::join(cidrs, ","))}});
    events_.record(*res, "Normal", "CIDRAssignmentSucceeded",
                       fmt::format("Node {} has been assigned podCIDRs {}", name, fmt::join(cidrs, ",")));
    return {};
  }

  static std::optional<std::string> firstFree(const base::IpCidr& cluster, int mask, const std::set<std::string>& taken) {
    if (mask < cluster.prefix || mask > cluster.bits()) return std::nullopt;
    int hostBits = cluster.bits() - mask;
    base::u128 count = mask - cluster.prefix >= 24 ? (base::u128(1) << 24) : (base::u128(1) << (mask - cluster.prefix));
    for (base::u128 i = 0; i < count; ++i) {
      base::IpCidr sub{{cluster.network.v6, cluster.network.value + (i << hostBits)}, mask};
      std::string text = base::formatCidr(sub);
      if (!taken.count(text)) return text;
    }
    return std::nullopt;
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> nodes_;
  // Subnets patched onto nodes the cache has not shown with them yet.
  std::map<std::string, std::vector<std::string>> pending_;
};

}  // namespace

std::unique_ptr<Runnable> makeNodeIpam(Context& ctx) { return std::make_unique<NodeIpam>(ctx); }

}  // namespace trellis::controllers
