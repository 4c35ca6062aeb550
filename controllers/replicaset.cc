// replicaset: keeps spec.replicas pods of the template running for each
// ReplicaSet — creating with generateName "<rs>-" and a controller
// ownerReference in slow-start batches (1, 2, 4, ...), deleting the surplus
// in kube-controller-manager's order (unscheduled, pending, not ready,
// ready for less time, more restarts, newest first), adopting orphans its
// selector matches and releasing owned pods it no longer matches — and
// reports status (replicas, fullyLabeledReplicas, readyReplicas,
// availableReplicas after minReadySeconds, observedGeneration, the
// ReplicaFailure condition when pods cannot be created). Expectations keep
// a lagging cache from making it create or delete twice.
#include <boost/json/serialize.hpp>

#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kPods;
using kube::resources::kReplicaSets;

class ReplicaSets : public Reconciler {
 public:
  explicit ReplicaSets(Context& ctx)
      : Reconciler(ctx, "replicaset", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("replicaset-controller")),
        sets_(ctx.informers.get(kReplicaSets)),
        pods_(ctx.informers.get(kPods)) {
    indexByNamespace(*sets_);
    indexByNamespace(*pods_);
    controller_.watch(*sets_);
    pods_->addHandler({.onAdd = [this](const kube::ObjectPtr& p) { seen(*p, false); },
                       .onUpdate = [this](const kube::ObjectPtr& o, const kube::ObjectPtr& n) {
                         seen(*n, kube::beingDeleted(*n));
                         if (o != n) {
                           for (const std::string& k : owners(*o)) controller_.enqueue(k);
                         }
                       },
                       .onDelete = [this](const kube::ObjectPtr& p) { seen(*p, true); }});
  }

 private:
  // The ReplicaSets a pod concerns: its controller, or (an orphan) every
  // ReplicaSet whose selector matches it.
  std::vector<std::string> owners(const json::object& pod) {
    std::vector<std::string> keys;
    if (auto ref = kube::controllerOf(pod)) {
      if (ref->kind == "ReplicaSet") keys.push_back(std::string(kube::objectNamespace(pod)) + "/" + ref->name);
      return keys;
    }
    auto l = kube::labels(pod);
    for (const kube::ObjectPtr& rs : sets_->byIndex(kByNamespace, std::string(kube::objectNamespace(pod)))) {
      auto sel = kube::LabelSelector::fromJson(kube::field(*rs, {"spec", "selector"}));
      if (sel && sel->matches(l)) keys.push_back(kube::objectKey(*rs));
    }
    return keys;
  }

  void seen(const json::object& pod, bool deleted) {
    for (const std::string& k : owners(pod)) {
      expectations_.observed(k, std::string(kube::objectName(pod)), deleted);
      controller_.enqueue(k);
    }
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr rs = sets_->get(key);
    if (!rs) {
      expectations_.forget(key);
      return {};
    }
    std::string ns(kube::objectNamespace(*rs));
    auto sel = kube::LabelSelector::fromJson(kube::field(*rs, {"spec", "selector"}));
    if (!sel || sel->empty()) return {};  // validation forbids it; never select everything
    base::Status result;
    auto ref = controllerRef("apps/v1", "ReplicaSet", *rs);
    std::vector<kube::ObjectPtr> mine = claim(ctx_.client, kPods, *rs, ref, *sel, pods_->byIndex(kByNamespace, ns), result,
                                              [](const json::object& p) { return !podActive(p); });
    std::string failure;
    if (!kube::beingDeleted(*rs) && expectations_.satisfied(key)) {
      int64_t want = kube::integer(*rs, {"spec", "replicas"}, 1);
      int64_t diff = want - static_cast<int64_t>(mine.size());
      if (diff > 0) {
        if (auto st = create(*rs, key, std::min<int64_t>(diff, 500)); !st) {
          failure = st.error().message();
          if (result) result = st;
        }
      } else if (diff < 0) {
        if (auto st = remove(key, mine, -diff); !st && result) result = st;
      }
    }
    if (auto st = updateStatus(*rs, key, mine, failure); !st && result) result = st;
    return result;
  }

