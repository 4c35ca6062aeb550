// csi-provisioner: the external-provisioner's contract for one driver.
// Claims annotated volume.kubernetes.io/storage-provisioner=<driver> (the
// binder's mark) get a CreateVolume named "pvc-<uid>" — so a retry after a
// crash asks for the same volume — and a PV pre-bound to them; Released
// volumes with reclaim policy Delete get a DeleteVolume, then go.
//
// Nothing leaks across kill -9: before its first CreateVolume a claim gets
// the trellis.dev/provisioning finalizer, removed once its PV exists. A
// claim deleted in between still has it; the CreateVolume it would have
// made is asked again (idempotent: it answers the volume's id) and deleted
// before the finalizer goes.
#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "common/kube/quantity.h"
#include "controllers/csi_client.h"
#include "controllers/manager.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kCSINodes;
using kube::resources::kNodes;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;
using kube::resources::kStorageClasses;
using kube::resources::kVolumeSnapshotContents;
using kube::resources::kVolumeSnapshots;

constexpr const char* kProvisioningFinalizer = "trellis.dev/provisioning";
constexpr const char* kPvFinalizer = "external-provisioner.volume.kubernetes.io/finalizer";
constexpr const char* kPrefix = "csi.storage.k8s.io/";

const base::Logger& log() {
  static base::Logger l("provisioner");
  return l;
}

std::string substitute(std::string text, const json::object& pvc, const std::string& pvName) {
  auto replace = [&](std::string_view var, std::string_view value) {
    for (size_t at; (at = text.find(var)) != std::string::npos;) text.replace(at, var.size(), value);
  };
  replace("${pv.name}", pvName);
  replace("${pvc.namespace}", kube::objectNamespace(pvc));
  replace("${pvc.name}", kube::objectName(pvc));
  return text;
}

class Provisioner : public Reconciler {
 public:
  explicit Provisioner(Context& ctx)
      : Reconciler(ctx, "csi-provisioner", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get(ctx.options.driverName)),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pvs_(ctx.informers.get(kPersistentVolumes)),
        classes_(ctx.informers.get(kStorageClasses)),
        nodes_(ctx.informers.get(kNodes)),
        csiNodes_(ctx.informers.get(kCSINodes)),
        snapshots_(ctx.informers.get(kVolumeSnapshots)),
        contents_(ctx.informers.get(kVolumeSnapshotContents)) {
    controller_.watch(*pvcs_, [](const json::object& o) { return std::vector<std::string>{"c/" + kube::objectKey(o)}; });
    controller_.watch(*pvs_, [](const json::object& o) { return std::vector<std::string>{"v/" + kube::objectKey(o)}; });
  }

 private:
  base::Status reconcile(const std::string& key) {
    if (key.starts_with("c/")) return syncClaim(key.substr(2));
    return syncVolume(key.substr(2));
  }

  const std::string& driver() const { return ctx_.options.driverName; }

  // ---- provisioning

  base::Status syncClaim(const std::string& key) {
    kube::ObjectPtr pvc = pvcs_->get(key);
    if (!pvc) return {};
    std::string pvName = "pvc-" + std::string(kube::uid(*pvc));
    if (kube::beingDeleted(*pvc)) return abandon(*pvc, pvName);
    if (claimProvisioner(*pvc) != driver() || !kube::str(*pvc, {"spec", "volumeName"}).empty()) return {};
    kube::ObjectPtr sc = classes_->get(std::string(claimClass(*pvc)));
    if (!sc) return base::makeError(base::ErrorCode::kNotFound, "storageclass \"{}\" not found", claimClass(*pvc));
    if (kube::str(*sc, {"provisioner"}) != driver()) return {};
    if (waitsForFirstConsumer(*sc) && kube::annotation(*pvc, kAnnSelectedNode).empty()) return {};
    if (pvs_->get(pvName)) return releaseClaim(*pvc);

    json::object claim = *pvc;
    if (auto patch = kube::addFinalizerPatch(claim, kProvisioningFinalizer)) {
      auto res = ctx_.client.patch(kPersistentVolumeClaims, kube::objectNamespace(claim), kube::objectName(claim),
                                   kube::PatchType::kMerge, *patch);
      if (!res) return res.error();
      claim = std::move(*res);
      events_.record(claim, "Normal", "Provisioning",
                         fmt::format("External provisioner is provisioning volume for claim \"{}\"", key));
    }
    auto req = request(claim, *sc, pvName);
    if (!req) return failed(claim, *sc, req.error());
    auto vol = ctx_.csi->createVolume(*req);
    if (!vol) return failed(claim, *sc, vol.error());
    auto pv = ctx_.client.create(kPersistentVolumes, "", volumeObject(claim, *sc, *req, *vol, pvName));
    if (!pv && pv.error().code() != base::ErrorCode::kAlreadyExists) return pv.error();
    log().info("provisioned", {{"claim", key}, {"volume", pvName}, {"handle", vol->id}});
    events_.record(claim, "Normal", "ProvisioningSucceeded", fmt::format("Successfully provisioned volume {}", pvName));
    return releaseClaim(claim);
  }

