// replicaset: keeps spec.replicas pods of the template running for each
// ReplicaSet — creating with generateName "<rs>-" and a controller
// ownerReference, deleting the surplus (not yet scheduled first, then not
// ready, then the newest), adopting orphans its selector matches and
// releasing owned pods it no longer matches — and reports status
// (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
// observedGeneration). As kube-controller-manager's, it keeps
// "expectations": after creating or deleting it waits until its cache has
// seen those changes before counting again, so a lagging cache never makes
// it create twice.
#include <map>
#include <mutex>
#include <set>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kPods;
using kube::resources::kReplicaSets;
using Clock = std::chrono::steady_clock;

const base::Logger& log() {
  static base::Logger l("replicaset");
  return l;
}

bool podReady(const json::object& pod) {
  if (const json::array* conds = kube::array(pod, {"status", "conditions"})) {
    for (const json::value& c : *conds) {
      if (c.is_object() && kube::str(c.get_object(), {"type"}) == "Ready") return kube::str(c.get_object(), {"status"}) == "True";
    }
  }
  return false;
}

class ReplicaSets : public Reconciler {
 public:
  explicit ReplicaSets(Context& ctx)
      : Reconciler(ctx, "replicaset", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("replicaset-controller")),
        sets_(ctx.informers.get(kReplicaSets)),
        pods_(ctx.informers.get(kPods)) {
    indexByNamespace(*sets_);
    indexByNamespace(*pods_);
    pods_->addIndex("controller-uid", [](const json::object& p) {
      auto ref = kube::controllerOf(p);
      return ref ? std::vector<std::string>{ref->uid} : std::vector<std::string>{};
    });
    controller_.watch(*sets_);
    auto owners = [this](const json::object& pod) {
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
    };
    pods_->addHandler({.onAdd = [this, owners](const kube::ObjectPtr& p) { seen(*p, false, owners); },
                       .onUpdate = [this, owners](const kube::ObjectPtr& o, const kube::ObjectPtr& n) {
                         seen(*n, false, owners);
                         if (o != n) {
                           for (const std::string& k : owners(*o)) controller_.enqueue(k);
                         }
                       },
                       .onDelete = [this, owners](const kube::ObjectPtr& p) { seen(*p, true, owners); }});
  }

 private:
  struct Expectations {
    std::set<std::string> adds, deletes;  // pod names still to be seen
    Clock::time_point since;
  };

  template <typename Owners>
  void seen(const json::object& pod, bool deleted, const Owners& owners) {
    std::vector<std::string> keys = owners(pod);
    {
      std::lock_guard g(mu_);
      for (const std::string& k : keys) {
        auto it = expect_.find(k);
        if (it == expect_.end()) continue;
        if (deleted || kube::beingDeleted(pod)) it->second.deletes.erase(std::string(kube::objectName(pod)));
        if (!deleted) it->second.adds.erase(std::string(kube::objectName(pod)));
      }
    }
    for (const std::string& k : keys) controller_.enqueue(k);
  }

  // Whether the cache has seen what the last sync did (or 5 minutes passed,
  // as kube-controller-manager gives up waiting).
  bool satisfied(const std::string& key) {
    std::lock_guard g(mu_);
    auto it = expect_.find(key);
    if (it == expect_.end()) return true;
    if ((it->second.adds.empty() && it->second.deletes.empty()) || Clock::now() - it->second.since > std::chrono::minutes(5)) {
      expect_.erase(it);
      return true;
    }
    return false;
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr rs = sets_->get(key);
    if (!rs) {
      std::lock_guard g(mu_);
      expect_.erase(key);
      return {};
    }
    std::string ns(kube::objectNamespace(*rs));
    auto sel = kube::LabelSelector::fromJson(kube::field(*rs, {"spec", "selector"}));
    if (!sel || sel->empty()) return {};  // validation forbids it; never select everything
    std::string uid(kube::uid(*rs));
    std::vector<kube::ObjectPtr> mine;
    base::Status result;
    for (const kube::ObjectPtr& pod : pods_->byIndex(kByNamespace, ns)) {
      auto ref = kube::controllerOf(*pod);
      bool matches = sel->matches(kube::labels(*pod));
      if (ref && ref->uid == uid) {
        if (!matches && !kube::beingDeleted(*rs)) {
          if (auto st = setOwner(*pod, nullptr); !st && result) result = st;  // release
          continue;
        }
        if (!podTerminal(*pod) && !kube::beingDeleted(*pod)) mine.push_back(pod);
      } else if (!ref && matches && !kube::beingDeleted(*rs) && !kube::beingDeleted(*pod) && !podTerminal(*pod)) {
        if (auto st = setOwner(*pod, rs.get()); st) mine.push_back(pod);  // adopt
        else if (result) result = st;
      }
    }
    if (!kube::beingDeleted(*rs) && satisfied(key)) {
      int64_t want = kube::integer(*rs, {"spec", "replicas"}, 1);
      int64_t diff = want - static_cast<int64_t>(mine.size());
      if (diff > 0) {
        if (auto st = create(*rs, key, diff); !st && result) result = st;
      } else if (diff < 0) {
        if (auto st = remove(key, mine, -diff); !st && result) result = st;
      }
    }
    if (auto st = updateStatus(*rs, mine, *sel); !st && result) result = st;
    return result;
  }

