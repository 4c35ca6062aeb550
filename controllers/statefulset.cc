// statefulset: pods with stable names "<set>-<ordinal>" and one claim per
// volumeClaimTemplate each ("<template>-<set>-<ordinal>", made before the
// pod and kept when the pod goes, unless persistentVolumeClaimRetentionPolicy
// says Delete: then the set, or the condemned pod on scale-down, owns them
// and the garbage collector deletes them). OrderedReady creates ordinals one
// at a time, each once the previous is Running and Ready, and removes from
// the highest down one at a time; Parallel does both at once. Pods carry
// hostname = their name and subdomain = serviceName, the
// statefulset.kubernetes.io/pod-name and apps.kubernetes.io/pod-index
// labels, and controller-revision-hash naming the ControllerRevision whose
// template they run. RollingUpdate replaces pods at ordinals >= partition
// from the highest down, at most maxUnavailable unavailable at a time;
// OnDelete only gives pods deleted by someone else the new template.
// currentRevision becomes updateRevision once every pod runs it.
#include <algorithm>

#include <boost/json/serialize.hpp>

#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kControllerRevisions;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPods;
using kube::resources::kStatefulSets;

constexpr std::string_view kHashLabel = "controller-revision-hash";

bool runningAndReady(const json::object& pod) { return kube::str(pod, {"status", "phase"}) == "Running" && podReady(pod); }

class StatefulSets : public Reconciler {
 public:
  explicit StatefulSets(Context& ctx)
      : Reconciler(ctx, "statefulset", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("statefulset-controller")),
        sets_(ctx.informers.get(kStatefulSets)),
        pods_(ctx.informers.get(kPods)),
        claims_(ctx.informers.get(kPersistentVolumeClaims)),
        revisions_(ctx.informers.get(kControllerRevisions)) {
    indexByNamespace(*pods_);
    indexByNamespace(*revisions_);
    controller_.watch(*sets_);
    controller_.watch(*pods_, [](const json::object& pod) {
      auto ref = kube::controllerOf(pod);
      if (!ref || ref->kind != "StatefulSet") return std::vector<std::string>{};
      return std::vector<std::string>{std::string(kube::objectNamespace(pod)) + "/" + ref->name};
    });
  }

 private:
  // The template a revision holds (the set's own for the update revision).
  std::optional<json::object> templateOf(const json::object& sts, const std::string& revision, const Revision& update) {
    if (revision == update.name) return *kube::child(sts, {"spec", "template"});
    kube::ObjectPtr cr = revisions_->get(std::string(kube::objectNamespace(sts)) + "/" + revision);
    const json::object* t = cr ? kube::child(*cr, {"data", "spec", "template"}) : nullptr;
    if (!t) return std::nullopt;
    json::object copy = *t;
    copy.erase("$patch");
    return copy;
  }

  std::string claimName(const json::object& vct, const json::object& sts, int64_t ordinal) {
    return fmt::format("{}-{}-{}", kube::str(vct, {"metadata", "name"}), kube::objectName(sts), ordinal);
  }

  // Creates the ordinal's missing claims; with `owner`, makes it (the set,
  // or a condemned pod) their controller-less owner per the retention policy.
  base::Status ensureClaims(const json::object& sts, int64_t ordinal) {
    const json::array* vcts = kube::array(sts, {"spec", "volumeClaimTemplates"});
    if (!vcts) return {};
    std::string ns(kube::objectNamespace(sts));
    bool ownedBySet = kube::str(sts, {"spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"}) == "Delete";
    base::Status result;
    for (const json::value& v : *vcts) {
      if (!v.is_object()) continue;
      std::string name = claimName(v.get_object(), sts, ordinal);
      if (claims_->get(ns + "/" + name)) continue;
      json::object meta{{"name", name}, {"namespace", ns}};
      if (const json::object* ml = kube::child(sts, {"spec", "selector", "matchLabels"})) meta["labels"] = *ml;
      if (const json::object* a = kube::child(v.get_object(), {"metadata", "annotations"})) meta["annotations"] = *a;
      if (ownedBySet) {
        kube::OwnerReference ref{"apps/v1", "StatefulSet", std::string(kube::objectName(sts)), std::string(kube::uid(sts)),
                                 false, true};
        meta["ownerReferences"] = json::array{kube::toJson(ref)};
      }
      json::object pvc{{"apiVersion", "v1"}, {"kind", "PersistentVolumeClaim"}, {"metadata", std::move(meta)}};
      if (const json::value* spec = v.get_object().if_contains("spec")) pvc["spec"] = *spec;
      auto res = ctx_.client.create(kPersistentVolumeClaims, ns, std::move(pvc));
      if (!res && res.error().code() != base::ErrorCode::kAlreadyExists && result) result = res.error();
      if (res) events_.record(sts, "Normal", "SuccessfulCreate", fmt::format("create Claim {} Pod {}-{} in StatefulSet {} success",
                                                                              name, kube::objectName(sts), ordinal, kube::objectName(sts)));
    }
    return result;
  }