  base::Status failed(const json::object& pvc, const json::object& sc, const base::Error& err) {
    events_.record(pvc, "Warning", "ProvisioningFailed",
                       fmt::format("failed to provision volume with StorageClass \"{}\": {}", kube::objectName(sc),
                                   err.message()));
    return err;
  }

  // The claim's PV exists: the provisioning finalizer has done its work.
  base::Status releaseClaim(const json::object& pvc) {
    return setFinalizer(ctx_.client, kPersistentVolumeClaims, pvc, kProvisioningFinalizer, false);
  }

  // A claim deleted while provisioning may have a volume no PV records.
  base::Status abandon(const json::object& pvc, const std::string& pvName) {
    if (!kube::hasFinalizer(pvc, kProvisioningFinalizer)) return {};
    auto live = ctx_.client.get(kPersistentVolumes, "", pvName);
    if (!live && live.error().code() != base::ErrorCode::kNotFound) return live.error();
    if (!live) {
      kube::ObjectPtr sc = classes_->get(std::string(claimClass(pvc)));
      if (sc) {
        auto req = request(pvc, *sc, pvName);
        if (req) {
          auto vol = ctx_.csi->createVolume(*req);
          if (!vol) return vol.error();
          if (auto st = ctx_.csi->deleteVolume(vol->id, req->secrets); !st) return st;
          log().info("deleted the volume of a claim deleted while provisioning", {{"claim", kube::objectKey(pvc)}, {"handle", vol->id}});
        }
      }
    }
    return releaseClaim(pvc);
  }

  base::Result<StringMap> secret(const json::object& sc, std::string_view kind, const json::object& pvc,
                                 const std::string& pvName) {
    std::string nameKey = fmt::format("{}{}-secret-name", kPrefix, kind);
    std::string nsKey = fmt::format("{}{}-secret-namespace", kPrefix, kind);
    std::string_view name = kube::str(sc, {"parameters", nameKey}), ns = kube::str(sc, {"parameters", nsKey});
    if (name.empty() && ns.empty()) return StringMap{};
    if (name.empty() || ns.empty()) {
      return base::makeError(base::ErrorCode::kInvalidArgument, "{} and {} must be set together", nameKey, nsKey);
    }
    return secretData(ctx_.client, substitute(std::string(ns), pvc, pvName), substitute(std::string(name), pvc, pvName),
                      fmt::format("the {} secret", kind));
  }

  std::vector<StringMap> topologyOf(const std::string& nodeName) {
    kube::ObjectPtr node = nodes_->get(nodeName);
    kube::ObjectPtr csiNode = csiNodes_->get(nodeName);
    auto segs = node ? driverSegment(*node, csiNode.get(), driver()) : std::nullopt;
    if (!segs || segs->empty()) return {StringMap{{kDriverTopologyKey, nodeName}}};
    return {*segs};
  }

  // Every combination of the class's allowedTopologies terms' values.
  static std::vector<StringMap> allowedTopologies(const json::object& sc) {
    std::vector<StringMap> out;
    const json::array* terms = kube::array(sc, {"allowedTopologies"});
    if (!terms) return out;
    for (const json::value& t : *terms) {
      if (!t.is_object()) continue;
      std::vector<StringMap> combos{StringMap{}};
      if (const json::array* exprs = kube::array(t.get_object(), {"matchLabelExpressions"})) {
        for (const json::value& e : *exprs) {
          if (!e.is_object()) continue;
          std::string k(kube::str(e.get_object(), {"key"}));
          std::vector<StringMap> next;
          if (const json::array* vals = kube::array(e.get_object(), {"values"})) {
            for (const StringMap& c : combos) {
              for (const json::value& v : *vals) {
                if (!v.is_string()) continue;
                StringMap m = c;
                m[k] = std::string(v.get_string());
                next.push_back(std::move(m));
              }
            }
          }
          combos = std::move(next);
        }
      }
      for (StringMap& c : combos) {
        if (!c.empty()) out.push_back(std::move(c));
      }
    }
    return out;
  }

