// garbagecollector: ownerReferences, as kube-controller-manager's collector
// keeps them.
//  - An object all of whose owners are gone is deleted (in the background;
//    in the foreground when an owner it blocks is being deleted so); an
//    object with some owners gone loses the dangling references.
//  - An owner deleted with propagationPolicy=Foreground (finalizer
//    "foregroundDeletion") has its dependents deleted first and goes once
//    none with blockOwnerDeletion is left.
//  - An owner deleted with propagationPolicy=Orphan (finalizer "orphan")
//    has the references to it removed from its dependents, then goes.
// An owner is judged gone by the server, not the cache: a live GET must
// answer NotFound or a different uid. Owners of kinds it does not watch are
// never judged gone.
#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
namespace res = kube::resources;

constexpr const char* kForeground = "foregroundDeletion";
constexpr const char* kOrphan = "orphan";
constexpr const char* kByOwner = "owner-uid";

const base::Logger& log() {
  static base::Logger l("garbagecollector");
  return l;
}

// What it watches: every kind apiserver-lite serves that owners or
// dependents are made of.
const std::vector<const kube::Resource*>& watched() {
  static const std::vector<const kube::Resource*> all{
      &res::kPods,        &res::kServices,     &res::kEndpoints,     &res::kConfigMaps,
      &res::kSecrets,     &res::kServiceAccounts, &res::kPersistentVolumeClaims, &res::kEndpointSlices,
      &res::kIngresses,   &res::kLeases,       &res::kPersistentVolumes, &res::kVolumeAttachments,
      &res::kCSIStorageCapacities, &res::kDeployments, &res::kReplicaSets, &res::kDaemonSets,
      &res::kStatefulSets, &res::kControllerRevisions, &res::kJobs, &res::kCronJobs, &res::kPodDisruptionBudgets,
      &res::kNodes,       &res::kNamespaces};
  return all;
}

std::string groupOf(std::string_view apiVersion) {
  size_t slash = apiVersion.find('/');
  return slash == std::string_view::npos ? "" : std::string(apiVersion.substr(0, slash));
}

class GarbageCollector : public Reconciler {
 public:
  explicit GarbageCollector(Context& ctx)
      : Reconciler(ctx, "garbagecollector", [this](const std::string& key) { return reconcile(key); }) {
    for (size_t i = 0; i < watched().size(); ++i) {
      auto inf = ctx.informers.get(*watched()[i]);
      inf->addIndex(kByOwner, [](const json::object& o) {
        std::vector<std::string> uids;
        for (const kube::OwnerReference& r : kube::ownerReferences(o)) uids.push_back(r.uid);
        return uids;
      });
      auto keyOf = [i](const json::object& o) { return std::to_string(i) + "|" + kube::objectKey(o); };
      inf->addHandler({.onAdd = [this, keyOf](const kube::ObjectPtr& o) { changed(*o, keyOf); },
                       .onUpdate = [this, keyOf](const kube::ObjectPtr& old, const kube::ObjectPtr& o) {
                         if (old != o) changed(*o, keyOf);
                       },
                       .onDelete = [this](const kube::ObjectPtr& o) { gone(*o); }});
      informers_.push_back(std::move(inf));
    }
  }

 private:
  template <typename KeyOf>
  void changed(const json::object& o, const KeyOf& keyOf) {
    if (!kube::ownerReferences(o).empty() || kube::hasFinalizer(o, kForeground) || kube::hasFinalizer(o, kOrphan)) {
      controller_.enqueue(keyOf(o));
    }
  }

  // An object went: its dependents may be orphans now, and an owner waiting
  // in the foreground may be free.
  void gone(const json::object& o) {
    for (const auto& [i, d] : dependents(std::string(kube::uid(o)))) controller_.enqueue(keyFor(i, *d));
    for (const kube::OwnerReference& ref : kube::ownerReferences(o)) {
      if (kube::ObjectPtr owner = findCached(ref, kube::objectNamespace(o))) {
        controller_.enqueue(keyFor(static_cast<size_t>(indexOf(ref.apiVersion, ref.kind)), *owner));
      }
    }
  }

