// pvc-protection and pv-protection: the finalizers that keep a claim while
// a pod uses it and a volume while it is bound, removed once that ends so
// deletion (of the object, of its namespace) completes.
#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;
using kube::resources::kPods;

constexpr const char* kPvcFinalizer = "kubernetes.io/pvc-protection";
constexpr const char* kPvFinalizer = "kubernetes.io/pv-protection";

const base::Logger& log() {
  static base::Logger l("protection");
  return l;
}

// Adds `finalizer` to a live object that lacks it, removes it once
// `releasable` says so from one being deleted.
base::Status keepOrRelease(kube::Client& client, const kube::Resource& r, const json::object& obj,
                           const char* finalizer, const std::function<base::Result<bool>()>& releasable) {
  if (!kube::beingDeleted(obj)) return setFinalizer(client, r, obj, finalizer, true);
  if (!kube::hasFinalizer(obj, finalizer)) return {};
  auto free = releasable();
  if (!free) return free.error();
  if (!*free) return {};
  if (auto st = setFinalizer(client, r, obj, finalizer, false); !st) return st;
  log().info("removed finalizer", {{"kind", r.kind}, {"object", kube::objectKey(obj)}, {"finalizer", finalizer}});
  return {};
}

bool usesClaim(const json::object& pod, const std::string& key) {
  if (podTerminal(pod)) return false;
  for (const std::string& k : claimKeysOf(pod)) {
    if (k == key) return true;
  }
  return false;
}

class PvcProtection : public Reconciler {
 public:
  explicit PvcProtection(Context& ctx)
      : Reconciler(ctx, "pvc-protection", [this](const std::string& key) { return reconcile(key); }),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pods_(ctx.informers.get(kPods)) {
    indexPodsByClaim(*pods_);
    controller_.watch(*pvcs_);
    controller_.watch(*pods_, claimKeysOf);
  }

 private:
  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr pvc = pvcs_->get(key);
    if (!pvc) return {};
    return keepOrRelease(ctx_.client, kPersistentVolumeClaims, *pvc, kPvcFinalizer, [&]() -> base::Result<bool> {
      for (const kube::ObjectPtr& pod : pods_->byIndex(kPodsByClaim, key)) {
        if (usesClaim(*pod, key)) return false;
      }
      // The cache may be behind a pod just created: ask the server, as the
      // real controller does before letting go.
      auto live = ctx_.client.list(kPods, kube::objectNamespace(*pvc));
      if (!live) return live.error();
      for (const json::object& pod : live->items) {
        if (usesClaim(pod, key)) return false;
      }
      return true;
    });
  }

  std::shared_ptr<kube::Informer> pvcs_, pods_;
};

class PvProtection : public Reconciler {
 public:
  explicit PvProtection(Context& ctx)
      : Reconciler(ctx, "pv-protection", [this](const std::string& key) { return reconcile(key); }),
        pvs_(ctx.informers.get(kPersistentVolumes)) {
    controller_.watch(*pvs_);
  }

 private:
  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr pv = pvs_->get(key);
    if (!pv) return {};
    return keepOrRelease(ctx_.client, kPersistentVolumes, *pv, kPvFinalizer, [&]() -> base::Result<bool> {
      return kube::str(*pv, {"status", "phase"}) != "Bound";
    });
  }

  std::shared_ptr<kube::Informer> pvs_;
};

}  // namespace

std::unique_ptr<Runnable> makePvcProtection(Context& ctx) { return std::make_unique<PvcProtection>(ctx); }
std::unique_ptr<Runnable> makePvProtection(Context& ctx) { return std::make_unique<PvProtection>(ctx); }

}  // namespace trellis::controllers
