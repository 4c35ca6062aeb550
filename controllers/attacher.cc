// csi-attacher: VolumeAttachments of the driver → ControllerPublishVolume /
// ControllerUnpublishVolume, as the external-attacher does it: the
// finalizer external-attacher/<driver> on the VolumeAttachment and on its
// PV while attached, status.attached and attachmentMetadata (the publish
// context), attachError / detachError with the driver's message.
//
// In the local profile it also plays the attach/detach controller: a pod
// bound to a node that uses a claim bound to one of the driver's PVs gets a
// VolumeAttachment (named as kube-controller-manager names them,
// "csi-" + sha256(volume handle + driver + node)), unless the CSIDriver says
// attachRequired: false; the attachment goes once no such pod is left.
#include <openssl/sha.h>

#include <set>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/csi_client.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kCSIDrivers;
using kube::resources::kCSINodes;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;
using kube::resources::kPods;
using kube::resources::kVolumeAttachments;

const base::Logger& log() {
  static base::Logger l("attacher");
  return l;
}

std::string attachmentName(std::string_view handle, std::string_view driver, std::string_view node) {
  std::string in = std::string(handle) + std::string(driver) + std::string(node);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  std::string out = "csi-";
  for (unsigned char c : digest) out += fmt::format("{:02x}", c);
  return out;
}

class Attacher : public Reconciler {
 public:
  explicit Attacher(Context& ctx)
      : Reconciler(ctx, "csi-attacher", [this](const std::string& key) { return reconcile(key); }),
        finalizer_("external-attacher/" + dashed(ctx.options.driverName)),
        vas_(ctx.informers.get(kVolumeAttachments)),
        pvs_(ctx.informers.get(kPersistentVolumes)),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pods_(ctx.informers.get(kPods)),
        drivers_(ctx.informers.get(kCSIDrivers)),
        csiNodes_(ctx.informers.get(kCSINodes)) {
    manageAttachments_ = ctx.options.profile == Profile::kLocal;
    indexPodsByNode(*pods_);
    indexPodsByClaim(*pods_);
    vas_->addIndex("node", [](const json::object& va) {
      return std::vector<std::string>{std::string(kube::str(va, {"spec", "nodeName"}))};
    });
    vas_->addIndex("pv", [](const json::object& va) {
      return std::vector<std::string>{std::string(kube::str(va, {"spec", "source", "persistentVolumeName"}))};
    });
    controller_.watch(*vas_, [](const json::object& va) {
      return std::vector<std::string>{"va/" + std::string(kube::objectName(va)),
                                      "node/" + std::string(kube::str(va, {"spec", "nodeName"})),
                                      "pv/" + std::string(kube::str(va, {"spec", "source", "persistentVolumeName"}))};
    });
    controller_.watch(*pvs_, [](const json::object& pv) { return std::vector<std::string>{"pv/" + kube::objectKey(pv)}; });
    if (manageAttachments_) {
      controller_.watch(*pods_, [](const json::object& p) {
        std::string_view node = kube::str(p, {"spec", "nodeName"});
        return node.empty() ? std::vector<std::string>{} : std::vector<std::string>{"node/" + std::string(node)};
      });
      // A claim binding later than its pod was placed.
      controller_.watch(*pvcs_, [this](const json::object& c) {
        std::vector<std::string> keys;
        for (const kube::ObjectPtr& p : pods_->byIndex(kPodsByClaim, kube::objectKey(c))) {
          if (!kube::str(*p, {"spec", "nodeName"}).empty()) keys.push_back("node/" + std::string(kube::str(*p, {"spec", "nodeName"})));
        }
        return keys;
      });
    }
  }

 private:
  static std::string dashed(std::string s) {
    for (char& c : s) c = c == '.' ? '-' : c;
    return s;
  }
  const std::string& driver() const { return ctx_.options.driverName; }

  base::Status reconcile(const std::string& key) {
    if (key.starts_with("va/")) return syncAttachment(key.substr(3));
    if (key.starts_with("pv/")) return syncVolume(key.substr(3));
    if (manageAttachments_) return syncNode(key.substr(5));
    return {};
  }