  base::Status create(const json::object& rs, const std::string& key, int64_t n) {
    const json::object* tmpl = kube::child(rs, {"spec", "template"});
    if (!tmpl) return {};
    expectations_.start(key);
    std::string ns(kube::objectNamespace(rs));
    auto ref = controllerRef("apps/v1", "ReplicaSet", rs);
    std::string prefix = std::string(kube::objectName(rs)) + "-";
    auto made = slowStartCreate(
        ctx_.client, kPods, ns, static_cast<int>(n), [&](int) { return podFromTemplate(*tmpl, ns, prefix, ref); },
        [&](const json::object& pod) {
          std::string podKey = kube::objectKey(pod);
          expectations_.expectAdd(key, std::string(kube::objectName(pod)), [&] { return pods_->get(podKey) != nullptr; });
        });
    if (made.created) events_.record(rs, "Normal", "SuccessfulCreate", fmt::format("Created {} pod(s)", made.created));
    if (!made.error) {
      events_.record(rs, "Warning", "FailedCreate", fmt::format("Error creating: {}", made.error.error().message()));
    }
    return made.error;
  }

  base::Status remove(const std::string& key, std::vector<kube::ObjectPtr> pods, int64_t n) {
    sortForDeletion(pods);
    expectations_.start(key);
    for (int64_t i = 0; i < n; ++i) expectations_.expectDelete(key, std::string(kube::objectName(*pods[static_cast<size_t>(i)])));
    base::Status result;
    for (int64_t i = 0; i < n; ++i) {
      const json::object& p = *pods[static_cast<size_t>(i)];
      auto st = ctx_.client.remove(kPods, kube::objectNamespace(p), kube::objectName(p));
      if (!st && st.error().code() == base::ErrorCode::kNotFound) {
        expectations_.observed(key, std::string(kube::objectName(p)), true);
      } else if (!st && result) {
        result = st;
      }
    }
    return result;
  }

  base::Status updateStatus(const json::object& rs, const std::string& key, const std::vector<kube::ObjectPtr>& mine,
                            const std::string& failure) {
    int64_t ready = 0, available = 0, labelled = 0, now = unixNow();
    int64_t minReady = kube::integer(rs, {"spec", "minReadySeconds"});
    bool waitForAvailability = false;
    auto tmplLabels = kube::child(rs, {"spec", "template", "metadata", "labels"});
    for (const kube::ObjectPtr& p : mine) {
      bool r = podReady(*p), a = podAvailable(*p, minReady, now);
      ready += r;
      available += a;
      waitForAvailability = waitForAvailability || (r && !a);
      bool all = true;
      if (tmplLabels) {
        auto l = kube::labels(*p);
        for (const auto& [k, v] : *tmplLabels) all = all && v.is_string() && l.count(std::string(k)) && l[std::string(k)] == v.get_string();
      }
      labelled += all;
    }
    // Pods ready but not yet for minReadySeconds: look again when they are.
    if (waitForAvailability) controller_.queue().addAfter(key, std::chrono::seconds(std::max<int64_t>(1, minReady)));
    json::object st = kube::child(rs, {"status"}) ? *kube::child(rs, {"status"}) : json::object{};
    json::object before = st;
    st["replicas"] = static_cast<int64_t>(mine.size());
    st["fullyLabeledReplicas"] = labelled;
    st["readyReplicas"] = ready;
    st["availableReplicas"] = available;
    st["observedGeneration"] = kube::integer(rs, {"metadata", "generation"}, 0);
    if (!failure.empty()) setCondition(st, "ReplicaFailure", "True", "FailedCreate", failure);
    else if (condition(rs, "ReplicaFailure")) removeCondition(st, "ReplicaFailure");
    if (st == before) return {};
    json::object copy = rs;
    copy["status"] = std::move(st);
    auto res = ctx_.client.update(kReplicaSets, std::move(copy), "status");
    if (!res && res.error().code() != base::ErrorCode::kNotFound && res.error().code() != base::ErrorCode::kConflict) {
      return res.error();
    }
    if (!res && res.error().code() == base::ErrorCode::kConflict) controller_.enqueue(key);
    return {};
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> sets_, pods_;
  Expectations expectations_;
};

}  // namespace

std::unique_ptr<Runnable> makeReplicaSets(Context& ctx) { return std::make_unique<ReplicaSets>(ctx); }

}  // namespace trellis::controllers
