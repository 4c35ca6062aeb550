// deployment: rolls each Deployment's pod template out through ReplicaSets
// as kube-controller-manager does. The ReplicaSet whose template equals the
// Deployment's (ignoring its pod-template-hash label) is the new one; it is
// made as "<deployment>-<hash>" with that label on its template and
// selector, and the revision annotation one above every older ReplicaSet's
// (an undo reuses the old ReplicaSet and bumps its revision). RollingUpdate
// scales the new one up within maxSurge and the old ones down within
// maxUnavailable (percentages rounded up for surge, down for
// unavailability; both zero means one unavailable); Recreate scales the old
// ones to zero and waits for their pods to go before scaling the new one
// up. A paused Deployment only scales. Old ReplicaSets beyond
// revisionHistoryLimit are deleted once the rollout completes. Status has
// what `kubectl rollout status` reads, with the Available and Progressing
// conditions (ProgressDeadlineExceeded after progressDeadlineSeconds
// without progress).
#include <algorithm>
#include <cmath>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kDeployments;
using kube::resources::kReplicaSets;

constexpr std::string_view kRevision = "deployment.kubernetes.io/revision";
constexpr std::string_view kRevisionHistory = "deployment.kubernetes.io/revision-history";
constexpr std::string_view kDesired = "deployment.kubernetes.io/desired-replicas";
constexpr std::string_view kMaxReplicas = "deployment.kubernetes.io/max-replicas";
constexpr std::string_view kHashLabel = "pod-template-hash";

const base::Logger& log() {
  static base::Logger l("deployment");
  return l;
}

int64_t revisionOf(const json::object& rs) {
  std::string_view r = kube::annotation(rs, kRevision);
  return r.empty() ? 0 : std::atoll(std::string(r).c_str());
}

// Null members dropped, recursively: a template that went through a client's
// struct ("creationTimestamp": null) equals one that did not.
void dropNulls(json::value& v) {
  if (v.is_object()) {
    json::object& o = v.get_object();
    for (auto it = o.begin(); it != o.end();) {
      if (it->value().is_null()) {
        it = o.erase(it);
      } else {
        dropNulls(it->value());
        ++it;
      }
    }
  } else if (v.is_array()) {
    for (json::value& e : v.get_array()) dropNulls(e);
  }
}

// A template as the Deployment's and its ReplicaSets' compare.
json::value withoutHash(const json::object* tmpl) {
  if (!tmpl) return json::object{};
  json::value copy = *tmpl;
  dropNulls(copy);
  json::object& t = copy.get_object();
  if (json::value* m = t.if_contains("metadata"); m && m->is_object()) {
    if (json::value* l = m->get_object().if_contains("labels"); l && l->is_object()) {
      l->get_object().erase(kHashLabel);
      if (l->get_object().empty()) m->get_object().erase("labels");
    }
    if (m->get_object().empty()) t.erase("metadata");
  }
  return copy;
}

int64_t specReplicas(const json::object& rs) { return kube::integer(rs, {"spec", "replicas"}, 1); }

// One ReplicaSet as this sync sees it: the scale it was given now, and its status.
struct Set {
  kube::ObjectPtr obj;
  int64_t replicas;
  int64_t available() const { return kube::integer(*obj, {"status", "availableReplicas"}); }
};

class Deployments : public Reconciler {
 public:
  explicit Deployments(Context& ctx)
      : Reconciler(ctx, "deployment", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("deployment-controller")),
        deployments_(ctx.informers.get(kDeployments)),
        sets_(ctx.informers.get(kReplicaSets)) {
    indexByNamespace(*deployments_);
    indexByNamespace(*sets_);
    controller_.watch(*deployments_);
    controller_.watch(*sets_, [this](const json::object& rs) { return owners(rs); });
  }

