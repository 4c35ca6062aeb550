// persistentvolume-binder: the PV controller's binding half. Claims bind to
// the best matching volume (one pre-bound to them first, then the smallest
// that fits by class, access modes, volume mode, capacity, selector and —
// for WaitForFirstConsumer — the selected node); claims no volume fits get
// the storage-provisioner annotation the external provisioner acts on.
// Volumes whose claim is gone become Released (or Failed when nothing can
// reclaim them). Phases and annotations are the real controller's, so a
// stock provisioner and this binder work together.
#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/manager.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kNodes;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;
using kube::resources::kStorageClasses;

constexpr const char* kPvsByClaim = "claimRef";

const base::Logger& log() {
  static base::Logger l("binder");
  return l;
}

bool hasAll(const std::vector<std::string>& have, const std::vector<std::string>& want) {
  for (const std::string& m : want) {
    if (std::find(have.begin(), have.end(), m) == have.end()) return false;
  }
  return true;
}

base::Status asStatus(const base::Result<json::object>& r) { return r ? base::Status() : base::Status(r.error()); }

class Binder : public Reconciler {
 public:
  explicit Binder(Context& ctx)
      : Reconciler(ctx, "persistentvolume-binder", [this](const std::string& key) { return reconcile(key); }, 1),
        events_(ctx.recorders.get("persistentvolume-controller")),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pvs_(ctx.informers.get(kPersistentVolumes)),
        classes_(ctx.informers.get(kStorageClasses)),
        nodes_(ctx.informers.get(kNodes)) {
    pvs_->addIndex(kPvsByClaim, [](const json::object& pv) {
      std::string k = claimRefKey(pv);
      return k.empty() ? std::vector<std::string>{} : std::vector<std::string>{k};
    });
    controller_.watch(*pvcs_, [](const json::object& o) {
      std::vector<std::string> keys{"c/" + kube::objectKey(o)};
      if (auto v = kube::str(o, {"spec", "volumeName"}); !v.empty()) keys.push_back("v/" + std::string(v));
      return keys;
    });
    controller_.watch(*pvs_, [](const json::object& o) {
      std::vector<std::string> keys{"v/" + kube::objectKey(o)};
      if (std::string c = claimRefKey(o); !c.empty()) keys.push_back("c/" + c);
      return keys;
    });
    // A new class (or a default one) may unblock claims waiting for it.
    controller_.watch(*classes_, [this](const json::object&) {
      std::vector<std::string> keys;
      for (const kube::ObjectPtr& c : pvcs_->list()) {
        if (kube::annotation(*c, kAnnBindCompleted).empty()) keys.push_back("c/" + kube::objectKey(*c));
      }
      return keys;
    });
  }

 private:
  base::Status reconcile(const std::string& key) {
    if (key.starts_with("c/")) return syncClaim(key.substr(2));
    return syncVolume(key.substr(2));
  }

  // ---- claims

  base::Status syncClaim(const std::string& key) {
    kube::ObjectPtr pvc = pvcs_->get(key);
    if (!pvc || kube::beingDeleted(*pvc)) return {};
    if (!kube::field(*pvc, {"spec", "storageClassName"})) {
      if (kube::ObjectPtr def = defaultClass()) return setDefaultClass(*pvc, *def);
    }
    if (kube::annotation(*pvc, kAnnBindCompleted).empty()) return syncUnbound(*pvc);
    return syncBound(*pvc);
  }

  kube::ObjectPtr defaultClass() {
    kube::ObjectPtr best;
    for (const kube::ObjectPtr& sc : classes_->list()) {
      if (kube::annotation(*sc, kAnnDefaultClass) != "true" &&
          kube::annotation(*sc, "storageclass.beta.kubernetes.io/is-default-class") != "true") {
        continue;
      }
      // The newest default wins, as the admission plugin decides.
      if (!best || kube::str(*sc, {"metadata", "creationTimestamp"}) > kube::str(*best, {"metadata", "creationTimestamp"})) {
        best = sc;
      }
    }
    return best;
  }

  base::Status setDefaultClass(const json::object& pvc, const json::object& sc) {
    json::object patch{{"metadata", json::object{{"resourceVersion", kube::str(pvc, {"metadata", "resourceVersion"})}}},
                       {"spec", json::object{{"storageClassName", kube::objectName(sc)}}}};
    return asStatus(ctx_.client.patch(kPersistentVolumeClaims, kube::objectNamespace(pvc), kube::objectName(pvc),
                                      kube::PatchType::kMerge, json::serialize(patch)));
  }

