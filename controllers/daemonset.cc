// daemonset: one pod of each DaemonSet on every node that should run it, as
// kube-controller-manager does. A node should run it when the template's
// nodeSelector and required node affinity match the node and every
// NoSchedule/NoExecute taint is tolerated — with the tolerations DaemonSet
// pods always get (not-ready and unreachable NoExecute; disk, memory and
// pid pressure, unschedulable; network-unavailable for host-network pods).
// A running pod stays while only NoSchedule taints are untolerated.
// Pods are pinned by node affinity matchFields metadata.name (the scheduler
// binds them), labelled with the template's controller-revision-hash
// (ControllerRevisions keep the history `kubectl rollout undo` reads) and
// pod-template-generation. RollingUpdate replaces old pods within
// maxUnavailable (maxSurge: the new pod first, the old one once the new is
// available); OnDelete only gives replaced pods the new template. Failed
// pods and extra pods on a node are deleted; status has what `kubectl
// rollout status` reads.
#include <algorithm>

#include <boost/json/serialize.hpp>

#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kControllerRevisions;
using kube::resources::kDaemonSets;
using kube::resources::kNodes;
using kube::resources::kPods;

constexpr std::string_view kHashLabel = "controller-revision-hash";

// The node a DaemonSet pod is for: its nodeName, or the matchFields pin.
std::string podNode(const json::object& pod) {
  std::string node(kube::str(pod, {"spec", "nodeName"}));
  if (!node.empty()) return node;
  const json::array* terms = kube::array(
      pod, {"spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"});
  for (size_t i = 0; terms && i < terms->size(); ++i) {
    if (!(*terms)[i].is_object()) continue;
    const json::array* fields = kube::array((*terms)[i].get_object(), {"matchFields"});
    for (size_t j = 0; fields && j < fields->size(); ++j) {
      if (!(*fields)[j].is_object()) continue;
      const json::object& f = (*fields)[j].get_object();
      const json::array* values = kube::array(f, {"values"});
      if (kube::str(f, {"key"}) == "metadata.name" && values && values->size() == 1 && (*values)[0].is_string()) {
        return std::string((*values)[0].get_string());
      }
    }
  }
  return "";
}

json::array daemonTolerations(const json::object& tmpl) {
  json::array tols;
  if (const json::array* have = kube::array(tmpl, {"spec", "tolerations"})) tols = *have;
  auto add = [&](std::string_view key, std::string_view effect) {
    tols.push_back(json::object{{"key", key}, {"operator", "Exists"}, {"effect", effect}});
  };
  add("node.kubernetes.io/not-ready", "NoExecute");
  add("node.kubernetes.io/unreachable", "NoExecute");
  add("node.kubernetes.io/disk-pressure", "NoSchedule");
  add("node.kubernetes.io/memory-pressure", "NoSchedule");
  add("node.kubernetes.io/pid-pressure", "NoSchedule");
  add("node.kubernetes.io/unschedulable", "NoSchedule");
  if (kube::boolean(tmpl, {"spec", "hostNetwork"})) add("node.kubernetes.io/network-unavailable", "NoSchedule");
  return tols;
}

class DaemonSets : public Reconciler {
 public:
  explicit DaemonSets(Context& ctx)
      : Reconciler(ctx, "daemonset", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("daemonset-controller")),
        sets_(ctx.informers.get(kDaemonSets)),
        nodes_(ctx.informers.get(kNodes)),
        pods_(ctx.informers.get(kPods)),
        revisions_(ctx.informers.get(kControllerRevisions)) {
    indexByNamespace(*pods_);
    indexByNamespace(*revisions_);
    controller_.watch(*sets_);
    controller_.watch(*nodes_, [this](const json::object&) {
      std::vector<std::string> all;
      for (const kube::ObjectPtr& ds : sets_->list()) all.push_back(kube::objectKey(*ds));
      return all;
    });
    observeOwnedPods(*pods_, "DaemonSet", expectations_, controller_);
  }

