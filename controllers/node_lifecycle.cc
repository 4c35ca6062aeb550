// nodelifecycle: a node whose kube-node-lease Lease stops being renewed for
// --node-monitor-grace-period becomes Ready=Unknown ("Kubelet stopped
// posting node status."), gets the node.kubernetes.io/unreachable NoSchedule
// and NoExecute taints, and its pods turn not ready; pods are then evicted
// as the NoExecute taint says: at once without a toleration, after
// tolerationSeconds with one, never with one that has no limit. A node whose
// agent reports Ready=True again loses the taints; Ready=False gets the
// node.kubernetes.io/not-ready taints instead.
//
// Staleness is judged by when this process saw the Lease change, not by
// comparing clocks across machines (as kube-controller-manager does), so a
// restart gives every node a fresh grace period.
#include <map>
#include <set>
#include <mutex>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kLeases;
using kube::resources::kNodes;
using kube::resources::kPods;
using Clock = std::chrono::steady_clock;

constexpr const char* kUnreachable = "node.kubernetes.io/unreachable";
constexpr const char* kNotReady = "node.kubernetes.io/not-ready";

const base::Logger& log() {
  static base::Logger l("nodelifecycle");
  return l;
}

std::string_view condition(const json::object& obj, std::string_view type) {
  if (const json::array* conds = kube::array(obj, {"status", "conditions"})) {
    for (const json::value& c : *conds) {
      if (c.is_object() && kube::str(c.get_object(), {"type"}) == type) return kube::str(c.get_object(), {"status"});
    }
  }
  return {};
}

bool hasTaint(const json::object& node, std::string_view key, std::string_view effect) {
  if (const json::array* taints = kube::array(node, {"spec", "taints"})) {
    for (const json::value& t : *taints) {
      if (t.is_object() && kube::str(t.get_object(), {"key"}) == key && kube::str(t.get_object(), {"effect"}) == effect) return true;
    }
  }
  return false;
}

class NodeLifecycle : public Reconciler {
 public:
  explicit NodeLifecycle(Context& ctx)
      : Reconciler(ctx, "nodelifecycle", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("node-controller")),
        nodes_(ctx.informers.get(kNodes)),
        leases_(ctx.informers.get(kLeases, "kube-node-lease")),
        pods_(ctx.informers.get(kPods)) {
    indexPodsByNode(*pods_);
    controller_.watch(*nodes_);
    controller_.watch(*leases_, [](const json::object& l) { return std::vector<std::string>{std::string(kube::objectName(l))}; });
  }

 private:
  std::chrono::milliseconds grace() const { return ctx_.options.nodeMonitorGracePeriod; }

  // When the node last showed life: its Lease's renewTime changing (or, with
  // no Lease, its Ready heartbeat), as this process observed it.
  Clock::time_point lastSeenAlive(const std::string& name, const json::object& node) {
    std::string beat;
    if (kube::ObjectPtr lease = leases_->get("kube-node-lease/" + name)) beat = kube::str(*lease, {"spec", "renewTime"});
    if (beat.empty()) {
      if (const json::array* conds = kube::array(node, {"status", "conditions"})) {
        for (const json::value& c : *conds) {
          if (c.is_object() && kube::str(c.get_object(), {"type"}) == "Ready") beat = kube::str(c.get_object(), {"lastHeartbeatTime"});
        }
      }
    }
    std::lock_guard g(mu_);
    auto& seen = observed_[name];
    if (seen.first != beat || seen.second == Clock::time_point()) seen = {beat, Clock::now()};
    return seen.second;
  }

  base::Status reconcile(const std::string& name) {
    kube::ObjectPtr node = nodes_->get(name);
    if (!node) {
      std::lock_guard g(mu_);
      observed_.erase(name);
      return {};
    }
    auto quiet = Clock::now() - lastSeenAlive(name, *node);
    if (quiet < grace()) {
      controller_.queue().addAfter(name, std::chrono::duration_cast<std::chrono::milliseconds>(grace() - quiet) +
                                             std::chrono::milliseconds(10));
      std::string_view ready = condition(*node, "Ready");
      if (ready == "True") return setTaints(*node, {});
      if (ready == "False") return setTaints(*node, kNotReady);
      return {};
    }
    if (auto st = markUnknown(*node); !st) return st;
    if (auto st = setTaints(*node, kUnreachable); !st) return st;
    return evict(name);
  }

