// csi-resizer: a bound claim whose storage request grew past its capacity
// (the class allows expansion — the API server checks) → ControllerExpandVolume,
// the PV's capacity, and the claim's status as the external-resizer writes
// it: status.allocatedResources and allocatedResourceStatuses
// (ControllerResizeInProgress, then NodeResizePending when the node must
// finish, with the FileSystemResizePending condition), or the new capacity
// when it need not. Failures: a VolumeResizeFailed Event and
// ControllerResizeInfeasible / retry with backoff.
#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/csi_client.h"
#include "controllers/manager.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;

const base::Logger& log() {
  static base::Logger l("resizer");
  return l;
}

class Resizer : public Reconciler {
 public:
  explicit Resizer(Context& ctx)
      : Reconciler(ctx, "csi-resizer", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("external-resizer " + ctx.options.driverName)),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pvs_(ctx.informers.get(kPersistentVolumes)) {
    controller_.watch(*pvcs_);
  }

 private:
  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr pvc = pvcs_->get(key);
    if (!pvc || kube::beingDeleted(*pvc) || kube::str(*pvc, {"status", "phase"}) != "Bound") return {};
    kube::ObjectPtr pv = pvs_->get(std::string(kube::str(*pvc, {"spec", "volumeName"})));
    if (!pv || kube::str(*pv, {"spec", "csi", "driver"}) != ctx_.options.driverName) return {};
    auto want = claimRequest(*pvc);
    auto have = quantityAt(*pvc, {"status", "capacity", "storage"});
    auto pvSize = volumeCapacity(*pv);
    if (!want || !have || *want <= *have) return {};
    std::string_view state = kube::str(*pvc, {"status", "allocatedResourceStatuses", "storage"});
    if (state == "NodeResizePending" && pvSize && *pvSize >= *want) return {};  // the node's turn
    std::string wantText(kube::str(*pvc, {"spec", "resources", "requests", "storage"}));
    events_.record(*pvc, "Normal", "Resizing", fmt::format("External resizer is resizing volume {}", kube::objectName(*pv)));
    auto marked = setClaimStatus(*pvc, [&](json::object& st) {
      kube::ensureObject(st, {"allocatedResources"})["storage"] = wantText;
      kube::ensureObject(st, {"allocatedResourceStatuses"})["storage"] = "ControllerResizeInProgress";
    });
    if (!marked) return marked.error();
    auto secrets = secretData(ctx_.client, kube::child(*pv, {"spec", "csi", "controllerExpandSecretRef"}),
                              "the controller expand secret");
    if (!secrets) return secrets.error();
    auto expanded = ctx_.csi->controllerExpand(std::string(kube::str(*pv, {"spec", "csi", "volumeHandle"})),
                                               static_cast<int64_t>(*want + 0.999L), volumeMode(*pv) == "Block",
                                               std::string(kube::str(*pv, {"spec", "csi", "fsType"})), *secrets);
    if (!expanded) {
      events_.record(*pvc, "Warning", "VolumeResizeFailed", fmt::format("resize volume \"{}\" by resizer \"{}\" failed: {}",
                                                                       kube::objectName(*pv), ctx_.options.driverName,
                                                                       expanded.error().message()));
      bool infeasible = expanded.error().code() == base::ErrorCode::kInvalidArgument ||
                        expanded.error().code() == base::ErrorCode::kResourceExhausted;
      (void)setClaimStatus(*marked, [&](json::object& st) {
        kube::ensureObject(st, {"allocatedResourceStatuses"})["storage"] =
            infeasible ? "ControllerResizeInfeasible" : "ControllerResizeInProgress";
      });
      return expanded.error();
    }
    std::string newSize = bytesQuantity(expanded->capacityBytes > 0 ? expanded->capacityBytes : static_cast<int64_t>(*want));
    json::object pvCopy = *pv;
    kube::ensureObject(pvCopy, {"spec", "capacity"})["storage"] = newSize;
    auto pvRes = ctx_.client.update(kPersistentVolumes, std::move(pvCopy));
    if (!pvRes) return pvRes.error();
    log().info("expanded", {{"claim", key}, {"volume", kube::objectName(*pv)}, {"size", newSize},
                            {"node", expanded->nodeExpansionRequired}});
    auto done = setClaimStatus(*marked, [&](json::object& st) {
      json::array conds;
      if (expanded->nodeExpansionRequired) {
        kube::ensureObject(st, {"allocatedResourceStatuses"})["storage"] = "NodeResizePending";
        conds.push_back(json::object{{"type", "FileSystemResizePending"}, {"status", "True"},
                                     {"lastTransitionTime", kube::rfc3339Now()}, {"lastProbeTime", nullptr},
                                     {"message", "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}});
      } else {
        kube::ensureObject(st, {"capacity"})["storage"] = newSize;
        st.erase("allocatedResourceStatuses");
      }
      st["conditions"] = std::move(conds);
    });
    if (!done) return done.error();
    events_.record(*pvc, "Normal", expanded->nodeExpansionRequired ? "FileSystemResizeRequired" : "VolumeResizeSuccessful",
                   expanded->nodeExpansionRequired ? "Require file system resize of volume on node" : "Resize volume succeeded");
    return {};
  }

  base::Result<json::object> setClaimStatus(const json::object& pvcIn, const std::function<void(json::object&)>& change) {
    json::object pvc = pvcIn;
    change(kube::ensureObject(pvc, {"status"}));
    return ctx_.client.update(kPersistentVolumeClaims, std::move(pvc), "status");
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> pvcs_, pvs_;
};

}  // namespace

std::unique_ptr<Runnable> makeResizer(Context& ctx) { return std::make_unique<Resizer>(ctx); }

}  // namespace trellis::controllers
