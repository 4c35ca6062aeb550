// disruption: the status of each PodDisruptionBudget, which the eviction
// subresource of apiserver-lite spends. As kube-controller-manager's:
// expectedPods is the number of selected pods for an integer minAvailable,
// else the scale of their controllers (a ReplicaSet's, its Deployment's,
// a StatefulSet's; a pod without one counts itself); desiredHealthy follows
// minAvailable or maxUnavailable (percentages rounded up); currentHealthy
// counts ready pods not being deleted and not recently evicted
// (status.disruptedPods, forgotten once the pod is gone or after two
// minutes); disruptionsAllowed = currentHealthy - desiredHealthy, never
// negative; the DisruptionAllowed condition; observedGeneration last, so the
// eviction subresource only trusts a status computed for the current spec.
#include <algorithm>

#include <boost/json/serialize.hpp>

#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kDeployments;
using kube::resources::kPodDisruptionBudgets;
using kube::resources::kPods;
using kube::resources::kReplicaSets;
using kube::resources::kStatefulSets;

constexpr int64_t kDeletionTimeout = 120;  // seconds an evicted pod stays in disruptedPods

class Disruption : public Reconciler {
 public:
  explicit Disruption(Context& ctx)
      : Reconciler(ctx, "disruption", [this](const std::string& key) { return reconcile(key); }),
        budgets_(ctx.informers.get(kPodDisruptionBudgets)),
        pods_(ctx.informers.get(kPods)),
        sets_(ctx.informers.get(kReplicaSets)),
        deployments_(ctx.informers.get(kDeployments)),
        statefulSets_(ctx.informers.get(kStatefulSets)) {
    indexByNamespace(*budgets_);
    indexByNamespace(*pods_);
    controller_.watch(*budgets_);
    controller_.watch(*pods_, [this](const json::object& pod) { return budgetsOf(pod); });
    // A controller's scale changes expectedPods of the budgets over its pods.
    auto scaled = [this](const json::object& owner) {
      std::vector<std::string> keys;
      for (const kube::ObjectPtr& b : budgets_->byIndex(kByNamespace, std::string(kube::objectNamespace(owner)))) {
        keys.push_back(kube::objectKey(*b));
      }
      return keys;
    };
    controller_.watch(*sets_, scaled);
    controller_.watch(*deployments_, scaled);
    controller_.watch(*statefulSets_, scaled);
  }

 private:
  std::vector<std::string> budgetsOf(const json::object& pod) {
    std::vector<std::string> keys;
    auto l = kube::labels(pod);
    for (const kube::ObjectPtr& b : budgets_->byIndex(kByNamespace, std::string(kube::objectNamespace(pod)))) {
      auto sel = kube::LabelSelector::fromJson(kube::field(*b, {"spec", "selector"}));
      if (sel && sel->matches(l)) keys.push_back(kube::objectKey(*b));
    }
    return keys;
  }