  base::Result<VolumeRequest> request(const json::object& pvc, const json::object& sc, const std::string& pvName) {
    VolumeRequest r;
    r.name = pvName;
    auto want = claimRequest(pvc);
    if (!want) return base::makeError(base::ErrorCode::kInvalidArgument, "the claim has no valid storage request");
    r.requiredBytes = static_cast<int64_t>(*want + 0.999L);
    if (std::string_view lim = kube::str(pvc, {"spec", "resources", "limits", "storage"}); !lim.empty()) {
      if (auto q = kube::parseQuantity(lim)) r.limitBytes = static_cast<int64_t>(*q);
    }
    r.accessModes = accessModes(pvc);
    r.parameters = driverParameters(&sc);
    r.parameters.erase("fsType");
    r.block = volumeMode(pvc) == "Block";
    if (const json::object* params = kube::child(sc, {"parameters"})) {
      for (const auto& [k, v] : *params) {
        if (!v.is_string()) continue;
        if (k == "csi.storage.k8s.io/fstype" || k == "fsType") r.fsType = v.get_string();
      }
    }
    if (const json::array* opts = kube::array(sc, {"mountOptions"})) {
      for (const json::value& o : *opts) {
        if (o.is_string()) r.mountFlags.emplace_back(o.get_string());
      }
    }
    auto secrets = secret(sc, "provisioner", pvc, pvName);
    if (!secrets) return secrets.error();
    r.secrets = std::move(*secrets);
    if (std::string_view node = kube::annotation(pvc, kAnnSelectedNode); !node.empty()) {
      r.requisite = r.preferred = topologyOf(std::string(node));
    } else {
      r.requisite = allowedTopologies(sc);
    }
    const json::object* src = kube::child(pvc, {"spec", "dataSourceRef"});
    if (!src) src = kube::child(pvc, {"spec", "dataSource"});
    if (src) {
      std::string_view kind = kube::str(*src, {"kind"}), name = kube::str(*src, {"name"}), group = kube::str(*src, {"apiGroup"});
      std::string key = std::string(kube::objectNamespace(pvc)) + "/" + std::string(name);
      if (kind == "PersistentVolumeClaim" && group.empty()) {
        kube::ObjectPtr source = pvcs_->get(key);
        if (!source) return base::makeError(base::ErrorCode::kNotFound, "source claim \"{}\" not found", name);
        kube::ObjectPtr sourcePv = pvs_->get(std::string(kube::str(*source, {"spec", "volumeName"})));
        if (!sourcePv || kube::annotation(*source, kAnnBindCompleted).empty()) {
          return base::makeError(base::ErrorCode::kFailedPrecondition, "source claim \"{}\" is not bound", name);
        }
        if (kube::str(*sourcePv, {"spec", "csi", "driver"}) != driver()) {
          return base::makeError(base::ErrorCode::kInvalidArgument, "source claim \"{}\" is not a {} volume", name, driver());
        }
        r.sourceVolumeId = kube::str(*sourcePv, {"spec", "csi", "volumeHandle"});
      } else if (kind == "VolumeSnapshot" && group == "snapshot.storage.k8s.io") {
        kube::ObjectPtr vs = snapshots_->get(key);
        if (!vs) return base::makeError(base::ErrorCode::kNotFound, "snapshot \"{}\" not found", name);
        if (!kube::boolean(*vs, {"status", "readyToUse"})) {
          return base::makeError(base::ErrorCode::kFailedPrecondition, "snapshot \"{}\" is not ready to use", name);
        }
        kube::ObjectPtr content = contents_->get(std::string(kube::str(*vs, {"status", "boundVolumeSnapshotContentName"})));
        if (!content || kube::str(*content, {"spec", "driver"}) != driver()) {
          return base::makeError(base::ErrorCode::kInvalidArgument, "snapshot \"{}\" is not a {} snapshot", name, driver());
        }
        if (auto size = quantityAt(*vs, {"status", "restoreSize"}); size && *size > *want) {
          return base::makeError(base::ErrorCode::kInvalidArgument,
                                 "requested volume size {} is less than the size {} of the snapshot \"{}\"",
                                 static_cast<int64_t>(*want), static_cast<int64_t>(*size), name);
        }
        r.sourceSnapshotId = kube::str(*content, {"status", "snapshotHandle"});
      } else {
        return base::makeError(base::ErrorCode::kInvalidArgument, "data source {} {} is not supported", kind, name);
      }
    }
    return r;
  }