  // On scale-down with whenScaled: Delete, the condemned pod (not the set)
  // owns its claims.
  base::Status handOverClaims(const json::object& sts, const json::object& pod, int64_t ordinal) {
    if (kube::str(sts, {"spec", "persistentVolumeClaimRetentionPolicy", "whenScaled"}) != "Delete") return {};
    const json::array* vcts = kube::array(sts, {"spec", "volumeClaimTemplates"});
    base::Status result;
    for (size_t i = 0; vcts && i < vcts->size(); ++i) {
      if (!(*vcts)[i].is_object()) continue;
      std::string name = claimName((*vcts)[i].get_object(), sts, ordinal);
      kube::ObjectPtr pvc = claims_->get(std::string(kube::objectNamespace(sts)) + "/" + name);
      if (!pvc) continue;
      json::array refs;
      for (const kube::OwnerReference& r : kube::ownerReferences(*pvc)) {
        if (r.uid != kube::uid(pod) && r.uid != kube::uid(sts)) refs.push_back(kube::toJson(r));  // the pod alone now
      }
      refs.push_back(kube::toJson(kube::OwnerReference{"v1", "Pod", std::string(kube::objectName(pod)),
                                                       std::string(kube::uid(pod)), false, false}));
      json::object patch{{"metadata", json::object{{"ownerReferences", std::move(refs)}}}};
      auto res = ctx_.client.patch(kPersistentVolumeClaims, kube::objectNamespace(*pvc), name, kube::PatchType::kMerge,
                                   json::serialize(patch));
      if (!res && res.error().code() != base::ErrorCode::kNotFound && result) result = res.error();
    }
    return result;
  }

  base::Status createPod(const json::object& sts, int64_t ordinal, const json::object& tmpl, const std::string& revision) {
    std::string ns(kube::objectNamespace(sts));
    std::string name = fmt::format("{}-{}", kube::objectName(sts), ordinal);
    json::object pod = podFromTemplate(tmpl, ns, name, controllerRef("apps/v1", "StatefulSet", sts));
    json::object& labels = kube::ensureObject(pod, {"metadata", "labels"});
    labels[kHashLabel] = revision;
    labels["statefulset.kubernetes.io/pod-name"] = name;
    labels["apps.kubernetes.io/pod-index"] = std::to_string(ordinal);
    json::object& spec = kube::ensureObject(pod, {"spec"});
    spec["hostname"] = name;
    if (std::string_view svc = kube::str(sts, {"spec", "serviceName"}); !svc.empty()) spec["subdomain"] = svc;
    if (const json::array* vcts = kube::array(sts, {"spec", "volumeClaimTemplates"})) {
      json::value& volumes = spec["volumes"];
      if (!volumes.is_array()) volumes = json::array{};
      for (const json::value& v : *vcts) {
        if (!v.is_object()) continue;
        std::string vname(kube::str(v.get_object(), {"metadata", "name"}));
        json::array& vs = volumes.get_array();
        vs.erase(std::remove_if(vs.begin(), vs.end(), [&](const json::value& x) {
                   return x.is_object() && kube::str(x.get_object(), {"name"}) == vname;
                 }),
                 vs.end());
        vs.push_back(json::object{{"name", vname},
                                  {"persistentVolumeClaim", json::object{{"claimName", claimName(v.get_object(), sts, ordinal)}}}});
      }
    }
    auto res = ctx_.client.create(kPods, ns, std::move(pod));
    if (!res && res.error().code() != base::ErrorCode::kAlreadyExists) {
      events_.record(sts, "Warning", "FailedCreate", fmt::format("create Pod {} in StatefulSet {} failed error: {}", name,
                                                                 kube::objectName(sts), res.error().message()));
      return res.error();
    }
    events_.record(sts, "Normal", "SuccessfulCreate",
                   fmt::format("create Pod {} in StatefulSet {} successful", name, kube::objectName(sts)));
    return {};
  }

