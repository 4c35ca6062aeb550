// csi-capacity: CSIStorageCapacity objects, one per StorageClass of the
// driver and topology segment its nodes report, with GetCapacity's answer —
// what the scheduler reads to place WaitForFirstConsumer claims where a
// volume can be made. Labelled as the external-provisioner labels them;
// named after (class, segment) so a restart or a retry never makes two.
// Refreshed every --capacity-poll-interval, when classes or nodes change,
// and shortly after volumes come and go.
#include <set>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/csi_client.h"
#include "controllers/manager.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kCSINodes;
using kube::resources::kCSIStorageCapacities;
using kube::resources::kNodes;
using kube::resources::kPersistentVolumes;
using kube::resources::kStorageClasses;

constexpr const char* kAll = "all";
constexpr const char* kDriverLabel = "csi.storage.k8s.io/drivername";
constexpr const char* kManagedByLabel = "csi.storage.k8s.io/managed-by";
constexpr const char* kManagedBy = "external-provisioner";

const base::Logger& log() {
  static base::Logger l("capacity");
  return l;
}

// A stable DNS-label name for (class, segment): FNV-1a of both.
std::string objectNameFor(std::string_view cls, const StringMap& segment) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  mix(cls);
  for (const auto& [k, v] : segment) mix(k), mix(v);
  return fmt::format("csisc-{:016x}", h);
}

class CapacityPublisher : public Reconciler {
 public:
  explicit CapacityPublisher(Context& ctx)
      : Reconciler(ctx, "csi-capacity", [this](const std::string&) { return reconcile(); }, 1),
        classes_(ctx.informers.get(kStorageClasses)),
        nodes_(ctx.informers.get(kNodes)),
        csiNodes_(ctx.informers.get(kCSINodes)),
        capacities_(ctx.informers.get(kCSIStorageCapacities, ctx.options.capacityNamespace)),
        pvs_(ctx.informers.get(kPersistentVolumes)) {
    auto all = [](const json::object&) { return std::vector<std::string>{kAll}; };
    controller_.watch(*classes_, all);
    controller_.watch(*nodes_, all);
    controller_.watch(*csiNodes_, all);
    // Volumes made or removed change what is free: refresh soon, once.
    pvs_->addHandler({.onAdd = [this](const kube::ObjectPtr&) { soon(); },
                      .onUpdate = [](const kube::ObjectPtr&, const kube::ObjectPtr&) {},
                      .onDelete = [this](const kube::ObjectPtr&) { soon(); }});
    controller_.enqueue(kAll);
  }

 private:
  void soon() { controller_.queue().addAfter(kAll, std::chrono::milliseconds(200)); }

  base::Status reconcile() {
    controller_.queue().addAfter(kAll, ctx_.options.capacityPollInterval);
    std::set<StringMap> segments;
    for (const kube::ObjectPtr& node : nodes_->list()) {
      kube::ObjectPtr csiNode = csiNodes_->get(std::string(kube::objectName(*node)));
      if (auto seg = driverSegment(*node, csiNode.get(), ctx_.options.driverName); seg && !seg->empty()) {
        segments.insert(*seg);
      }
    }
    const std::string& ns = ctx_.options.capacityNamespace;
    std::set<std::string> wanted;
    base::Status result;
    for (const kube::ObjectPtr& sc : classes_->list()) {
      if (kube::str(*sc, {"provisioner"}) != ctx_.options.driverName) continue;
      StringMap params = driverParameters(sc.get());
      for (const StringMap& seg : segments) {
        std::string name = objectNameFor(kube::objectName(*sc), seg);
        wanted.insert(name);
        auto cap = ctx_.csi->getCapacity(params, seg);
        if (!cap) {
          if (result) result = cap.error();
          continue;
        }
        json::object labels{{kDriverLabel, ctx_.options.driverName}, {kManagedByLabel, kManagedBy}};
        json::object matchLabels;
        for (const auto& [k, v] : seg) matchLabels[k] = v;
        json::object body{{"storageClassName", kube::objectName(*sc)},
                          {"nodeTopology", json::object{{"matchLabels", std::move(matchLabels)}}},
                          {"capacity", bytesQuantity(cap->available)}};
        if (cap->maximumVolumeSize) body["maximumVolumeSize"] = bytesQuantity(*cap->maximumVolumeSize);
        kube::ObjectPtr have = capacities_->get(ns + "/" + name);
        if (have && kube::field(*have, {"capacity"}) && *kube::field(*have, {"capacity"}) == body["capacity"] &&
            json::serialize(kube::field(*have, {"maximumVolumeSize"}) ? *kube::field(*have, {"maximumVolumeSize"}) : json::value()) ==
                json::serialize(body.contains("maximumVolumeSize") ? body["maximumVolumeSize"] : json::value())) {
          continue;
        }
        base::Result<json::object> res = json::object();
        if (have) {
          json::object copy = *have;
          for (auto& [k, v] : body) copy[k] = v;
          res = ctx_.client.update(kCSIStorageCapacities, std::move(copy));
        } else {
          body["metadata"] = json::object{{"name", name}, {"namespace", ns}, {"labels", std::move(labels)}};
          res = ctx_.client.create(kCSIStorageCapacities, ns, std::move(body));
          if (!res && res.error().code() == base::ErrorCode::kAlreadyExists) res = json::object();  // cache behind
        }
        if (!res && result) result = res.error();
      }
    }
    for (const kube::ObjectPtr& c : capacities_->list()) {
      if (kube::str(*c, {"metadata", "labels", kDriverLabel}) != ctx_.options.driverName ||
          kube::str(*c, {"metadata", "labels", kManagedByLabel}) != kManagedBy || wanted.count(std::string(kube::objectName(*c)))) {
        continue;
      }
      auto st = ctx_.client.remove(kCSIStorageCapacities, ns, kube::objectName(*c));
      if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
    }
    if (!result) log().warn("refreshing capacity", {{"error", result.error().message()}});
    return result;
  }

  std::shared_ptr<kube::Informer> classes_, nodes_, csiNodes_, capacities_, pvs_;
};

}  // namespace

std::unique_ptr<Runnable> makeCapacityPublisher(Context& ctx) { return std::make_unique<CapacityPublisher>(ctx); }

}  // namespace trellis::controllers
