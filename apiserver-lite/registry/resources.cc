#include "apiserver-lite/registry/resources.h"

namespace trellis::apiserver::registry {

std::string ResourceInfo::keyPrefix() const {
  return "/registry/" + (group.empty() ? std::string("core") : group) + "/" + plural + "/";
}

std::string ResourceInfo::key(std::string_view ns, std::string_view name) const {
  std::string k = keyPrefix();
  if (namespaced) {
    k += ns;
    k += '/';
  }
  k += name;
  return k;
}

const std::vector<ResourceInfo>& servedResources() {
  static const std::vector<ResourceInfo> table = [] {
    std::vector<ResourceInfo> t;
    auto add = [&](std::string group, std::string version, std::string kind, std::string plural, bool namespaced,
                   std::vector<std::string> shortNames, std::vector<std::string> sub = {},
                   NameRule rule = NameRule::kSubdomain, std::vector<std::string> categories = {}) {
      std::string singular = kind;
      for (char& c : singular) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      t.push_back(ResourceInfo{std::move(group), std::move(version), std::move(kind), std::move(plural),
                               std::move(singular), namespaced, std::move(shortNames), std::move(sub), rule,
                               std::move(categories)});
    };
    // core/v1
    add("", "v1", "Namespace", "namespaces", false, {"ns"}, {"status", "finalize"}, NameRule::kLabel);
    add("", "v1", "Node", "nodes", false, {"no"}, {"status"});
    add("", "v1", "Pod", "pods", true, {"po"}, {"status", "binding", "eviction"}, NameRule::kSubdomain, {"all"});
    add("", "v1", "Service", "services", true, {"svc"}, {"status"}, NameRule::kDns1035, {"all"});
    add("", "v1", "Endpoints", "endpoints", true, {"ep"});
    add("", "v1", "ConfigMap", "configmaps", true, {"cm"});
    add("", "v1", "Secret", "secrets", true, {});
    add("", "v1", "ServiceAccount", "serviceaccounts", true, {"sa"});
    add("", "v1", "Event", "events", true, {"ev"});
    add("", "v1", "PersistentVolume", "persistentvolumes", false, {"pv"}, {"status"});
    add("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, {"pvc"}, {"status"});
    // discovery.k8s.io/v1
    add("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, {});
    // events.k8s.io/v1
    add("events.k8s.io", "v1", "Event", "events", true, {"ev"});
    // storage.k8s.io/v1
    add("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, {"sc"});
    add("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false, {});
    add("storage.k8s.io", "v1", "CSINode", "csinodes", false, {});
    add("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", false, {}, {"status"});
    add("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", true, {});
    // snapshot.storage.k8s.io/v1 (CustomResourceDefinitions in a real cluster)
    add("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", true, {"vs"}, {"status"});
    add("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent", "volumesnapshotcontents", false, {"vsc", "vscs"}, {"status"});
    add("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass", "volumesnapshotclasses", false, {"vsclass", "vsclasses"});
    // groupsnapshot.storage.k8s.io/v1beta1 (CRDs in a real cluster)
    add("groupsnapshot.storage.k8s.io", "v1beta1", "VolumeGroupSnapshot", "volumegroupsnapshots", true, {"vgs"}, {"status"});
    add("groupsnapshot.storage.k8s.io", "v1beta1", "VolumeGroupSnapshotContent", "volumegroupsnapshotcontents", false,
        {"vgsc", "vgscs"}, {"status"});
    add("groupsnapshot.storage.k8s.io", "v1beta1", "VolumeGroupSnapshotClass", "volumegroupsnapshotclasses", false,
        {"vgsclass", "vgsclasses"});
    // networking.k8s.io/v1
    add("networking.k8s.io", "v1", "Ingress", "ingresses", true, {"ing"}, {"status"});
    add("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, {});
    // coordination.k8s.io/v1
    add("coordination.k8s.io", "v1", "Lease", "leases", true, {});
    // rbac.authorization.k8s.io/v1
    add("rbac.authorization.k8s.io", "v1", "Role", "roles", true, {}, {}, NameRule::kPathSegment);
    add("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, {}, {}, NameRule::kPathSegment);
    add("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, {}, {}, NameRule::kPathSegment);
    add("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, {}, {}, NameRule::kPathSegment);
    // apps/v1
    add("apps", "v1", "Deployment", "deployments", true, {"deploy"}, {"status", "scale"}, NameRule::kSubdomain, {"all"});
    add("apps", "v1", "ReplicaSet", "replicasets", true, {"rs"}, {"status", "scale"}, NameRule::kSubdomain, {"all"});
    add("apps", "v1", "DaemonSet", "daemonsets", true, {"ds"}, {"status"}, NameRule::kSubdomain, {"all"});
    add("apps", "v1", "StatefulSet", "statefulsets", true, {"sts"}, {"status", "scale"}, NameRule::kSubdomain, {"all"});
    add("apps", "v1", "ControllerRevision", "controllerrevisions", true, {});
    // batch/v1
    add("batch", "v1", "Job", "jobs", true, {}, {"status"}, NameRule::kSubdomain, {"all"});
    add("batch", "v1", "CronJob", "cronjobs", true, {"cj"}, {"status"}, NameRule::kSubdomain, {"all"});
    // policy/v1
    add("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, {"pdb"}, {"status"});
    // authorization.k8s.io/v1: reviews, answered and not stored
    add("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false, {});
    t.back().review = true;
    add("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", false, {});
    t.back().review = true;
    return t;
  }();
  return table;
}

const ResourceInfo* findResource(std::string_view group, std::string_view version, std::string_view plural) {
  for (const ResourceInfo& r : servedResources()) {
    if (r.group == group && r.version == version && r.plural == plural) return &r;
  }
  return nullptr;
}

const ResourceInfo* findKind(std::string_view apiVersion, std::string_view kind) {
  for (const ResourceInfo& r : servedResources()) {
    if (r.kind == kind && r.apiVersion() == apiVersion) return &r;
  }
  return nullptr;
}

std::vector<GroupVersion> servedGroupVersions() {
  std::vector<GroupVersion> out;
  for (const ResourceInfo& r : servedResources()) {
    bool seen = false;
    for (const GroupVersion& gv : out) seen = seen || (gv.group == r.group && gv.version == r.version);
    if (!seen) out.push_back({r.group, r.version});
  }
  return out;
}

}  // namespace trellis::apiserver::registry