  base::Status deletePod(const json::object& sts, const json::object& pod) {
    auto st = ctx_.client.remove(kPods, kube::objectNamespace(pod), kube::objectName(pod),
                                 kube::DeleteOptions{.propagationPolicy = {}, .uid = std::string(kube::uid(pod)), .resourceVersion = {}});
    if (!st && st.error().code() != base::ErrorCode::kNotFound && st.error().code() != base::ErrorCode::kConflict) return st;
    events_.record(sts, "Normal", "SuccessfulDelete",
                   fmt::format("delete Pod {} in StatefulSet {} successful", kube::objectName(pod), kube::objectName(sts)));
    return {};
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr sts = sets_->get(key);
    if (!sts || kube::beingDeleted(*sts)) return {};
    auto sel = kube::LabelSelector::fromJson(kube::field(*sts, {"spec", "selector"}));
    if (!sel || sel->empty() || !kube::child(*sts, {"spec", "template"})) return {};
    std::string ns(kube::objectNamespace(*sts)), setName(kube::objectName(*sts));
    base::Status result;
    auto keep = [&](base::Status st) {
      if (!st && result) result = st;
    };
    auto update = ensureRevision(ctx_.client, *revisions_, *sts, "apps/v1", "StatefulSet");
    if (!update) return update.error();
    std::string current(kube::str(*sts, {"status", "currentRevision"}));
    if (current.empty() || !templateOf(*sts, current, *update)) current = update->name;
    // Only pods named as the set's members are adopted (kube's isMemberOf).
    auto notMember = [&setName](const json::object& p) {
      std::string_view name = kube::objectName(p);
      std::string_view suffix = name.substr(std::min(name.size(), setName.size() + 1));
      return !name.starts_with(setName + "-") || suffix.empty() || suffix.find_first_not_of("0123456789") != std::string_view::npos;
    };
    auto pods = claim(ctx_.client, kPods, *sts, controllerRef("apps/v1", "StatefulSet", *sts), *sel,
                      pods_->byIndex(kByNamespace, ns), result, notMember);
    int64_t start = kube::integer(*sts, {"spec", "ordinals", "start"});
    int64_t replicas = kube::integer(*sts, {"spec", "replicas"}, 1);
    bool parallel = kube::str(*sts, {"spec", "podManagementPolicy"}) == "Parallel";
    bool rolling = kube::str(*sts, {"spec", "updateStrategy", "type"}) != "OnDelete";
    int64_t partition = rolling ? kube::integer(*sts, {"spec", "updateStrategy", "rollingUpdate", "partition"}) : 0;
    int64_t minReady = kube::integer(*sts, {"spec", "minReadySeconds"}), now = unixNow();
    std::map<int64_t, kube::ObjectPtr> inRange;
    std::vector<std::pair<int64_t, kube::ObjectPtr>> condemned;
    for (const kube::ObjectPtr& p : pods) {
      std::string_view name = kube::objectName(*p);
      std::string_view suffix = name.substr(std::min(name.size(), setName.size() + 1));
      bool ours = name.starts_with(setName + "-") && !suffix.empty() && suffix.size() < 10 &&
                  suffix.find_first_not_of("0123456789") == std::string_view::npos;
      int64_t ordinal = ours ? std::atoll(std::string(suffix).c_str()) : -1;
      if (ordinal >= start && ordinal < start + replicas) inRange[ordinal] = p;
      else condemned.emplace_back(ordinal, p);
    }
    std::sort(condemned.begin(), condemned.end(), [](auto& a, auto& b) { return a.first > b.first; });

    // Create and replace, lowest ordinal first; OrderedReady waits on each.
    bool blocked = false;
    for (int64_t i = start; i < start + replicas && !blocked; ++i) {
      auto it = inRange.find(i);
      if (it == inRange.end()) {
        std::string revision = rolling && i - start < partition ? current : update->name;
        auto tmpl = templateOf(*sts, revision, *update);
        if (!tmpl) {
          tmpl = *kube::child(*sts, {"spec", "template"});
          revision = update->name;
        }
        keep(ensureClaims(*sts, i));
        keep(createPod(*sts, i, *tmpl, revision));
        blocked = !parallel;
        continue;
      }
      const json::object& pod = *it->second;
      std::string_view phase = kube::str(pod, {"status", "phase"});
      if ((phase == "Failed" || phase == "Succeeded") && !kube::beingDeleted(pod)) {
        keep(deletePod(*sts, pod));  // recreated next time
        blocked = !parallel;
        continue;
      }
      keep(ensureClaims(*sts, i));  // claims deleted by hand come back
      if (!parallel && (kube::beingDeleted(pod) || !runningAndReady(pod))) blocked = true;
    }
    // Scale down, highest first; OrderedReady one at a time with everything else healthy.
    bool allHealthy = std::all_of(inRange.begin(), inRange.end(), [](auto& e) { return runningAndReady(*e.second) && !kube::beingDeleted(*e.second); });
    for (auto& [ordinal, pod] : condemned) {
      if (kube::beingDeleted(*pod)) {
        if (!parallel) break;
        continue;
      }
      if (!parallel && (blocked || !allHealthy)) break;
      keep(handOverClaims(*sts, *pod, ordinal));
      keep(deletePod(*sts, *pod));
      if (!parallel) break;
    }
    // RollingUpdate: highest ordinal down to the partition, within maxUnavailable.
    bool complete = static_cast<int64_t>(inRange.size()) == replicas;
    if (rolling && complete && condemned.empty()) {
      int64_t maxUnavailable =
          std::max<int64_t>(1, scaledValue(kube::field(*sts, {"spec", "updateStrategy", "rollingUpdate", "maxUnavailable"}),
                                           replicas, false, 1));
      if (!parallel) maxUnavailable = 1;
      int64_t unavailable = 0;
      for (auto& [i, p] : inRange) unavailable += kube::beingDeleted(*p) || !podAvailable(*p, minReady, now);
      for (auto it = inRange.rbegin(); it != inRange.rend() && unavailable < maxUnavailable; ++it) {
        if (it->first - start < partition) break;
        const json::object& pod = *it->second;
        if (kube::labels(pod)[std::string(kHashLabel)] == update->name || kube::beingDeleted(pod)) continue;
        keep(deletePod(*sts, pod));
        ++unavailable;
      }
    }
    // History beyond revisionHistoryLimit, except the current and update revisions.
    keep(pruneRevisions(ctx_.client, revisionsOf(*revisions_, *sts), {current, update->name},
                        kube::integer(*sts, {"spec", "revisionHistoryLimit"}, 10)));

    int64_t ready = 0, available = 0, currentCount = 0, updated = 0, existing = 0;
    for (const kube::ObjectPtr& p : pods) {
      if (kube::beingDeleted(*p)) continue;
      ++existing;
      ready += podReady(*p);
      available += podAvailable(*p, minReady, now);
      std::string rev = kube::labels(*p)[std::string(kHashLabel)];
      currentCount += rev == current;
      updated += rev == update->name;
    }
    if (minReady > 0 && ready > available) controller_.queue().addAfter(key, std::chrono::seconds(minReady));
    if (updated == replicas && existing == replicas && current != update->name) {
      current = update->name;  // every pod runs the update: it is current now
      currentCount = updated;
    }
    json::object st = kube::child(*sts, {"status"}) ? *kube::child(*sts, {"status"}) : json::object{};
    json::object before = st;
    st["observedGeneration"] = kube::integer(*sts, {"metadata", "generation"});
    st["replicas"] = existing;
    st["readyReplicas"] = ready;
    st["availableReplicas"] = available;
    st["currentReplicas"] = currentCount;
    st["updatedReplicas"] = updated;
    st["currentRevision"] = current;
    st["updateRevision"] = update->name;
    st["collisionCount"] = kube::integer(*sts, {"status", "collisionCount"});
    for (const char* f : {"readyReplicas", "currentReplicas", "updatedReplicas"}) {
      if (st[f] == 0) st.erase(f);
    }
    if (st != before) {
      json::object copy = *sts;
      copy["status"] = std::move(st);
      auto res = ctx_.client.update(kStatefulSets, std::move(copy), "status");
      if (!res && res.error().code() == base::ErrorCode::kConflict) controller_.enqueue(key);
      else if (!res && res.error().code() != base::ErrorCode::kNotFound) keep(res.error());
    }
    return result;
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> sets_, pods_, claims_, revisions_;
};

}  // namespace

std::unique_ptr<Runnable> makeStatefulSets(Context& ctx) { return std::make_unique<StatefulSets>(ctx); }

}  // namespace trellis::controllers