  base::Status syncUnbound(const json::object& pvc) {
    std::string_view volumeName = kube::str(pvc, {"spec", "volumeName"});
    if (volumeName.empty()) {
      if (kube::ObjectPtr pv = bestMatch(pvc)) return bind(pvc, *pv, true);
      return waitForVolume(pvc);
    }
    kube::ObjectPtr pv = pvs_->get(std::string(volumeName));
    if (!pv) {
      events_.record(pvc, "Normal", "FailedBinding", fmt::format("volume \"{}\" not found", volumeName));
      return setClaimPhase(pvc, "Pending");
    }
    const json::object* ref = kube::child(*pv, {"spec", "claimRef"});
    bool ours = ref && claimRefKey(*pv) == kube::objectKey(pvc) &&
                (kube::str(*ref, {"uid"}).empty() || kube::str(*ref, {"uid"}) == kube::uid(pvc));
    if (ref && !ours) {
      events_.record(pvc, "Warning", "FailedBinding",
                         fmt::format("volume \"{}\" already bound to a different claim.", volumeName));
      return setClaimPhase(pvc, "Pending");
    }
    if (!ref) {
      if (auto why = mismatch(pvc, *pv)) {
        events_.record(pvc, "Warning", "VolumeMismatch",
                           fmt::format("Cannot bind to requested volume \"{}\": {}", volumeName, *why));
        return setClaimPhase(pvc, "Pending");
      }
    }
    return bind(pvc, *pv, false);
  }

  base::Status waitForVolume(const json::object& pvc) {
    std::string_view cls = claimClass(pvc);
    if (cls.empty()) {
      events_.record(pvc, "Normal", "FailedBinding",
                         "no persistent volumes available for this claim and no storage class is set");
      return setClaimPhase(pvc, "Pending");
    }
    kube::ObjectPtr sc = classes_->get(std::string(cls));
    if (!sc) {
      events_.record(pvc, "Warning", "ProvisioningFailed",
                         fmt::format("storageclass.storage.k8s.io \"{}\" not found", cls));
      return setClaimPhase(pvc, "Pending");
    }
    std::string_view provisioner = kube::str(*sc, {"provisioner"});
    if (waitsForFirstConsumer(*sc) && kube::annotation(pvc, kAnnSelectedNode).empty()) {
      events_.record(pvc, "Normal", "WaitForFirstConsumer", "waiting for first consumer to be created before binding");
      return setClaimPhase(pvc, "Pending");
    }
    if (provisioner == kNoProvisioner) {
      events_.record(pvc, "Warning", "ProvisioningFailed",
                         fmt::format("no volume plugin matched name: {}", provisioner));
      return setClaimPhase(pvc, "Pending");
    }
    if (kube::annotation(pvc, kAnnStorageProvisioner) != provisioner ||
        kube::annotation(pvc, kAnnBetaStorageProvisioner) != provisioner) {
      json::object patch{{"metadata", json::object{{"annotations", json::object{{kAnnStorageProvisioner, provisioner},
                                                                                 {kAnnBetaStorageProvisioner, provisioner}}},
                                                   {"resourceVersion", kube::str(pvc, {"metadata", "resourceVersion"})}}}};
      auto res = ctx_.client.patch(kPersistentVolumeClaims, kube::objectNamespace(pvc), kube::objectName(pvc),
                                   kube::PatchType::kMerge, json::serialize(patch));
      if (!res) return res.error();
      events_.record(pvc, "Normal", "ExternalProvisioning",
                         fmt::format("Waiting for a volume to be created either by the external provisioner '{}' or "
                                     "manually by the system administrator. If volume creation is delayed, please "
                                     "verify that the provisioner is running and correctly registered.",
                                     provisioner));
      return setClaimPhase(*res, "Pending");
    }
    return setClaimPhase(pvc, "Pending");
  }

  // Why `pv` cannot hold `pvc`, or nothing when it can.
  std::optional<std::string> mismatch(const json::object& pvc, const json::object& pv) {
    if (kube::str(pv, {"spec", "storageClassName"}) != claimClass(pvc)) return "storageClassName does not match";
    if (volumeMode(pv) != volumeMode(pvc)) return "incompatible volumeMode";
    if (!hasAll(accessModes(pv), accessModes(pvc))) return "incompatible accessMode";
    auto want = claimRequest(pvc);
    auto have = volumeCapacity(pv);
    if (!have || (want && *have < *want)) return "requested PV is too small";
    return std::nullopt;
  }