 private:
  // Whether a new pod may go to the node, and whether a running one may stay.
  std::pair<bool, bool> fits(const json::object& tmpl, const json::array& tolerations, const json::object& node) {
    if (const json::object* sel = kube::child(tmpl, {"spec", "nodeSelector"})) {
      auto labels = kube::labels(node);
      for (const auto& [k, v] : *sel) {
        auto it = labels.find(std::string(k));
        if (!v.is_string() || it == labels.end() || it->second != v.get_string()) return {false, false};
      }
    }
    if (const json::array* terms = kube::array(
            tmpl, {"spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"})) {
      if (!kube::nodeSelectorTermsMatch(*terms, node)) return {false, false};
    }
    json::object withTolerations{{"spec", json::object{{"tolerations", tolerations}}}};
    bool place = true, keep = true;
    if (const json::array* taints = kube::array(node, {"spec", "taints"})) {
      for (const json::value& t : *taints) {
        if (!t.is_object()) continue;
        std::string_view effect = kube::str(t.get_object(), {"effect"});
        if (effect == "PreferNoSchedule" || tolerates(withTolerations, t.get_object())) continue;
        place = false;
        if (effect == "NoExecute") keep = false;
      }
    }
    return {place, keep};
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr ds = sets_->get(key);
    if (!ds) {
      expectations_.forget(key);
      return {};
    }
    if (kube::beingDeleted(*ds)) return {};
    auto sel = kube::LabelSelector::fromJson(kube::field(*ds, {"spec", "selector"}));
    if (!sel || sel->empty()) return {};
    const json::object* tmpl = kube::child(*ds, {"spec", "template"});
    if (!tmpl) return {};
    std::string ns(kube::objectNamespace(*ds));
    base::Status result;
    auto keep = [&](base::Status st) {
      if (!st && result) result = st;
    };
    auto rev = ensureRevision(ctx_.client, *revisions_, *ds, "apps/v1", "DaemonSet");
    if (!rev) return rev.error();
    auto ref = controllerRef("apps/v1", "DaemonSet", *ds);
    auto pods = claim(ctx_.client, kPods, *ds, ref, *sel, pods_->byIndex(kByNamespace, ns), result,
                      [](const json::object& p) { return kube::beingDeleted(p); });
    std::map<std::string, std::vector<kube::ObjectPtr>> byNode;
    for (const kube::ObjectPtr& p : pods) byNode[podNode(*p)].push_back(p);
    json::array tolerations = daemonTolerations(*tmpl);
    int64_t minReady = kube::integer(*ds, {"spec", "minReadySeconds"}), now = unixNow();
    bool rolling = kube::str(*ds, {"spec", "updateStrategy", "type"}) != "OnDelete";
    auto isNew = [&](const json::object& p) { return kube::labels(p)[std::string(kHashLabel)] == rev->hash; };

    std::vector<std::string> create;
    std::vector<kube::ObjectPtr> remove;
    int64_t desired = 0, scheduled = 0, misscheduled = 0, ready = 0, updated = 0, available = 0;
    struct Old {
      kube::ObjectPtr pod;
      bool available, hasNew, newAvailable;
    };
    std::vector<Old> old;
    std::set<std::string> nodeNames;
    for (const kube::ObjectPtr& node : nodes_->list()) {
      std::string name(kube::objectName(*node));
      nodeNames.insert(name);
      auto [place, stay] = fits(*tmpl, tolerations, *node);
      std::vector<kube::ObjectPtr>& here = byNode[name];
      // Failed pods go (the node gets a fresh one next time).
      std::vector<kube::ObjectPtr> live;
      for (const kube::ObjectPtr& p : here) {
        if (kube::str(*p, {"status", "phase"}) == "Failed") remove.push_back(p);
        else if (!podTerminal(*p)) live.push_back(p);
      }
      bool should = place || (stay && !live.empty());
      if (!should) {
        if (!live.empty()) ++misscheduled;
        remove.insert(remove.end(), live.begin(), live.end());
        continue;
      }
      ++desired;
      if (live.empty()) {
        create.push_back(name);
        continue;
      }
      ++scheduled;
      // One pod per node: the new-template pod first, then the oldest.
      std::sort(live.begin(), live.end(), [&](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
        if (isNew(*a) != isNew(*b)) return isNew(*a);
        return kube::str(*a, {"metadata", "creationTimestamp"}) < kube::str(*b, {"metadata", "creationTimestamp"});
      });
      kube::ObjectPtr newPod = isNew(*live[0]) ? live[0] : nullptr;
      kube::ObjectPtr oldPod = !isNew(*live.back()) ? live.back() : nullptr;
      size_t keepCount = newPod && oldPod ? 2 : 1;  // a surge pair
      for (size_t i = keepCount; i < live.size(); ++i) remove.push_back(live[i]);
      kube::ObjectPtr current = newPod ? newPod : oldPod;
      ready += podReady(*current);
      bool avail = podAvailable(*current, minReady, now);
      available += avail;
      updated += newPod != nullptr;
      if (oldPod && newPod && keepCount == 2) {
        old.push_back({oldPod, podAvailable(*oldPod, minReady, now), true, podAvailable(*newPod, minReady, now)});
      } else if (oldPod && !newPod) {
        old.push_back({oldPod, podAvailable(*oldPod, minReady, now), false, false});
      }
    }
    // Pods of nodes that are gone: podgc's; pods not pinned anywhere: ours to delete.
    for (auto& [node, list] : byNode) {
      if (node.empty() || !nodeNames.count(node)) {
        for (const kube::ObjectPtr& p : list) {
          if (node.empty()) remove.push_back(p);
        }
      }
    }
    if (rolling) {
      int64_t maxSurge = scaledValue(kube::field(*ds, {"spec", "updateStrategy", "rollingUpdate", "maxSurge"}), desired, true);
      int64_t maxUnavailable =
          scaledValue(kube::field(*ds, {"spec", "updateStrategy", "rollingUpdate", "maxUnavailable"}), desired, true, 1);
      if (maxSurge == 0 && maxUnavailable == 0) maxUnavailable = 1;
      int64_t unavailable = desired - available;
      int64_t surging = 0;
      for (const Old& o : old) surging += o.hasNew;
      for (const Old& o : old) {
        if (o.hasNew) {
          if (o.newAvailable) remove.push_back(o.pod);  // the surge pod took over
        } else if (maxSurge > 0) {
          if (!o.available) {
            remove.push_back(o.pod);
          } else if (surging < maxSurge) {
            create.push_back(podNode(*o.pod));
            ++surging;
          }
        } else if (!o.available) {
          remove.push_back(o.pod);  // costs nothing: it is unavailable already
        } else if (unavailable < maxUnavailable) {
          remove.push_back(o.pod);
          ++unavailable;
        }
      }
    }
    if (expectations_.satisfied(key)) {
      keep(deletePods(key, remove));
      keep(createPods(*ds, key, *tmpl, rev->hash, tolerations, create));
    }
    // History beyond revisionHistoryLimit, except revisions live pods use.
    std::set<std::string> inUse{rev->name};
    for (const kube::ObjectPtr& p : pods) inUse.insert(std::string(kube::objectName(*ds)) + "-" + kube::labels(*p)[std::string(kHashLabel)]);
    keep(pruneRevisions(ctx_.client, revisionsOf(*revisions_, *ds), inUse, kube::integer(*ds, {"spec", "revisionHistoryLimit"}, 10)));
    if (minReady > 0 && ready > available) controller_.queue().addAfter(key, std::chrono::seconds(minReady));

    json::object st = kube::child(*ds, {"status"}) ? *kube::child(*ds, {"status"}) : json::object{};
    json::object before = st;
    st["desiredNumberScheduled"] = desired;
    st["currentNumberScheduled"] = scheduled;
    st["numberMisscheduled"] = misscheduled;
    st["numberReady"] = ready;
    st["updatedNumberScheduled"] = updated;
    st["numberAvailable"] = available;
    st["numberUnavailable"] = std::max<int64_t>(0, desired - available);
    for (const char* f : {"updatedNumberScheduled", "numberAvailable", "numberUnavailable"}) {
      if (st[f] == 0) st.erase(f);
    }
    st["observedGeneration"] = kube::integer(*ds, {"metadata", "generation"});
    if (st != before) {
      json::object copy = *ds;
      copy["status"] = std::move(st);
      auto res = ctx_.client.update(kDaemonSets, std::move(copy), "status");
      if (!res && res.error().code() == base::ErrorCode::kConflict) controller_.enqueue(key);
      else if (!res && res.error().code() != base::ErrorCode::kNotFound) keep(res.error());
    }
    return result;
  }

