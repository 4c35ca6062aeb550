// The resources apiserver-lite serves: group, version, kind, plural, scope,
// short names, subresources, and how object names are validated. Discovery,
// routing and storage keys all come from this one table.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::apiserver::registry {

enum class NameRule { kSubdomain, kLabel, kDns1035, kPathSegment };

struct ResourceInfo {
  std::string group;    // "" for the core group
  std::string version;  // "v1"
  std::string kind;     // "ConfigMap"
  std::string plural;   // "configmaps"
  std::string singular; // "configmap"
  bool namespaced = true;
  std::vector<std::string> shortNames;
  std::vector<std::string> subresources;  // "status", "binding"
  NameRule nameRule = NameRule::kSubdomain;
  std::vector<std::string> categories;    // "all"
  // A review (SelfSubjectAccessReview, ...): create only, answered and not stored.
  bool review = false;

  std::string apiVersion() const { return group.empty() ? version : group + "/" + version; }
  std::string listKind() const { return kind + "List"; }
  // Storage key prefix of this resource: "/registry/<group or core>/<plural>/".
  std::string keyPrefix() const;
  // Key of one object ("" namespace for cluster-scoped).
  std::string key(std::string_view ns, std::string_view name) const;
};

const std::vector<ResourceInfo>& servedResources();
const ResourceInfo* findResource(std::string_view group, std::string_view version, std::string_view plural);
const ResourceInfo* findKind(std::string_view apiVersion, std::string_view kind);

struct GroupVersion {
  std::string group;
  std::string version;
};
// Every group/version served, core ("", v1) first.
std::vector<GroupVersion> servedGroupVersions();

}  // namespace trellis::apiserver::registry