  kube::ObjectPtr bestMatch(const json::object& pvc) {
    std::string key = kube::objectKey(pvc);
    // A volume already pointing at this claim (pre-bound, or provisioned for it).
    for (const kube::ObjectPtr& pv : pvs_->byIndex(kPvsByClaim, key)) {
      std::string_view refUid = kube::str(*pv, {"spec", "claimRef", "uid"});
      if ((refUid.empty() || refUid == kube::uid(pvc)) && !kube::beingDeleted(*pv)) return pv;
    }
    kube::ObjectPtr sc = classes_->get(std::string(claimClass(pvc)));
    kube::ObjectPtr node;
    if (sc && waitsForFirstConsumer(*sc)) {
      std::string_view selected = kube::annotation(pvc, kAnnSelectedNode);
      if (selected.empty()) return nullptr;  // the scheduler chooses for these
      node = nodes_->get(std::string(selected));
      if (!node) return nullptr;
    }
    auto selector = kube::LabelSelector::fromJson(kube::field(pvc, {"spec", "selector"}));
    if (!selector) return nullptr;
    kube::ObjectPtr best;
    long double bestSize = 0;
    for (const kube::ObjectPtr& pv : pvs_->list()) {
      if (kube::child(*pv, {"spec", "claimRef"}) || kube::beingDeleted(*pv)) continue;
      std::string_view phase = kube::str(*pv, {"status", "phase"});
      if (phase == "Released" || phase == "Failed") continue;
      if (mismatch(pvc, *pv)) continue;
      if (!selector->isNull() && !selector->matches(kube::labels(*pv))) continue;
      if (node) {
        const json::array* terms = kube::array(*pv, {"spec", "nodeAffinity", "required", "nodeSelectorTerms"});
        if (terms && !kube::nodeSelectorTermsMatch(*terms, *node)) continue;
      }
      long double size = *volumeCapacity(*pv);
      if (!best || size < bestSize) best = pv, bestSize = size;
    }
    return best;
  }

  // Volume first (claimRef, then phase), then the claim (volumeName and
  // annotations, then phase) — each write from the previous answer.
  base::Status bind(const json::object& pvcIn, const json::object& pvIn, bool byController) {
    json::object pv = pvIn;
    const json::object* ref = kube::child(pv, {"spec", "claimRef"});
    if (!ref || kube::str(*ref, {"uid"}) != kube::uid(pvcIn)) {
      kube::ensureObject(pv, {"spec"})["claimRef"] =
          json::object{{"kind", "PersistentVolumeClaim"}, {"namespace", kube::objectNamespace(pvcIn)},
                       {"name", kube::objectName(pvcIn)}, {"uid", kube::uid(pvcIn)}, {"apiVersion", "v1"},
                       {"resourceVersion", kube::str(pvcIn, {"metadata", "resourceVersion"})}};
      if (!ref) kube::ensureObject(pv, {"metadata", "annotations"})[kAnnBoundByController] = "yes";
      auto res = ctx_.client.update(kPersistentVolumes, std::move(pv));
      if (!res) return res.error();
      pv = std::move(*res);
    }
    if (kube::str(pv, {"status", "phase"}) != "Bound") {
      kube::ensureObject(pv, {"status"})["phase"] = "Bound";
      auto res = ctx_.client.update(kPersistentVolumes, std::move(pv), "status");
      if (!res) return res.error();
      pv = std::move(*res);
    }
    json::object pvc = pvcIn;
    if (kube::str(pvc, {"spec", "volumeName"}).empty() || kube::annotation(pvc, kAnnBindCompleted).empty()) {
      kube::ensureObject(pvc, {"spec"})["volumeName"] = kube::objectName(pv);
      auto& ann = kube::ensureObject(pvc, {"metadata", "annotations"});
      ann[kAnnBindCompleted] = "yes";
      if (byController) ann[kAnnBoundByController] = "yes";
      auto res = ctx_.client.update(kPersistentVolumeClaims, std::move(pvc));
      if (!res) return res.error();
      pvc = std::move(*res);
    }
    log().info("bound", {{"claim", kube::objectKey(pvc)}, {"volume", kube::objectName(pv)}});
    return finishClaimStatus(pvc, pv);
  }

  base::Status finishClaimStatus(const json::object& pvcIn, const json::object& pv) {
    if (kube::str(pvcIn, {"status", "phase"}) == "Bound" && kube::child(pvcIn, {"status", "capacity"})) return {};
    json::object pvc = pvcIn;
    auto& st = kube::ensureObject(pvc, {"status"});
    st["phase"] = "Bound";
    if (const json::value* modes = kube::field(pv, {"spec", "accessModes"})) st["accessModes"] = *modes;
    if (!st.contains("capacity")) {
      if (const json::value* cap = kube::field(pv, {"spec", "capacity"})) st["capacity"] = *cap;
    }
    return asStatus(ctx_.client.update(kPersistentVolumeClaims, std::move(pvc), "status"));
  }