  base::Status setOwner(const json::object& pod, const json::object* rs) {
    json::array refs;
    for (const kube::OwnerReference& r : kube::ownerReferences(pod)) {
      if (!r.controller) refs.push_back(kube::toJson(r));
    }
    if (rs) {
      refs.push_back(kube::toJson(kube::OwnerReference{"apps/v1", "ReplicaSet", std::string(kube::objectName(*rs)),
                                                       std::string(kube::uid(*rs)), true, true}));
    }
    json::object patch{{"metadata", json::object{{"ownerReferences", std::move(refs)},
                                                 {"resourceVersion", kube::objectResourceVersion(pod)}}}};
    auto res = ctx_.client.patch(kPods, kube::objectNamespace(pod), kube::objectName(pod), kube::PatchType::kMerge,
                                 json::serialize(patch));
    if (!res && res.error().code() != base::ErrorCode::kNotFound) return res.error();
    log().info(rs ? "adopted" : "released", {{"pod", kube::objectKey(pod)}});
    return {};
  }

  base::Status create(const json::object& rs, const std::string& key, int64_t n) {
    const json::object* tmpl = kube::child(rs, {"spec", "template"});
    if (!tmpl) return {};
    {
      std::lock_guard g(mu_);
      expect_[key] = Expectations{{}, {}, Clock::now()};
    }
    base::Status result;
    for (int64_t i = 0; i < n; ++i) {
      json::object meta;
      if (const json::object* m = kube::child(*tmpl, {"metadata"})) {
        for (const char* f : {"labels", "annotations"}) {
          if (const json::value* v = m->if_contains(f)) meta[f] = *v;
        }
      }
      meta["generateName"] = std::string(kube::objectName(rs)) + "-";
      meta["namespace"] = kube::objectNamespace(rs);
      meta["ownerReferences"] = json::array{kube::toJson(kube::OwnerReference{
          "apps/v1", "ReplicaSet", std::string(kube::objectName(rs)), std::string(kube::uid(rs)), true, true})};
      json::object pod{{"metadata", std::move(meta)}};
      if (const json::value* spec = tmpl->if_contains("spec")) pod["spec"] = *spec;
      auto res = ctx_.client.create(kPods, kube::objectNamespace(rs), std::move(pod));
      if (!res) {
        if (result) result = res.error();
        continue;
      }
      std::lock_guard g(mu_);
      // Seen already (the informer can be quicker than this answer)?
      if (!pods_->get(kube::objectKey(*res))) expect_[key].adds.insert(std::string(kube::objectName(*res)));
    }
    if (!result) events_.record(rs, "Warning", "FailedCreate", fmt::format("Error creating: {}", result.error().message()));
    else events_.record(rs, "Normal", "SuccessfulCreate", fmt::format("Created {} pod(s)", n));
    return result;
  }

  base::Status remove(const std::string& key, std::vector<kube::ObjectPtr> pods, int64_t n) {
    // Unscheduled first, then not ready, then the newest.
    std::sort(pods.begin(), pods.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
      bool sa = !kube::str(*a, {"spec", "nodeName"}).empty(), sb = !kube::str(*b, {"spec", "nodeName"}).empty();
      if (sa != sb) return !sa;
      bool ra = podReady(*a), rb = podReady(*b);
      if (ra != rb) return !ra;
      return kube::str(*a, {"metadata", "creationTimestamp"}) > kube::str(*b, {"metadata", "creationTimestamp"});
    });
    {
      std::lock_guard g(mu_);
      expect_[key] = Expectations{{}, {}, Clock::now()};
      for (int64_t i = 0; i < n; ++i) expect_[key].deletes.insert(std::string(kube::objectName(*pods[static_cast<size_t>(i)])));
    }
    base::Status result;
    for (int64_t i = 0; i < n; ++i) {
      const json::object& p = *pods[static_cast<size_t>(i)];
      auto st = ctx_.client.remove(kPods, kube::objectNamespace(p), kube::objectName(p));
      if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
      if (!st && st.error().code() == base::ErrorCode::kNotFound) {
        std::lock_guard g(mu_);
        expect_[key].deletes.erase(std::string(kube::objectName(p)));
      }
    }
    return result;
  }

  base::Status updateStatus(const json::object& rs, const std::vector<kube::ObjectPtr>& mine, const kube::LabelSelector&) {
    int64_t ready = 0, labelled = 0;
    auto tmplLabels = kube::child(rs, {"spec", "template", "metadata", "labels"});
    for (const kube::ObjectPtr& p : mine) {
      ready += podReady(*p);
      bool all = true;
      if (tmplLabels) {
        auto l = kube::labels(*p);
        for (const auto& [k, v] : *tmplLabels) all = all && v.is_string() && l.count(std::string(k)) && l[std::string(k)] == v.get_string();
      }
      labelled += all;
    }
    json::object st{{"replicas", static_cast<int64_t>(mine.size())},
                    {"fullyLabeledReplicas", labelled},
                    {"readyReplicas", ready},
                    {"availableReplicas", ready},
                    {"observedGeneration", kube::integer(rs, {"metadata", "generation"}, 0)}};
    if (const json::value* have = kube::field(rs, {"status"})) {
      json::object cmp = have->is_object() ? have->get_object() : json::object();
      cmp.erase("conditions");
      if (json::value(cmp) == json::value(st)) return {};
    }
    json::object copy = rs;
    json::object& s = kube::ensureObject(copy, {"status"});
    for (auto& [k, v] : st) s[k] = v;
    auto res = ctx_.client.update(kReplicaSets, std::move(copy), "status");
    if (!res && res.error().code() != base::ErrorCode::kNotFound && res.error().code() != base::ErrorCode::kConflict) {
      return res.error();
    }
    return {};
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> sets_, pods_;
  std::mutex mu_;
  std::map<std::string, Expectations> expect_;
};

}  // namespace

std::unique_ptr<Runnable> makeReplicaSets(Context& ctx) { return std::make_unique<ReplicaSets>(ctx); }

}  // namespace trellis::controllers