  json::object volumeObject(const json::object& pvc, const json::object& sc, const VolumeRequest& req, const Volume& vol,
                            const std::string& pvName) {
    std::string_view policy = kube::str(sc, {"reclaimPolicy"});
    if (policy.empty()) policy = "Delete";
    json::object annotations{{kAnnProvisionedBy, driver()}};
    std::string_view delName = kube::str(sc, {"parameters", "csi.storage.k8s.io/provisioner-secret-name"});
    if (!delName.empty()) {
      annotations["volume.kubernetes.io/provisioner-deletion-secret-name"] = substitute(std::string(delName), pvc, pvName);
      annotations["volume.kubernetes.io/provisioner-deletion-secret-namespace"] =
          substitute(std::string(kube::str(sc, {"parameters", "csi.storage.k8s.io/provisioner-secret-namespace"})), pvc, pvName);
    }
    json::object meta{{"name", pvName}, {"annotations", std::move(annotations)}};
    if (policy == "Delete") meta["finalizers"] = json::array{kPvFinalizer};
    json::object attrs;
    for (const auto& [k, v] : vol.context) attrs[k] = v;
    json::object csi{{"driver", driver()}, {"volumeHandle", vol.id}, {"volumeAttributes", std::move(attrs)}};
    if (!req.fsType.empty() && !req.block) csi["fsType"] = req.fsType;
    json::array modes;
    for (const std::string& m : req.accessModes) modes.push_back(json::string(m));
    json::object spec{{"capacity", json::object{{"storage", bytesQuantity(vol.capacityBytes > 0 ? vol.capacityBytes : req.requiredBytes)}}},
                      {"accessModes", std::move(modes)},
                      {"volumeMode", req.block ? "Block" : "Filesystem"},
                      {"persistentVolumeReclaimPolicy", policy},
                      {"storageClassName", kube::objectName(sc)},
                      {"claimRef", json::object{{"kind", "PersistentVolumeClaim"}, {"namespace", kube::objectNamespace(pvc)},
                                                {"name", kube::objectName(pvc)}, {"uid", kube::uid(pvc)},
                                                {"apiVersion", "v1"},
                                                {"resourceVersion", kube::str(pvc, {"metadata", "resourceVersion"})}}},
                      {"csi", std::move(csi)}};
    if (const json::value* opts = kube::field(sc, {"mountOptions"})) spec["mountOptions"] = *opts;
    if (!vol.topology.empty()) {
      json::array terms;
      for (const StringMap& segs : vol.topology) {
        json::array exprs;
        for (const auto& [k, v] : segs) exprs.push_back(json::object{{"key", k}, {"operator", "In"}, {"values", json::array{json::string(v)}}});
        terms.push_back(json::object{{"matchExpressions", std::move(exprs)}});
      }
      spec["nodeAffinity"] = json::object{{"required", json::object{{"nodeSelectorTerms", std::move(terms)}}}};
    }
    return json::object{{"apiVersion", "v1"}, {"kind", "PersistentVolume"}, {"metadata", std::move(meta)}, {"spec", std::move(spec)}};
  }

  // ---- deletion

  base::Status syncVolume(const std::string& name) {
    kube::ObjectPtr pv = pvs_->get(name);
    if (!pv || kube::annotation(*pv, kAnnProvisionedBy) != driver()) return {};
    std::string_view phase = kube::str(*pv, {"status", "phase"});
    std::string_view policy = kube::str(*pv, {"spec", "persistentVolumeReclaimPolicy"});
    if (policy != "Delete") {
      if (!kube::beingDeleted(*pv)) return {};
      return removePvFinalizer(*pv);
    }
    bool release = phase == "Released" || (kube::beingDeleted(*pv) && phase != "Bound");
    if (!release) return {};
    // Still attached somewhere: the attacher's finalizer goes after the
    // detach, and that update brings the volume back here.
    if (const json::array* fins = kube::array(*pv, {"metadata", "finalizers"})) {
      for (const json::value& f : *fins) {
        if (f.is_string() && std::string_view(f.get_string()).starts_with("external-attacher/")) return {};
      }
    }
    auto secrets = secretData(ctx_.client, kube::annotation(*pv, "volume.kubernetes.io/provisioner-deletion-secret-namespace"),
                              kube::annotation(*pv, "volume.kubernetes.io/provisioner-deletion-secret-name"),
                              "the deletion secret");
    if (!secrets) return secrets.error();
    std::string handle(kube::str(*pv, {"spec", "csi", "volumeHandle"}));
    if (auto st = ctx_.csi->deleteVolume(handle, *secrets); !st) {
      events_.record(*pv, "Warning", "VolumeFailedDelete", st.error().message());
      return st;
    }
    log().info("deleted", {{"volume", name}, {"handle", handle}});
    if (auto st = removePvFinalizer(*pv); !st) return st;
    if (!kube::beingDeleted(*pv)) {
      auto st = ctx_.client.remove(kPersistentVolumes, "", name);
      if (!st && st.error().code() != base::ErrorCode::kNotFound) return st;
    }
    return {};
  }

  base::Status removePvFinalizer(const json::object& pv) {
    return setFinalizer(ctx_.client, kPersistentVolumes, pv, kPvFinalizer, false);
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> pvcs_, pvs_, classes_, nodes_, csiNodes_, snapshots_, contents_;
};

}  // namespace

std::unique_ptr<Runnable> makeProvisioner(Context& ctx) { return std::make_unique<Provisioner>(ctx); }

}  // namespace trellis::controllers