  base::Status syncBound(const json::object& pvc) {
    std::string_view volumeName = kube::str(pvc, {"spec", "volumeName"});
    kube::ObjectPtr pv = volumeName.empty() ? nullptr : pvs_->get(std::string(volumeName));
    if (!pv) {
      events_.record(pvc, "Warning", "ClaimLost",
                         volumeName.empty() ? "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
                                            : "Bound claim has lost its PersistentVolume. Data on the volume is lost!");
      return setClaimPhase(pvc, "Lost");
    }
    std::string_view refUid = kube::str(*pv, {"spec", "claimRef", "uid"});
    if (!kube::child(*pv, {"spec", "claimRef"}) || refUid == kube::uid(pvc)) return bind(pvc, *pv, false);
    events_.record(pvc, "Warning", "ClaimMisbound", "Two claims are bound to the same volume, this one is bound incorrectly");
    return setClaimPhase(pvc, "Lost");
  }

  base::Status setClaimPhase(const json::object& pvcIn, std::string_view phase) {
    if (kube::str(pvcIn, {"status", "phase"}) == phase) return {};
    json::object pvc = pvcIn;
    kube::ensureObject(pvc, {"status"})["phase"] = phase;
    return asStatus(ctx_.client.update(kPersistentVolumeClaims, std::move(pvc), "status"));
  }

  // ---- volumes

  base::Status syncVolume(const std::string& name) {
    kube::ObjectPtr pv = pvs_->get(name);
    if (!pv) return {};
    const json::object* ref = kube::child(*pv, {"spec", "claimRef"});
    if (!ref) return setVolumePhase(*pv, "Available", "");
    std::string key = claimRefKey(*pv);
    std::string_view refUid = kube::str(*ref, {"uid"});
    if (refUid.empty()) {  // pre-bound by name to a claim that has not bound yet
      controller_.enqueue("c/" + key);
      return setVolumePhase(*pv, "Available", "");
    }
    kube::ObjectPtr pvc = pvcs_->get(key);
    if (!pvc || kube::uid(*pvc) != refUid) {
      // The cache may not have a claim just created: ask the server.
      auto live = ctx_.client.get(kPersistentVolumeClaims, kube::str(*ref, {"namespace"}), kube::str(*ref, {"name"}));
      if (live && kube::uid(*live) == refUid) return {};
      if (!live && live.error().code() != base::ErrorCode::kNotFound) return live.error();
      return release(*pv);
    }
    std::string_view claimVolume = kube::str(*pvc, {"spec", "volumeName"});
    if (claimVolume == name) return setVolumePhase(*pv, "Bound", "");
    if (claimVolume.empty()) {
      controller_.enqueue("c/" + key);
      return {};
    }
    // The claim is bound to another volume: let go of it.
    json::object copy = *pv;
    json::object& spec = kube::ensureObject(copy, {"spec"});
    if (kube::annotation(*pv, kAnnBoundByController) == "yes") {
      spec.erase("claimRef");
      kube::ensureObject(copy, {"metadata", "annotations"}).erase(kAnnBoundByController);
    } else {
      kube::ensureObject(spec, {"claimRef"}).erase("uid");
    }
    auto res = ctx_.client.update(kPersistentVolumes, std::move(copy));
    if (!res) return res.error();
    return setVolumePhase(*res, "Available", "");
  }

  base::Status release(const json::object& pv) {
    std::string_view phase = kube::str(pv, {"status", "phase"});
    if (phase == "Failed") return {};
    std::string_view policy = kube::str(pv, {"spec", "persistentVolumeReclaimPolicy"});
    if (policy == "Delete" && kube::annotation(pv, kAnnProvisionedBy).empty()) {
      std::string msg = fmt::format("error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                                    kube::objectName(pv));
      events_.record(pv, "Warning", "VolumeFailedDelete", msg);
      return setVolumePhase(pv, "Failed", msg);
    }
    if (policy == "Recycle") {
      std::string msg = "Recycle is not supported: use Delete or Retain";
      events_.record(pv, "Warning", "VolumeFailedRecycle", msg);
      return setVolumePhase(pv, "Failed", msg);
    }
    // Retain keeps it; Delete of a provisioned volume is the provisioner's.
    return setVolumePhase(pv, "Released", "");
  }

  base::Status setVolumePhase(const json::object& pvIn, std::string_view phase, std::string_view message) {
    if (kube::str(pvIn, {"status", "phase"}) == phase) return {};
    json::object pv = pvIn;
    auto& st = kube::ensureObject(pv, {"status"});
    st["phase"] = phase;
    if (message.empty()) st.erase("message");
    else st["message"] = message;
    st["lastPhaseTransitionTime"] = kube::rfc3339Now();
    return asStatus(ctx_.client.update(kPersistentVolumes, std::move(pv), "status"));
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> pvcs_, pvs_, classes_, nodes_;
};

}  // namespace

std::unique_ptr<Runnable> makeBinder(Context& ctx) { return std::make_unique<Binder>(ctx); }

}  // namespace trellis::controllers