 private:
  std::vector<std::string> owners(const json::object& rs) {
    if (auto ref = kube::controllerOf(rs)) {
      if (ref->kind != "Deployment") return {};
      return {std::string(kube::objectNamespace(rs)) + "/" + ref->name};
    }
    std::vector<std::string> keys;
    auto l = kube::labels(rs);
    for (const kube::ObjectPtr& d : deployments_->byIndex(kByNamespace, std::string(kube::objectNamespace(rs)))) {
      auto sel = kube::LabelSelector::fromJson(kube::field(*d, {"spec", "selector"}));
      if (sel && !sel->empty() && sel->matches(l)) keys.push_back(kube::objectKey(*d));
    }
    return keys;
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr d = deployments_->get(key);
    if (!d || kube::beingDeleted(*d)) return {};
    auto sel = kube::LabelSelector::fromJson(kube::field(*d, {"spec", "selector"}));
    if (!sel || sel->empty()) return {};  // validation forbids it; never select everything
    std::string ns(kube::objectNamespace(*d));
    base::Status result;
    auto ref = controllerRef("apps/v1", "Deployment", *d);
    auto mine = claim(ctx_.client, kReplicaSets, *d, ref, *sel, sets_->byIndex(kByNamespace, ns), result,
                      [](const json::object& rs) { return kube::beingDeleted(rs); });
    std::sort(mine.begin(), mine.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
      auto ta = kube::str(*a, {"metadata", "creationTimestamp"}), tb = kube::str(*b, {"metadata", "creationTimestamp"});
      return ta != tb ? ta < tb : kube::objectName(*a) < kube::objectName(*b);
    });
    json::value want = withoutHash(kube::child(*d, {"spec", "template"}));
    std::optional<Set> fresh;
    std::vector<Set> old;
    int64_t maxOld = 0;
    for (const kube::ObjectPtr& rs : mine) {
      if (!fresh && withoutHash(kube::child(*rs, {"spec", "template"})) == want) {
        fresh = Set{rs, specReplicas(*rs)};
      } else {
        old.push_back(Set{rs, specReplicas(*rs)});
        maxOld = std::max(maxOld, revisionOf(*rs));
      }
    }
    int64_t replicas = kube::integer(*d, {"spec", "replicas"}, 1);
    bool paused = kube::boolean(*d, {"spec", "paused"});
    bool recreate = kube::str(*d, {"spec", "strategy", "type"}) == "Recreate";
    int64_t surge = recreate ? 0 : scaledValue(kube::field(*d, {"spec", "strategy", "rollingUpdate", "maxSurge"}), replicas, true);
    int64_t unavailable =
        recreate ? 0 : scaledValue(kube::field(*d, {"spec", "strategy", "rollingUpdate", "maxUnavailable"}), replicas, false);
    if (!recreate && surge == 0 && unavailable == 0) unavailable = 1;
    if (unavailable > replicas) unavailable = replicas;
    std::string createdName;

