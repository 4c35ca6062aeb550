// RBAC authorization evaluated like Kubernetes: Roles and ClusterRoles
// grant rules; RoleBindings (in their namespace) and ClusterRoleBindings
// (everywhere) grant them to users, groups and service accounts. Members of
// system:masters are allowed everything. Nothing is denied explicitly: a
// request is allowed when some bound rule covers it.
//
// The policy is read from the watch cache and compiled once per change of
// any RBAC object (a watch marks it stale), so checks cost a few lookups.
// ClusterRoles with an aggregationRule get the rules of every ClusterRole
// their selectors match, as kube-controller-manager would fill them in.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "apiserver-lite/server/authn.h"
#include "apiserver-lite/storage/watch_cache.h"

namespace trellis::apiserver {

// What a request asks to do, as the authorizer sees it.
struct RequestAttributes {
  std::string verb;  // get list watch create update patch delete deletecollection; or the lowercased HTTP method
  bool resourceRequest = true;
  std::string ns;
  std::string group;
  std::string resource;
  std::string subresource;
  std::string name;
  std::string path;  // non-resource requests: the URL path
};

struct Decision {
  bool allowed = false;
  std::string reason;  // which binding allowed it, or why nothing did
};

class RbacAuthorizer {
 public:
  explicit RbacAuthorizer(storage::WatchCache& cache);
  ~RbacAuthorizer();

  // Watches the RBAC resources; call once the cache has started.
  base::Status start();

  Decision authorize(const UserInfo& user, const RequestAttributes& a);

  // The rules that apply to `user` in namespace `ns` (SelfSubjectRulesReview):
  // resourceRules and nonResourceRules as authorization.k8s.io/v1 JSON.
  boost::json::object rulesFor(const UserInfo& user, const std::string& ns);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The default policy kube-apiserver bootstraps: cluster-admin (bound to
// system:masters), admin, edit, view, system:discovery,
// system:public-info-viewer and system:basic-user (bound to all
// authenticated users). Each entry: resource plural and the object.
std::vector<std::pair<std::string, boost::json::object>> bootstrapPolicy();

// The kube-apiserver style message of a denial:
// `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`.
std::string forbiddenMessage(const UserInfo& user, const RequestAttributes& a);

}  // namespace trellis::apiserver