  // The controller whose scale a pod counts towards: uid and replicas.
  std::pair<std::string, int64_t> scaleOf(const json::object& pod) {
    std::string ns(kube::objectNamespace(pod));
    auto ref = kube::controllerOf(pod);
    if (ref && ref->kind == "ReplicaSet") {
      if (kube::ObjectPtr rs = sets_->get(ns + "/" + ref->name); rs && kube::uid(*rs) == ref->uid) {
        if (auto owner = kube::controllerOf(*rs); owner && owner->kind == "Deployment") {
          if (kube::ObjectPtr d = deployments_->get(ns + "/" + owner->name); d && kube::uid(*d) == owner->uid) {
            return {owner->uid, kube::integer(*d, {"spec", "replicas"}, 1)};
          }
        }
        return {ref->uid, kube::integer(*rs, {"spec", "replicas"}, 1)};
      }
    }
    if (ref && ref->kind == "StatefulSet") {
      if (kube::ObjectPtr s = statefulSets_->get(ns + "/" + ref->name); s && kube::uid(*s) == ref->uid) {
        return {ref->uid, kube::integer(*s, {"spec", "replicas"}, 1)};
      }
    }
    return {std::string(kube::uid(pod)), 1};
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr pdb = budgets_->get(key);
    if (!pdb) return {};
    auto sel = kube::LabelSelector::fromJson(kube::field(*pdb, {"spec", "selector"}));
    std::vector<kube::ObjectPtr> pods;
    if (sel && !sel->isNull()) {
      for (const kube::ObjectPtr& p : pods_->byIndex(kByNamespace, std::string(kube::objectNamespace(*pdb)))) {
        if (sel->matches(kube::labels(*p)) && !podTerminal(*p)) pods.push_back(p);
      }
    }
    const json::value* minAvailable = kube::field(*pdb, {"spec", "minAvailable"});
    const json::value* maxUnavailable = kube::field(*pdb, {"spec", "maxUnavailable"});
    int64_t expected = static_cast<int64_t>(pods.size()), desired = 0;
    if (maxUnavailable || (minAvailable && minAvailable->is_string())) {
      std::map<std::string, int64_t> scales;
      for (const kube::ObjectPtr& p : pods) scales.insert(scaleOf(*p));
      expected = 0;
      for (const auto& [uid, n] : scales) expected += n;
    }
    if (maxUnavailable) desired = std::max<int64_t>(0, expected - scaledValue(maxUnavailable, expected, true));
    else if (minAvailable) desired = scaledValue(minAvailable, expected, true);

    int64_t now = unixNow(), nextExpiry = 0;
    json::object disrupted;
    if (const json::object* was = kube::child(*pdb, {"status", "disruptedPods"})) {
      for (const auto& [name, at] : *was) {
        kube::ObjectPtr p = pods_->get(std::string(kube::objectNamespace(*pdb)) + "/" + std::string(name));
        auto t = at.is_string() ? kube::parseRfc3339(at.get_string()) : std::nullopt;
        int64_t expires = t.value_or(0) + kDeletionTimeout;
        if (!p || kube::beingDeleted(*p) || expires <= now) continue;
        disrupted[name] = at;
        nextExpiry = nextExpiry ? std::min(nextExpiry, expires) : expires;
      }
    }
    int64_t healthy = 0;
    for (const kube::ObjectPtr& p : pods) {
      if (!kube::beingDeleted(*p) && podReady(*p) && !disrupted.contains(kube::objectName(*p))) ++healthy;
    }
    int64_t allowed = std::max<int64_t>(0, healthy - desired);
    if (nextExpiry) controller_.queue().addAfter(key, std::chrono::seconds(nextExpiry - now + 1));

    json::object st = kube::child(*pdb, {"status"}) ? *kube::child(*pdb, {"status"}) : json::object{};
    json::object before = st;
    st["currentHealthy"] = healthy;
    st["desiredHealthy"] = desired;
    st["expectedPods"] = expected;
    st["disruptionsAllowed"] = allowed;
    if (disrupted.empty()) st.erase("disruptedPods");
    else st["disruptedPods"] = std::move(disrupted);
    st["observedGeneration"] = kube::integer(*pdb, {"metadata", "generation"});
    if (allowed > 0) setCondition(st, "DisruptionAllowed", "True", "SufficientPods", "");
    else setCondition(st, "DisruptionAllowed", "False", "InsufficientPods", "");
    if (st == before) return {};
    json::object copy = *pdb;
    copy["status"] = std::move(st);
    auto res = ctx_.client.update(kPodDisruptionBudgets, std::move(copy), "status");
    if (!res && res.error().code() == base::ErrorCode::kConflict) {
      controller_.enqueue(key);  // an eviction spent a disruption meanwhile: recount
      return {};
    }
    if (!res && res.error().code() != base::ErrorCode::kNotFound) return res.error();
    return {};
  }

  std::shared_ptr<kube::Informer> budgets_, pods_, sets_, deployments_, statefulSets_;
};

}  // namespace

std::unique_ptr<Runnable> makeDisruption(Context& ctx) { return std::make_unique<Disruption>(ctx); }

}  // namespace trellis::controllers