  base::Status deletePods(const std::string& key, const std::vector<kube::ObjectPtr>& pods) {
    if (pods.empty()) return {};
    expectations_.start(key);
    for (const kube::ObjectPtr& p : pods) expectations_.expectDelete(key, std::string(kube::objectName(*p)));
    base::Status result;
    for (const kube::ObjectPtr& p : pods) {
      auto st = ctx_.client.remove(kPods, kube::objectNamespace(*p), kube::objectName(*p));
      if (!st && st.error().code() == base::ErrorCode::kNotFound) expectations_.observed(key, std::string(kube::objectName(*p)), true);
      else if (!st && result) result = st;
    }
    return result;
  }

  base::Status createPods(const json::object& ds, const std::string& key, const json::object& tmpl, const std::string& hash,
                          const json::array& tolerations, const std::vector<std::string>& nodes) {
    if (nodes.empty()) return {};
    std::string ns(kube::objectNamespace(ds));
    auto ref = controllerRef("apps/v1", "DaemonSet", ds);
    std::string prefix = std::string(kube::objectName(ds)) + "-";
    auto made = slowStartCreate(
        ctx_.client, kPods, ns, static_cast<int>(nodes.size()),
        [&](int i) {
          json::object pod = podFromTemplate(tmpl, ns, prefix, ref);
          json::object& labels = kube::ensureObject(pod, {"metadata", "labels"});
          labels[kHashLabel] = hash;
          labels["pod-template-generation"] = std::to_string(kube::integer(ds, {"metadata", "generation"}, 1));
          json::object& spec = kube::ensureObject(pod, {"spec"});
          spec["tolerations"] = tolerations;
          kube::ensureObject(spec, {"affinity", "nodeAffinity"})["requiredDuringSchedulingIgnoredDuringExecution"] = json::object{
              {"nodeSelectorTerms",
               json::array{json::object{{"matchFields", json::array{json::object{
                                                            {"key", "metadata.name"},
                                                            {"operator", "In"},
                                                            {"values", json::array{json::string(nodes[static_cast<size_t>(i)])}}}}}}}}};
          return pod;
        },
        [&](const json::object& pod) {
          std::string podKey = kube::objectKey(pod);
          expectations_.expectAdd(key, std::string(kube::objectName(pod)), [&] { return pods_->get(podKey) != nullptr; });
          events_.record(ds, "Normal", "SuccessfulCreate", fmt::format("Created pod: {}", kube::objectName(pod)));
        });
    if (!made.error) events_.record(ds, "Warning", "FailedCreate", fmt::format("Error creating: {}", made.error.error().message()));
    return made.error;
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> sets_, nodes_, pods_, revisions_;
  Expectations expectations_;
};

}  // namespace

std::unique_ptr<Runnable> makeDaemonSets(Context& ctx) { return std::make_unique<DaemonSets>(ctx); }

}  // namespace trellis::controllers