  // Keys name the watched resource by its place in the list (informers'
  // objects need not carry kind and apiVersion).
  static std::string keyFor(size_t i, const json::object& o) { return std::to_string(i) + "|" + kube::objectKey(o); }

  int indexOf(std::string_view apiVersion, std::string_view kind) const {
    std::string group = groupOf(apiVersion);
    for (size_t i = 0; i < watched().size(); ++i) {
      if (watched()[i]->kind == kind && watched()[i]->group == group) return static_cast<int>(i);
    }
    return -1;
  }

  std::vector<std::pair<size_t, kube::ObjectPtr>> dependents(const std::string& uid) const {
    std::vector<std::pair<size_t, kube::ObjectPtr>> out;
    for (size_t i = 0; i < informers_.size(); ++i) {
      for (kube::ObjectPtr& d : informers_[i]->byIndex(kByOwner, uid)) out.emplace_back(i, std::move(d));
    }
    return out;
  }

  kube::ObjectPtr findCached(const kube::OwnerReference& ref, std::string_view dependentNs) const {
    int i = indexOf(ref.apiVersion, ref.kind);
    if (i < 0) return nullptr;
    const kube::Resource& r = *watched()[static_cast<size_t>(i)];
    kube::ObjectPtr o = informers_[static_cast<size_t>(i)]->get(r.namespaced ? std::string(dependentNs) + "/" + ref.name : ref.name);
    return o && kube::uid(*o) == ref.uid ? o : nullptr;
  }

  // Whether the owner is gone, asking the server when the cache says so.
  base::Result<bool> ownerGone(const kube::OwnerReference& ref, std::string_view dependentNs) {
    int i = indexOf(ref.apiVersion, ref.kind);
    if (i < 0) return false;  // a kind we do not know: never judged gone
    if (findCached(ref, dependentNs)) return false;
    const kube::Resource& r = *watched()[static_cast<size_t>(i)];
    auto live = ctx_.client.get(r, r.namespaced ? dependentNs : std::string_view(), ref.name);
    if (live) return kube::uid(*live) != ref.uid;
    if (live.error().code() == base::ErrorCode::kNotFound) return true;
    return live.error();
  }

  base::Status reconcile(const std::string& key) {
    size_t bar = key.find('|');
    size_t i = std::stoul(key.substr(0, bar));
    const kube::Resource& r = *watched()[i];
    kube::ObjectPtr obj = informers_[i]->get(key.substr(bar + 1));
    if (!obj) return {};
    if (kube::beingDeleted(*obj)) {
      if (kube::hasFinalizer(*obj, kOrphan)) return orphanDependents(r, *obj);
      if (kube::hasFinalizer(*obj, kForeground)) return deleteDependentsFirst(r, *obj);
      return {};
    }
    auto refs = kube::ownerReferences(*obj);
    if (refs.empty()) return {};
    std::vector<std::string> goneUids;
    bool blockingForeground = false;
    for (const kube::OwnerReference& ref : refs) {
      auto isGone = ownerGone(ref, kube::objectNamespace(*obj));
      if (!isGone) return isGone.error();
      if (*isGone) {
        goneUids.push_back(ref.uid);
      } else if (kube::ObjectPtr owner = findCached(ref, kube::objectNamespace(*obj));
                 owner && kube::beingDeleted(*owner) && kube::hasFinalizer(*owner, kForeground)) {
        controller_.enqueue(keyFor(static_cast<size_t>(indexOf(ref.apiVersion, ref.kind)), *owner));
        blockingForeground = blockingForeground || ref.blockOwnerDeletion;
      }
    }
    if (goneUids.size() == refs.size()) {
      log().info("deleting an object whose owners are gone", {{"kind", r.kind}, {"object", kube::objectKey(*obj)}});
      return removeObject(r, *obj, blockingForeground ? "Foreground" : "Background");
    }
    if (!goneUids.empty()) return dropReferences(r, *obj, goneUids);
    return {};
  }