  base::Status markUnknown(const json::object& nodeIn) {
    if (condition(nodeIn, "Ready") == "Unknown") return {};
    json::object node = nodeIn;
    std::string now = kube::rfc3339Now();
    json::array conds;
    std::set<std::string> types{"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"};
    if (const json::array* old = kube::array(node, {"status", "conditions"})) {
      for (const json::value& c : *old) {
        if (!c.is_object()) continue;
        json::object cond = c.get_object();
        if (types.erase(std::string(kube::str(cond, {"type"})))) {
          cond["status"] = "Unknown", cond["reason"] = "NodeStatusUnknown";
          cond["message"] = "Kubelet stopped posting node status.", cond["lastTransitionTime"] = now;
        }
        conds.push_back(std::move(cond));
      }
    }
    for (const std::string& t : types) {
      conds.push_back(json::object{{"type", t}, {"status", "Unknown"}, {"reason", "NodeStatusNeverUpdated"},
                                   {"message", "Kubelet never posted node status."}, {"lastHeartbeatTime", now},
                                   {"lastTransitionTime", now}});
    }
    kube::ensureObject(node, {"status"})["conditions"] = std::move(conds);
    auto res = ctx_.client.update(kNodes, std::move(node), "status");
    if (!res) return res.error();
    log().warn("node unreachable", {{"node", kube::objectName(nodeIn)}});
    events_.record(nodeIn, "Normal", "NodeNotReady", fmt::format("Node {} status is now: NodeNotReady", kube::objectName(nodeIn)));
    // Its pods are no longer ready.
    for (const kube::ObjectPtr& pod : pods_->byIndex(kPodsByNode, std::string(kube::objectName(nodeIn)))) {
      if (podTerminal(*pod) || condition(*pod, "Ready") == "False") continue;
      json::object p = *pod;
      json::array pc;
      bool found = false;
      if (const json::array* old = kube::array(p, {"status", "conditions"})) {
        for (const json::value& c : *old) {
          json::object cond = c.is_object() ? c.get_object() : json::object();
          if (kube::str(cond, {"type"}) == "Ready") cond["status"] = "False", cond["lastTransitionTime"] = now, found = true;
          pc.push_back(std::move(cond));
        }
      }
      if (!found) pc.push_back(json::object{{"type", "Ready"}, {"status", "False"}, {"lastTransitionTime", now}});
      kube::ensureObject(p, {"status"})["conditions"] = std::move(pc);
      auto r = ctx_.client.update(kPods, std::move(p), "status");
      if (!r && r.error().code() != base::ErrorCode::kNotFound && r.error().code() != base::ErrorCode::kConflict) return r.error();
    }
    return {};
  }

  // Makes the node's lifecycle taints exactly those of `key` (none when empty).
  base::Status setTaints(const json::object& nodeIn, std::string_view key) {
    bool want = !key.empty();
    bool ok = true;
    for (const char* k : {kUnreachable, kNotReady}) {
      for (const char* effect : {"NoSchedule", "NoExecute"}) {
        ok = ok && hasTaint(nodeIn, k, effect) == (want && k == key);
      }
    }
    if (ok) return {};
    json::array taints;
    if (const json::array* old = kube::array(nodeIn, {"spec", "taints"})) {
      for (const json::value& t : *old) {
        std::string_view k = t.is_object() ? kube::str(t.get_object(), {"key"}) : "";
        if (k != kUnreachable && k != kNotReady) taints.push_back(t);
      }
    }
    if (want) {
      std::string now = kube::rfc3339Now();
      for (const char* effect : {"NoSchedule", "NoExecute"}) {
        const json::array* old = kube::array(nodeIn, {"spec", "taints"});
        json::object t{{"key", key}, {"effect", effect}, {"timeAdded", now}};
        for (size_t i = 0; old && i < old->size(); ++i) {  // keep when it was added
          const json::value& o = (*old)[i];
          if (o.is_object() && kube::str(o.get_object(), {"key"}) == key && kube::str(o.get_object(), {"effect"}) == effect) {
            t = o.get_object();
          }
        }
        taints.push_back(std::move(t));
      }
    }
    json::object node = nodeIn;
    kube::ensureObject(node, {"spec"})["taints"] = std::move(taints);
    auto res = ctx_.client.update(kNodes, std::move(node));
    return res ? base::Status() : base::Status(res.error());
  }

