// What the workload controllers (replicaset, deployment, statefulset,
// daemonset, job) share, as kube-controller-manager's controller_utils:
// pod readiness and availability, "expectations" (wait until the cache has
// seen what the last sync created or deleted, so a lagging cache never makes
// a controller act twice), ownership claims (adopt matching orphans, release
// owned objects that stop matching), pods made from a template, creation in
// slow-start batches, and the ranking that picks which pods to delete first.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/base/result.h"
#include "common/kube/client.h"
#include "common/kube/controller.h"
#include "common/kube/informer.h"
#include "common/kube/object.h"

namespace trellis::controllers {

int64_t unixNow();
// The Ready condition is True.
bool podReady(const boost::json::object& pod);
// Ready for at least minReadySeconds at `now` (unix seconds).
bool podAvailable(const boost::json::object& pod, int64_t minReadySeconds, int64_t now);
// Not terminal and not being deleted: it counts towards replicas.
bool podActive(const boost::json::object& pod);

// The condition of `type` in status.conditions, or null.
const boost::json::object* condition(const boost::json::object& obj, std::string_view type);
// Sets a condition in `status.conditions` (lastTransitionTime kept when the
// status does not change; lastUpdateTime too when `withUpdateTime`).
void setCondition(boost::json::object& status, std::string_view type, std::string_view value, std::string_view reason,
                  std::string_view message, bool withUpdateTime = false);
void removeCondition(boost::json::object& status, std::string_view type);

class Expectations {
 public:
  // A new round for `key`: what it will create and delete is added next.
  void start(const std::string& key);
  // Unless `seen()` (checked under the lock observed() takes, so an add the
  // informer reports meanwhile is never lost) says the cache has it already.
  void expectAdd(const std::string& key, const std::string& name, const std::function<bool()>& seen = {});
  void expectDelete(const std::string& key, const std::string& name);
  // What the informer saw: `name` added (or deleted).
  void observed(const std::string& key, const std::string& name, bool deleted);
  // Everything expected was seen (or 5 minutes passed, as kube gives up).
  bool satisfied(const std::string& key);
  void forget(const std::string& key);

 private:
  struct Round {
    std::set<std::string> adds, deletes;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex mu_;
  std::map<std::string, Round> rounds_;
};

// Pods whose controller is of `kind`: each add, update and delete is
// reported to `expectations` and enqueues the owner's key ("ns/name").
void observeOwnedPods(kube::Informer& pods, std::string kind, Expectations& expectations, kube::Controller& controller);

// A controller ownerReference to `owner` (apiVersion and kind given).
kube::OwnerReference controllerRef(std::string_view apiVersion, std::string_view kind, const boost::json::object& owner);

// Sets (`owner` non-null) or clears the controller ownerReference of `obj`
// with a merge patch guarded by its resourceVersion.
base::Status setControllerRef(kube::Client& client, const kube::Resource& resource, const boost::json::object& obj,
                              const kube::OwnerReference* owner);

// Of `candidates` (same namespace), the ones `owner` controls after claiming:
// orphans the selector matches are adopted, owned ones it no longer matches
// released (kube's ControllerRefManager). Terminal or deleting objects are
// neither adopted nor returned when `skip` says so.
std::vector<kube::ObjectPtr> claim(kube::Client& client, const kube::Resource& resource, const boost::json::object& owner,
                                   const kube::OwnerReference& ref, const kube::LabelSelector& selector,
                                   const std::vector<kube::ObjectPtr>& candidates, base::Status& firstError,
                                   const std::function<bool(const boost::json::object&)>& skip = {});

// A pod from a template: labels, annotations, finalizers and spec copied,
// owned by `ref`, named `name` or (when it ends with '-') generated from it.
boost::json::object podFromTemplate(const boost::json::object& tmpl, std::string_view ns, std::string_view name,
                                    const kube::OwnerReference& ref);

// Creates `count` objects with make(i) in batches of 1, 2, 4, ... (each
// batch's creates in parallel) and stops after the first batch with an error
// (kube's slowStartBatch). make() may run on several threads at once;
// `created` gets each stored object, one call at a time. Returns how many
// were created and the first error.
struct BatchResult {
  int created = 0;
  base::Status error;
};
BatchResult slowStartCreate(kube::Client& client, const kube::Resource& resource, std::string_view ns, int count,
                            const std::function<boost::json::object(int)>& make,
                            const std::function<void(const boost::json::object&)>& created);

// Sorts pods so the ones to delete first come first (kube's ActivePods
// order): unassigned, then pending/unknown before running, not ready before
// ready, ready for less time, more restarts, newer.
void sortForDeletion(std::vector<kube::ObjectPtr>& pods);

// Whether a pod (or a pod template: anything with spec.tolerations)
// tolerates the taint.
bool tolerates(const boost::json::object& pod, const boost::json::object& taint);

// A ControllerRevision of an owner's template (DaemonSet, StatefulSet), as
// kube keeps them: named "<owner>-<hash>", data the strategic merge patch
// {"spec":{"template":{..., "$patch":"replace"}}} that `kubectl rollout undo`
// applies, labels the template's plus controller-revision-hash, revision one
// above the owner's others (an old one whose data is the template again is
// bumped: a rollback).
struct Revision {
  std::string name, hash;
  int64_t number = 0;
};
base::Result<Revision> ensureRevision(kube::Client& client, kube::Informer& revisions, const boost::json::object& owner,
                                      std::string_view apiVersion, std::string_view kind);
// The owner's ControllerRevisions (by controller uid), oldest revision first.
std::vector<kube::ObjectPtr> revisionsOf(kube::Informer& revisions, const boost::json::object& owner);
// Deletes the oldest of `history` not named in `keep` beyond `limit`.
base::Status pruneRevisions(kube::Client& client, const std::vector<kube::ObjectPtr>& history,
                            const std::set<std::string>& keep, int64_t limit);

// Rounds an IntOrString (an int, or "N%" of `total`) as kube's
// GetScaledValueFromIntOrPercent does.
int64_t scaledValue(const boost::json::value* v, int64_t total, bool roundUp, int64_t otherwise = 0);

// FNV-1a of `text` as kube's pod-template-hash / controller-revision-hash
// render it (digits and consonants, no vowels).
std::string templateHash(const boost::json::value& tmpl, int64_t collisionCount = 0);

}  // namespace trellis::controllers