    auto keep = [&](base::Status st) {
      if (!st && result) result = st;
    };
    // A scaling event: an active ReplicaSet was sized for another spec.replicas.
    bool scaling = false;
    for (const Set& s : old) scaling = scaling || (s.replicas > 0 && kube::annotation(*s.obj, kDesired) != std::to_string(replicas));
    if (fresh && fresh->replicas > 0) scaling = scaling || kube::annotation(*fresh->obj, kDesired) != std::to_string(replicas);
    if (paused || (scaling && fresh)) {
      keep(proportional(*d, fresh, old, replicas, surge, recreate));  // only scale, no rollout step
    } else if (recreate) {
      for (Set& s : old) {
        if (s.replicas != 0) keep(scale(*d, s, 0, surge));
      }
      bool oldGone = std::all_of(old.begin(), old.end(), [](const Set& s) {
        return s.replicas == 0 && kube::integer(*s.obj, {"status", "replicas"}) == 0;
      });
      if (oldGone) {
        if (!fresh) keep(createNew(*d, key, replicas, surge, maxOld, fresh, createdName));
        else if (fresh->replicas != replicas) keep(scale(*d, *fresh, replicas, surge));
      }
    } else {
      // Pods there may be: a ReplicaSet scaled down may not have deleted its
      // pods yet (its status still counts them), so surge is judged by the
      // larger of spec and status — maxSurge bounds pods, not specs.
      auto pods = [](const Set& s) { return std::max(s.replicas, kube::integer(*s.obj, {"status", "replicas"})); };
      int64_t current = fresh ? pods(*fresh) : 0;
      for (const Set& s : old) current += pods(s);
      int64_t newReplicas = fresh ? fresh->replicas : 0;
      if (newReplicas > replicas) {
        newReplicas = replicas;
      } else if (newReplicas < replicas && current < replicas + surge) {
        newReplicas += std::min(replicas + surge - current, replicas - newReplicas);
      }
      if (!fresh) keep(createNew(*d, key, newReplicas, surge, maxOld, fresh, createdName));
      else if (newReplicas != fresh->replicas) keep(scale(*d, *fresh, newReplicas, surge));
      if (fresh) keep(scaleDownOld(*d, *fresh, old, replicas, unavailable, surge));
    }
    if (fresh) keep(adoptRevision(*d, *fresh, maxOld));
    if (auto st = updateStatus(*d, key, fresh, old, replicas, unavailable, paused, createdName); !st) keep(st);
    return result;
  }

  // kube's proportional scaling: a changed spec.replicas is spread over the
  // active ReplicaSets in proportion to their sizes (the largest takes the
  // rest); with one active (or none), it alone follows.
  base::Status proportional(const json::object& d, std::optional<Set>& fresh, std::vector<Set>& old, int64_t replicas,
                            int64_t surge, bool recreate) {
    std::vector<Set*> active;
    if (fresh && fresh->replicas > 0) active.push_back(&*fresh);
    for (Set& s : old) {
      if (s.replicas > 0) active.push_back(&s);
    }
    base::Status result;
    auto keep = [&](base::Status st) {
      if (!st && result) result = st;
    };
    if (active.size() <= 1) {
      Set* only = !active.empty() ? active[0] : fresh ? &*fresh : !old.empty() ? &old.back() : nullptr;
      if (only) keep(scale(d, *only, replicas, surge));
      return result;
    }
    if (fresh && fresh->replicas == replicas && fresh->available() >= replicas) {  // saturated: the old ones go
      for (Set& s : old) {
        if (s.replicas) keep(scale(d, s, 0, surge));
      }
      keep(scale(d, *fresh, replicas, surge));
      return result;
    }
    if (recreate) return result;
    int64_t total = 0;
    for (Set* s : active) total += s->replicas;
    int64_t toAdd = replicas + surge - total, added = 0;
    if (toAdd == 0) return result;
    std::stable_sort(active.begin(), active.end(), [&](Set* a, Set* b) {
      if (a->replicas != b->replicas) return a->replicas > b->replicas;
      auto ta = kube::str(*a->obj, {"metadata", "creationTimestamp"}), tb = kube::str(*b->obj, {"metadata", "creationTimestamp"});
      return toAdd > 0 ? ta > tb : ta < tb;  // growing: newer first; shrinking: older first
    });
    std::vector<int64_t> sizes;
    for (Set* s : active) {
      int64_t proportion = 0;
      if (added != toAdd) {
        int64_t fraction = -s->replicas;
        if (replicas > 0) {
          std::string_view annotated = kube::annotation(*s->obj, kMaxReplicas);
          int64_t max = annotated.empty() ? kube::integer(d, {"status", "replicas"}) : std::atoll(std::string(annotated).c_str());
          fraction = max > 0 ? static_cast<int64_t>(std::llround(static_cast<double>(s->replicas * (replicas + surge)) /
                                                                 static_cast<double>(max))) - s->replicas
                             : 0;
        }
        proportion = toAdd > 0 ? std::min(fraction, toAdd - added) : std::max(fraction, toAdd - added);
      }
      sizes.push_back(s->replicas + proportion);
      added += proportion;
    }
    sizes[0] = std::max<int64_t>(0, sizes[0] + toAdd - added);  // the leftover to the largest
    for (size_t i = 0; i < active.size(); ++i) keep(scale(d, *active[i], sizes[i], surge));
    return result;
  }

  static int64_t activeOld(const std::vector<Set>& old) {
    int64_t n = 0;
    for (const Set& s : old) n += s.replicas;
    return n;
  }

  // RollingUpdate's scale-down: first old pods that are not available (they
  // cost no availability), then available ones while more than
  // replicas - maxUnavailable stay available; oldest ReplicaSets first.
  base::Status scaleDownOld(const json::object& d, const Set& fresh, std::vector<Set>& old, int64_t replicas,
                            int64_t unavailable, int64_t surge) {
    if (activeOld(old) == 0) return {};
    base::Status result;
    int64_t all = fresh.replicas + activeOld(old);
    int64_t minAvailable = replicas - unavailable;
    int64_t newUnavailable = fresh.replicas - fresh.available();
    int64_t maxScaledDown = all - minAvailable - newUnavailable;
    if (maxScaledDown <= 0) return {};
    int64_t cleaned = 0;
    for (Set& s : old) {
      if (cleaned >= maxScaledDown) break;
      int64_t unhealthy = s.replicas - std::min(s.available(), s.replicas);
      if (unhealthy <= 0) continue;
      int64_t n = std::min(maxScaledDown - cleaned, unhealthy);
      cleaned += n;
      if (auto st = scale(d, s, s.replicas - n, surge); !st && result) result = st;
    }
    int64_t available = fresh.available();
    for (const Set& s : old) available += std::min(s.available(), s.replicas);
    if (available <= minAvailable) return result;
    int64_t total = available - minAvailable, done = 0;
    for (Set& s : old) {
      if (done >= total) break;
      if (s.replicas == 0) continue;
      int64_t n = std::min(s.replicas, total - done);
      done += n;
      if (auto st = scale(d, s, s.replicas - n, surge); !st && result) result = st;
    }
    return result;
  }

  // Sizes a ReplicaSet (and stamps it with the Deployment's replicas and
  // surge); nothing to write when it is so already.
  base::Status scale(const json::object& d, Set& s, int64_t to, int64_t surge) {
    int64_t from = s.replicas;
    int64_t replicas = kube::integer(d, {"spec", "replicas"}, 1);
    if (from == to && kube::annotation(*s.obj, kDesired) == std::to_string(replicas) &&
        kube::annotation(*s.obj, kMaxReplicas) == std::to_string(replicas + surge)) {
      return {};
    }
    json::object patch{{"metadata", json::object{{"annotations", json::object{{kDesired, std::to_string(replicas)},
                                                                              {kMaxReplicas, std::to_string(replicas + surge)}}}}},
                       {"spec", json::object{{"replicas", to}}}};
    auto res = ctx_.client.patch(kReplicaSets, kube::objectNamespace(*s.obj), kube::objectName(*s.obj),
                                 kube::PatchType::kMerge, json::serialize(patch));
    if (!res) return res.error();
    s.replicas = to;
    if (from != to) {
      events_.record(d, "Normal", "ScalingReplicaSet",
                     fmt::format("Scaled {} replica set {} from {} to {}", to > from ? "up" : "down",
                                 kube::objectName(*s.obj), from, to));
    }
    return {};
  }

  // Annotations a ReplicaSet carries over from its Deployment.
  static json::object carriedAnnotations(const json::object& d) {
    json::object out;
    if (const json::object* a = kube::child(d, {"metadata", "annotations"})) {
      for (const auto& [k, v] : *a) {
        std::string_view key = k;
        if (key == "kubectl.kubernetes.io/last-applied-configuration" || key == kRevision || key == kRevisionHistory ||
            key == kDesired || key == kMaxReplicas) {
          continue;
        }
        out[key] = v;
      }
    }
    return out;
  }

  base::Status createNew(const json::object& d, const std::string& key, int64_t replicas, int64_t surge, int64_t maxOld,
                         std::optional<Set>& fresh, std::string& createdName) {
    const json::object* tmpl = kube::child(d, {"spec", "template"});
    if (!tmpl) return {};
    int64_t collisions = kube::integer(d, {"status", "collisionCount"});
    std::string hash = templateHash(withoutHash(tmpl), collisions);
    std::string name = std::string(kube::objectName(d)) + "-" + hash;
    json::object t = *tmpl;
    kube::ensureObject(t, {"metadata", "labels"})[kHashLabel] = hash;
    json::object selector = kube::child(d, {"spec", "selector"}) ? *kube::child(d, {"spec", "selector"}) : json::object{};
    kube::ensureObject(selector, {"matchLabels"})[kHashLabel] = hash;
    json::object annotations = carriedAnnotations(d);
    annotations[kRevision] = std::to_string(maxOld + 1);
    annotations[kDesired] = std::to_string(kube::integer(d, {"spec", "replicas"}, 1));
    annotations[kMaxReplicas] = std::to_string(kube::integer(d, {"spec", "replicas"}, 1) + surge);
    json::object labels = *kube::child(t, {"metadata", "labels"});
    json::object spec{{"replicas", replicas}, {"selector", std::move(selector)}, {"template", std::move(t)}};
    if (int64_t mrs = kube::integer(d, {"spec", "minReadySeconds"})) spec["minReadySeconds"] = mrs;
    json::object rs{{"apiVersion", "apps/v1"},
                    {"kind", "ReplicaSet"},
                    {"metadata", json::object{{"name", name},
                                              {"namespace", kube::objectNamespace(d)},
                                              {"labels", std::move(labels)},
                                              {"annotations", std::move(annotations)},
                                              {"ownerReferences", json::array{kube::toJson(controllerRef("apps/v1", "Deployment", d))}}}},
                    {"spec", std::move(spec)}};
    auto res = ctx_.client.create(kReplicaSets, kube::objectNamespace(d), std::move(rs));
    if (!res && res.error().code() == base::ErrorCode::kAlreadyExists) {
      // Ours from a sync whose result the cache has not shown yet: the next
      // sync finds it. Another's template under the same name: collide.
      auto existing = ctx_.client.get(kReplicaSets, kube::objectNamespace(d), name);
      if (existing && withoutHash(kube::child(*existing, {"spec", "template"})) == withoutHash(tmpl)) return {};
      json::object copy = d;
      kube::ensureObject(copy, {"status"})["collisionCount"] = collisions + 1;
      auto st = ctx_.client.update(kDeployments, std::move(copy), "status");
      if (!st) return st.error();
      return base::Error(base::ErrorCode::kAlreadyExists, fmt::format("hash collision for ReplicaSet {}", name));
    }
    if (!res) return res.error();
    createdName = name;
    fresh = Set{std::make_shared<const json::object>(*res), replicas};
    events_.record(d, "Normal", "ScalingReplicaSet", fmt::format("Scaled up replica set {} from 0 to {}", name, replicas));
    log().info("created replica set", {{"deployment", key}, {"replicaset", name}, {"revision", std::to_string(maxOld + 1)}});
    return {};
  }

  // The new ReplicaSet's revision is above every old one's (a rollback made
  // an old one new again), and it carries the Deployment's annotations.
  base::Status adoptRevision(const json::object& d, const Set& fresh, int64_t maxOld) {
    int64_t rev = revisionOf(*fresh.obj);
    json::object annotations;
    if (rev <= maxOld) {
      annotations[kRevision] = std::to_string(maxOld + 1);
      std::string history(kube::annotation(*fresh.obj, kRevisionHistory));
      if (rev > 0) history += (history.empty() ? "" : ",") + std::to_string(rev);
      if (!history.empty()) annotations[kRevisionHistory] = history;
    }
    for (const auto& [k, v] : carriedAnnotations(d)) {
      if (v.is_string() && kube::annotation(*fresh.obj, k) != v.get_string()) annotations[k] = v;
    }
    base::Status result;
    if (!annotations.empty()) {
      json::object patch{{"metadata", json::object{{"annotations", std::move(annotations)}}}};
      auto res = ctx_.client.patch(kReplicaSets, kube::objectNamespace(*fresh.obj), kube::objectName(*fresh.obj),
                                   kube::PatchType::kMerge, json::serialize(patch));
      if (!res) result = res.error();
    }
    // The Deployment names its current revision too (kubectl rollout history shows it).
    std::string want = std::to_string(rev <= maxOld ? maxOld + 1 : rev);
    if (kube::annotation(d, kRevision) != want) {
      json::object patch{{"metadata", json::object{{"annotations", json::object{{kRevision, want}}}}}};
      auto res = ctx_.client.patch(kDeployments, kube::objectNamespace(d), kube::objectName(d), kube::PatchType::kMerge,
                                   json::serialize(patch));
      if (!res && result) result = res.error();
    }
    return result;
  }

  base::Status cleanup(const json::object& d, const std::vector<Set>& old) {
    int64_t limit = kube::integer(d, {"spec", "revisionHistoryLimit"}, 10);
    std::vector<const Set*> idle;
    for (const Set& s : old) {
      if (s.replicas == 0 && kube::integer(*s.obj, {"status", "replicas"}) == 0 && !kube::beingDeleted(*s.obj)) idle.push_back(&s);
    }
    if (static_cast<int64_t>(idle.size()) <= limit) return {};
    std::sort(idle.begin(), idle.end(), [](const Set* a, const Set* b) { return revisionOf(*a->obj) < revisionOf(*b->obj); });
    base::Status result;
    for (size_t i = 0; i < idle.size() - static_cast<size_t>(limit); ++i) {
      auto st = ctx_.client.remove(kReplicaSets, kube::objectNamespace(*idle[i]->obj), kube::objectName(*idle[i]->obj));
      if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
    }
    return result;
  }

  base::Status updateStatus(const json::object& d, const std::string& key, const std::optional<Set>& fresh,
                            const std::vector<Set>& old, int64_t replicas, int64_t unavailable, bool paused,
                            const std::string& createdName) {
    int64_t total = 0, ready = 0, available = 0, specTotal = 0;
    auto add = [&](const Set& s) {
      total += kube::integer(*s.obj, {"status", "replicas"});
      ready += kube::integer(*s.obj, {"status", "readyReplicas"});
      available += kube::integer(*s.obj, {"status", "availableReplicas"});
      specTotal += s.replicas;
    };
    for (const Set& s : old) add(s);
    if (fresh) add(*fresh);
    int64_t updated = fresh ? kube::integer(*fresh->obj, {"status", "replicas"}) : 0;
    const json::object* was = kube::child(d, {"status"});
    json::object st = was ? *was : json::object{};
    json::object before = st;
    st["observedGeneration"] = kube::integer(d, {"metadata", "generation"});
    st["replicas"] = total;
    st["updatedReplicas"] = updated;
    st["readyReplicas"] = ready;
    st["availableReplicas"] = available;
    st["unavailableReplicas"] = std::max<int64_t>(0, specTotal - available);
    for (const char* f : {"replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"}) {
      if (st[f] == 0) st.erase(f);  // omitted when zero, as Go's JSON does
    }
    if (available >= replicas - unavailable) {
      setCondition(st, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", true);
    } else {
      setCondition(st, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", true);
    }
    keepUpdateTime(st, before, "Available");
    std::string rsName = fresh ? std::string(kube::objectName(*fresh->obj)) : "";
    const json::object* progressing = condition(d, "Progressing");
    std::string reason = progressing ? std::string(kube::str(*progressing, {"reason"})) : "";
    const json::value* deadline = kube::field(d, {"spec", "progressDeadlineSeconds"});
    bool complete = fresh && updated == replicas && total == replicas && available == replicas &&
                    specReplicas(*fresh->obj) == replicas && activeOld(old) == 0;
    bool requeue = false;
    if (paused) {
      if (reason != "DeploymentPaused") setCondition(st, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", true);
    } else if (deadline && deadline->is_int64()) {
      auto getOld = [&](const char* f) { return was ? kube::integer(*was, {f}) : 0; };
      bool progressed = updated > getOld("updatedReplicas") || (total - updated) < (getOld("replicas") - getOld("updatedReplicas")) ||
                        ready > getOld("readyReplicas") || available > getOld("availableReplicas");
      if (!createdName.empty()) {
        setCondition(st, "Progressing", "True", "NewReplicaSetCreated", fmt::format("Created new replica set \"{}\"", createdName), true);
        requeue = true;
      } else if (reason == "DeploymentPaused") {
        setCondition(st, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", true);
        requeue = true;
      } else if (complete) {
        if (reason != "NewReplicaSetAvailable") {
          setCondition(st, "Progressing", "True", "NewReplicaSetAvailable",
                       fmt::format("ReplicaSet \"{}\" has successfully progressed.", rsName), true);
        }
      } else if (progressed || !progressing) {
        setCondition(st, "Progressing", "True", progressing ? "ReplicaSetUpdated" : "FoundNewReplicaSet",
                     progressing ? fmt::format("ReplicaSet \"{}\" is progressing.", rsName)
                                 : fmt::format("Found new replica set \"{}\"", rsName),
                     true);
        requeue = true;
      } else if (reason != "ProgressDeadlineExceeded" && reason != "NewReplicaSetAvailable") {
        auto since = kube::parseRfc3339(std::string(kube::str(*progressing, {"lastUpdateTime"})));
        int64_t left = since ? *since + deadline->get_int64() - unixNow() : 0;
        if (left < 0) {
          setCondition(st, "Progressing", "False", "ProgressDeadlineExceeded",
                       fmt::format("ReplicaSet \"{}\" has timed out progressing.", rsName), true);
          events_.record(d, "Warning", "ProgressDeadlineExceeded", fmt::format("ReplicaSet \"{}\" has timed out progressing.", rsName));
        } else {
          controller_.queue().addAfter(key, std::chrono::seconds(left + 1));
        }
      } else if (reason == "NewReplicaSetAvailable") {
        // A new change (scale, pods lost) after completion: progressing again.
        setCondition(st, "Progressing", "True", "ReplicaSetUpdated", fmt::format("ReplicaSet \"{}\" is progressing.", rsName), true);
        requeue = true;
      }
    }
    if (requeue && deadline && deadline->is_int64()) controller_.queue().addAfter(key, std::chrono::seconds(deadline->get_int64() + 1));
    base::Status result;
    if (complete && !paused) result = cleanup(d, old);
    if (st == before) return result;
    json::object copy = d;
    copy["status"] = std::move(st);
    auto res = ctx_.client.update(kDeployments, std::move(copy), "status");
    if (!res && res.error().code() == base::ErrorCode::kConflict) {
      controller_.enqueue(key);
    } else if (!res && res.error().code() != base::ErrorCode::kNotFound) {
      return res.error();
    }
    return result;
  }

  // setCondition stamps lastUpdateTime; a condition whose status, reason and
  // message did not change keeps the one it had (no write for nothing).
  static void keepUpdateTime(json::object& st, const json::object& before, std::string_view type) {
    auto find = [&](json::object& s) -> json::object* {
      json::value* list = s.if_contains("conditions");
      if (!list || !list->is_array()) return nullptr;
      for (json::value& c : list->get_array()) {
        if (c.is_object() && kube::str(c.get_object(), {"type"}) == type) return &c.get_object();
      }
      return nullptr;
    };
    json::object b = before;
    json::object* now = find(st);
    json::object* then = find(b);
    if (!now || !then) return;
    if (kube::str(*now, {"status"}) == kube::str(*then, {"status"}) && kube::str(*now, {"reason"}) == kube::str(*then, {"reason"}) &&
        kube::str(*now, {"message"}) == kube::str(*then, {"message"})) {
      *now = *then;
    }
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> deployments_, sets_;
};

}  // namespace

std::unique_ptr<Runnable> makeDeployments(Context& ctx) { return std::make_unique<Deployments>(ctx); }

}  // namespace trellis::controllers