  // NoExecute: pods without a toleration go now, with tolerationSeconds
  // after that long from the taint's timeAdded, with no limit never.
  base::Status evict(const std::string& name) {
    kube::ObjectPtr node = nodes_->get(name);
    std::optional<int64_t> added;
    if (const json::array* taints = node ? kube::array(*node, {"spec", "taints"}) : nullptr) {
      for (const json::value& t : *taints) {
        if (t.is_object() && kube::str(t.get_object(), {"key"}) == kUnreachable &&
            kube::str(t.get_object(), {"effect"}) == "NoExecute") {
          added = kube::parseRfc3339(kube::str(t.get_object(), {"timeAdded"}));
        }
      }
    }
    if (!added) {
      controller_.queue().addAfter(name, std::chrono::milliseconds(100));  // the taint is not in the cache yet
      return {};
    }
    int64_t now = time(nullptr);
    std::optional<int64_t> next;
    for (const kube::ObjectPtr& pod : pods_->byIndex(kPodsByNode, name)) {
      if (podTerminal(*pod) || kube::beingDeleted(*pod)) continue;
      std::optional<int64_t> limit = 0;  // seconds tolerated; nullopt: forever
      bool tolerated = false;
      if (const json::array* tols = kube::array(*pod, {"spec", "tolerations"})) {
        for (const json::value& tv : *tols) {
          if (!tv.is_object()) continue;
          const json::object& t = tv.get_object();
          std::string_view k = kube::str(t, {"key"}), e = kube::str(t, {"effect"}), op = kube::str(t, {"operator"});
          bool keyOk = (op == "Exists" && k.empty()) || k == kUnreachable;
          if (!keyOk || (!e.empty() && e != "NoExecute")) continue;
          const json::value* secs = t.if_contains("tolerationSeconds");
          std::optional<int64_t> l = secs && !secs->is_null() ? std::optional<int64_t>(kube::integer(t, {"tolerationSeconds"}))
                                                              : std::nullopt;
          if (!tolerated || !l || (limit && *l > *limit)) limit = l;
          tolerated = true;
        }
      }
      if (!limit) continue;
      int64_t due = *added + std::max<int64_t>(*limit, 0);
      if (due > now) {
        next = next ? std::min(*next, due) : due;
        continue;
      }
      auto st = ctx_.client.remove(kPods, kube::objectNamespace(*pod), kube::objectName(*pod),
                                   kube::DeleteOptions{.uid = std::string(kube::uid(*pod))});
      if (!st && st.error().code() != base::ErrorCode::kNotFound && st.error().code() != base::ErrorCode::kConflict) return st;
      log().info("evicted", {{"pod", kube::objectKey(*pod)}, {"node", name}});
      events_.record(*pod, "Normal", "TaintManagerEviction", fmt::format("Marking for deletion Pod {}", kube::objectKey(*pod)));
    }
    if (next) controller_.queue().addAfter(name, std::chrono::seconds(*next - now));
    return {};
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> nodes_, leases_, pods_;
  std::mutex mu_;
  std::map<std::string, std::pair<std::string, Clock::time_point>> observed_;  // node -> (beat, when seen)
};

}  // namespace

std::unique_ptr<Runnable> makeNodeLifecycle(Context& ctx) { return std::make_unique<NodeLifecycle>(ctx); }

}  // namespace trellis::controllers
