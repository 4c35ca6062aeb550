#include "controllers/manager.h"

#include <set>

#include <fmt/format.h>

#include "common/kube/object.h"

namespace trellis::controllers {

const std::vector<ControllerInfo>& allControllers() {
  static const std::vector<ControllerInfo> all{
      {"serviceaccount", true, false, false, "a default ServiceAccount in every namespace", makeServiceAccounts},
      {"root-ca-cert-publisher", true, false, false, "the kube-root-ca.crt ConfigMap in every namespace",
       makeRootCaPublisher},
      {"nodeipam", true, false, false, "spec.podCIDRs for every Node from --cluster-cidr", makeNodeIpam},
      {"persistentvolume-binder", true, false, false, "binds PVCs to PVs; phases; provisioning annotations",
       makeBinder},
      {"pvc-protection", true, false, false, "removes kubernetes.io/pvc-protection once no pod uses the claim",
       makePvcProtection},
      {"pv-protection", true, false, false, "removes kubernetes.io/pv-protection once the volume is unbound",
       makePvProtection},
      {"csi-provisioner", true, true, true, "CreateVolume/DeleteVolume for the driver's StorageClasses",
       makeProvisioner},
      {"csi-attacher", true, true, true,
       "VolumeAttachments → ControllerPublish/Unpublish (local: also creates them for pods' volumes)", makeAttacher},
      {"csi-resizer", true, true, true, "ControllerExpandVolume for claims whose request grew; PV capacity, claim status",
       makeResizer},
      {"csi-snapshotter", true, true, true,
       "VolumeSnapshots → VolumeSnapshotContents → CreateSnapshot/DeleteSnapshot; deletion policies", makeSnapshotter},
      {"csi-capacity", true, true, true, "CSIStorageCapacity per StorageClass and node topology, from GetCapacity",
       makeCapacityPublisher},
      {"scheduler", true, false, false, "binds pending pods to nodes", makeScheduler},
      {"endpointslice", true, false, false, "EndpointSlices of the pods each Service selects", makeEndpointSlices},
      {"endpoints", true, false, false, "the legacy Endpoints object of each Service", makeEndpoints},
      {"nodelifecycle", true, false, false, "Ready=Unknown and unreachable taints for nodes whose Lease stops; eviction",
       makeNodeLifecycle},
      {"replicaset", true, false, false, "keeps spec.replicas pods of each ReplicaSet; adoption, release, status",
       makeReplicaSets},
      {"deployment", true, false, false, "rolls Deployments out through ReplicaSets (RollingUpdate, Recreate); history, status",
       makeDeployments},
      {"statefulset", true, false, false, "ordered pods with stable names and a claim per template; RollingUpdate, OnDelete",
       makeStatefulSets},
      {"daemonset", true, false, false, "one pod of each DaemonSet per eligible node; RollingUpdate, OnDelete, history",
       makeDaemonSets},
      {"job", true, false, false, "runs Jobs' pods to completion: parallelism, back-off, Indexed, podFailurePolicy, suspend",
       makeJobs},
      {"cronjob", true, false, false, "Jobs from CronJobs on their schedules; concurrency policies, deadlines, history",
       makeCronJobs},
      {"ttl-after-finished", true, false, false, "deletes finished Jobs after ttlSecondsAfterFinished", makeTtlAfterFinished},
      {"disruption", true, false, false, "PodDisruptionBudget status (healthy, desired, allowed disruptions) for evictions",
       makeDisruption},
      {"podgc", true, false, false, "deletes terminated pods beyond a threshold and pods of nodes that are gone", makePodGc},
      {"garbagecollector", true, false, false,
       "deletes objects whose owners are gone; foreground and orphan deletion", makeGarbageCollector},
  };
  return all;
}

base::Status setFinalizer(kube::Client& client, const kube::Resource& r, const boost::json::object& obj,
                          std::string_view finalizer, bool present) {
  auto patch = present ? kube::addFinalizerPatch(obj, finalizer) : kube::removeFinalizerPatch(obj, finalizer);
  if (!patch) return {};
  auto res = client.patch(r, kube::objectNamespace(obj), kube::objectName(obj), kube::PatchType::kMerge, *patch);
  if (!res && res.error().code() != base::ErrorCode::kNotFound) return res.error();
  return {};
}

kube::EventRecorder& EventRecorders::get(const std::string& component) {
  std::lock_guard g(mu_);
  auto& r = recorders_[component];
  if (!r) r = std::make_unique<kube::EventRecorder>(client_, kube::EventSource{.component = component});
  return *r;
}

void EventRecorders::flush() {
  std::lock_guard g(mu_);
  for (auto& [name, r] : recorders_) r->flush();
}

base::Result<std::vector<std::string>> selectControllers(std::string_view list, Profile profile) {
  std::set<std::string> on, off;
  bool star = false;
  std::vector<std::string> unknown;
  auto known = [](std::string_view n) {
    for (const ControllerInfo& c : allControllers()) {
      if (c.name == n) return true;
    }
    return false;
  };
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    std::string_view item = list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    pos = comma == std::string_view::npos ? list.size() + 1 : comma + 1;
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) continue;
    if (item == "*") {
      star = true;
      continue;
    }
    bool minus = item.front() == '-';
    std::string name(minus ? item.substr(1) : item);
    if (!known(name)) {
      unknown.push_back(std::string(item));
      continue;
    }
    (minus ? off : on).insert(name);
  }
  if (!unknown.empty()) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "--controllers: unknown controller(s) {} (see --help)",
                           fmt::join(unknown, ", "));
  }
  std::vector<std::string> out;
  for (const ControllerInfo& c : allControllers()) {
    std::string name(c.name);
    bool byDefault = profile == Profile::kLocal ? c.local : c.cluster;
    if (off.count(name)) continue;
    if (on.count(name) || (star && byDefault)) out.push_back(name);
  }
  return out;
}

}  // namespace trellis::controllers