  // ---- the attach/detach controller's part (local profile)

  bool attachRequired() {
    kube::ObjectPtr d = drivers_->get(driver());
    return !d || kube::boolean(*d, {"spec", "attachRequired"}, true);
  }

  base::Status syncNode(const std::string& node) {
    if (node.empty()) return {};
    std::map<std::string, std::string> want;  // attachment name -> PV
    if (attachRequired()) {
      for (const kube::ObjectPtr& pod : pods_->byIndex(kPodsByNode, node)) {
        if (podTerminal(*pod)) continue;
        for (const std::string& claimKey : claimKeysOf(*pod)) {
          kube::ObjectPtr pvc = pvcs_->get(claimKey);
          if (!pvc || kube::annotation(*pvc, kAnnBindCompleted).empty()) continue;
          kube::ObjectPtr pv = pvs_->get(std::string(kube::str(*pvc, {"spec", "volumeName"})));
          if (!pv || kube::str(*pv, {"spec", "csi", "driver"}) != driver()) continue;
          want[attachmentName(kube::str(*pv, {"spec", "csi", "volumeHandle"}), driver(), node)] = kube::objectName(*pv);
        }
      }
    }
    base::Status result;
    std::set<std::string> have;
    for (const kube::ObjectPtr& va : vas_->byIndex("node", node)) {
      if (kube::str(*va, {"spec", "attacher"}) != driver()) continue;
      std::string name(kube::objectName(*va));
      have.insert(name);
      if (want.count(name) || kube::beingDeleted(*va)) continue;
      auto st = ctx_.client.remove(kVolumeAttachments, "", name);
      if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
    }
    for (const auto& [name, pv] : want) {
      if (have.count(name)) continue;
      json::object va{{"metadata", json::object{{"name", name}}},
                      {"spec", json::object{{"attacher", driver()}, {"nodeName", node},
                                            {"source", json::object{{"persistentVolumeName", pv}}}}}};
      auto res = ctx_.client.create(kVolumeAttachments, "", std::move(va));
      if (!res && res.error().code() != base::ErrorCode::kAlreadyExists && result) result = res.error();
    }
    return result;
  }

  // ---- the external-attacher's part

  // A PV still holding the finalizer with no attachment left lets it go.
  base::Status syncVolume(const std::string& name) {
    kube::ObjectPtr pv = pvs_->get(name);
    if (!pv || !kube::hasFinalizer(*pv, finalizer_) || !vas_->byIndex("pv", name).empty()) return {};
    return setFinalizer(kPersistentVolumes, *pv, false);
  }

  std::string nodeId(const std::string& node) {
    if (kube::ObjectPtr cn = csiNodes_->get(node)) {
      if (const json::array* drivers = kube::array(*cn, {"spec", "drivers"})) {
        for (const json::value& d : *drivers) {
          if (d.is_object() && kube::str(d.get_object(), {"name"}) == driver()) return std::string(kube::str(d.get_object(), {"nodeID"}));
        }
      }
    }
    return node;
  }

  base::Result<StringMap> publishSecrets(const json::object& pv) {
    return secretData(ctx_.client, kube::child(pv, {"spec", "csi", "controllerPublishSecretRef"}),
                      "the controller publish secret");
  }

  base::Status setStatus(const json::object& vaIn, const std::function<void(json::object&)>& change) {
    json::object va = vaIn;
    change(kube::ensureObject(va, {"status"}));
    if (kube::field(va, {"status"}) && kube::field(vaIn, {"status"}) && *kube::field(va, {"status"}) == *kube::field(vaIn, {"status"})) {
      return {};
    }
    auto res = ctx_.client.update(kVolumeAttachments, std::move(va), "status");
    return res ? base::Status() : base::Status(res.error());
  }

  base::Status setFinalizer(const kube::Resource& r, const json::object& obj, bool present) {
    return controllers::setFinalizer(ctx_.client, r, obj, finalizer_, present);
  }