  base::Status removeObject(const kube::Resource& r, const json::object& obj, const std::string& policy) {
    auto st = ctx_.client.remove(r, kube::objectNamespace(obj), kube::objectName(obj),
                                 kube::DeleteOptions{.propagationPolicy = policy, .uid = std::string(kube::uid(obj))});
    if (!st && st.error().code() != base::ErrorCode::kNotFound && st.error().code() != base::ErrorCode::kConflict) return st;
    return {};
  }

  base::Status dropReferences(const kube::Resource& r, const json::object& obj, const std::vector<std::string>& uids) {
    json::array keep;
    for (const kube::OwnerReference& ref : kube::ownerReferences(obj)) {
      if (std::find(uids.begin(), uids.end(), ref.uid) == uids.end()) keep.push_back(kube::toJson(ref));
    }
    json::object meta{{"ownerReferences", std::move(keep)}, {"resourceVersion", kube::objectResourceVersion(obj)}};
    auto res = ctx_.client.patch(r, kube::objectNamespace(obj), kube::objectName(obj), kube::PatchType::kMerge,
                                 json::serialize(json::object{{"metadata", std::move(meta)}}));
    if (!res && res.error().code() != base::ErrorCode::kNotFound) return res.error();
    return {};
  }

  base::Status removeFinalizer(const kube::Resource& r, const json::object& obj, const char* finalizer) {
    return setFinalizer(ctx_.client, r, obj, finalizer, false);
  }

  base::Status orphanDependents(const kube::Resource& r, const json::object& owner) {
    std::string uid(kube::uid(owner));
    for (const auto& [i, d] : dependents(uid)) {
      if (auto st = dropReferences(*watched()[i], *d, {uid}); !st) return st;
    }
    // The cache may lack a dependent just made: the server's list decides.
    for (const kube::Resource* dr : watched()) {
      auto live = ctx_.client.list(*dr, dr->namespaced ? kube::objectNamespace(owner) : std::string_view());
      if (!live) continue;
      for (const json::object& d : live->items) {
        for (const kube::OwnerReference& ref : kube::ownerReferences(d)) {
          if (ref.uid == uid) return base::makeError(base::ErrorCode::kUnavailable, "{} still refers to {}", kube::objectKey(d), uid);
        }
      }
    }
    log().info("orphaned dependents", {{"kind", r.kind}, {"owner", kube::objectKey(owner)}});
    return removeFinalizer(r, owner, kOrphan);
  }

  base::Status deleteDependentsFirst(const kube::Resource& r, const json::object& owner) {
    std::string uid(kube::uid(owner));
    bool blocked = false;
    for (const auto& [i, d] : dependents(uid)) {
      const kube::Resource& dr = *watched()[i];
      bool blocks = false;
      for (const kube::OwnerReference& ref : kube::ownerReferences(*d)) blocks = blocks || (ref.uid == uid && ref.blockOwnerDeletion);
      blocked = blocked || blocks;
      if (!kube::beingDeleted(*d)) {
        if (auto st = removeObject(dr, *d, "Foreground"); !st) return st;
      }
    }
    if (blocked) return {};  // their deletion events bring the owner back here
    log().info("dependents deleted", {{"kind", r.kind}, {"owner", kube::objectKey(owner)}});
    return removeFinalizer(r, owner, kForeground);
  }

  std::vector<std::shared_ptr<kube::Informer>> informers_;
};

}  // namespace

std::unique_ptr<Runnable> makeGarbageCollector(Context& ctx) { return std::make_unique<GarbageCollector>(ctx); }

}  // namespace trellis::controllers