  base::Status syncAttachment(const std::string& name) {
    kube::ObjectPtr va = vas_->get(name);
    if (!va || kube::str(*va, {"spec", "attacher"}) != driver()) return {};
    std::string pvName(kube::str(*va, {"spec", "source", "persistentVolumeName"}));
    std::string node(kube::str(*va, {"spec", "nodeName"}));
    kube::ObjectPtr pv = pvs_->get(pvName);
    if (kube::beingDeleted(*va)) {
      if (!kube::hasFinalizer(*va, finalizer_)) return {};
      if (pv) {
        auto secrets = publishSecrets(*pv);
        if (!secrets) return secrets.error();
        auto st = ctx_.csi->controllerUnpublish(std::string(kube::str(*pv, {"spec", "csi", "volumeHandle"})), nodeId(node), *secrets);
        if (!st) {
          std::string msg = st.error().message();
          (void)setStatus(*va, [&](json::object& s) { s["detachError"] = json::object{{"time", kube::rfc3339Now()}, {"message", msg}}; });
          return st;
        }
        log().info("detached", {{"volume", pvName}, {"node", node}});
      }
      // The PV is free once no other attachment of it is left (and, should
      // this fail, syncVolume finds it so later).
      if (pv) {
        bool others = false;
        for (const kube::ObjectPtr& o : vas_->byIndex("pv", pvName)) others = others || kube::objectName(*o) != name;
        if (!others) {
          if (auto st = setFinalizer(kPersistentVolumes, *pv, false); !st) return st;
        }
      }
      return setFinalizer(kVolumeAttachments, *va, false);
    }
    if (kube::boolean(*va, {"status", "attached"})) return {};
    if (!pv) {
      return setStatus(*va, [&](json::object& s) {
        s["attachError"] = json::object{{"time", kube::rfc3339Now()},
                                        {"message", fmt::format("persistentvolume \"{}\" not found", pvName)}};
      });
    }
    if (auto st = setFinalizer(kVolumeAttachments, *va, true); !st) return st;
    if (auto st = setFinalizer(kPersistentVolumes, *pv, true); !st) return st;
    CsiController::Publish p;
    p.volumeId = kube::str(*pv, {"spec", "csi", "volumeHandle"});
    p.nodeId = nodeId(node);
    p.block = volumeMode(*pv) == "Block";
    p.readonly = kube::boolean(*pv, {"spec", "csi", "readOnly"});
    p.fsType = kube::str(*pv, {"spec", "csi", "fsType"});
    p.accessModes = accessModes(*pv);
    if (const json::array* opts = kube::array(*pv, {"spec", "mountOptions"})) {
      for (const json::value& o : *opts) {
        if (o.is_string()) p.mountFlags.emplace_back(o.get_string());
      }
    }
    if (const json::object* attrs = kube::child(*pv, {"spec", "csi", "volumeAttributes"})) {
      for (const auto& [k, v] : *attrs) {
        if (v.is_string()) p.context.emplace(k, v.get_string());
      }
    }
    auto secrets = publishSecrets(*pv);
    if (!secrets) return secrets.error();
    p.secrets = std::move(*secrets);
    auto published = ctx_.csi->controllerPublish(p);
    kube::ObjectPtr latest = vas_->get(name);
    const json::object& base = latest ? *latest : *va;
    if (!published) {
      std::string msg = published.error().message();
      (void)setStatus(base, [&](json::object& s) { s["attachError"] = json::object{{"time", kube::rfc3339Now()}, {"message", msg}}; });
      return published.error();
    }
    log().info("attached", {{"volume", pvName}, {"node", node}});
    json::object meta;
    for (const auto& [k, v] : *published) meta[k] = v;
    auto st = setStatus(base, [&](json::object& s) {
      s["attached"] = true;
      s["attachmentMetadata"] = std::move(meta);
      s.erase("attachError");
    });
    // A conflict (the finalizer patch moved it on): publishing again is idempotent.
    return st;
  }

  std::string finalizer_;
  bool manageAttachments_ = false;
  std::shared_ptr<kube::Informer> vas_, pvs_, pvcs_, pods_, drivers_, csiNodes_;
};

}  // namespace

std::unique_ptr<Runnable> makeAttacher(Context& ctx) { return std::make_unique<Attacher>(ctx); }

}  // namespace trellis::controllers
