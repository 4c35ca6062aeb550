// The Kubernetes REST API over the registry and storage: discovery, health,
// metrics, and the standard verbs on every served resource (get, list,
// watch, create, update, patch, delete, deletecollection; status and binding
// subresources; SelfSubjectAccessReview/RulesReview), authorized by RBAC.
// Plugs into common/http as a Handler; answers asynchronously (a write is
// answered once it is durable). docs/apiserver.md lists what is served.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "apiserver-lite/server/authn.h"
#include "common/base/metrics.h"
#include "apiserver-lite/storage/store.h"
#include "apiserver-lite/storage/watch_cache.h"
#include "common/http/handler.h"

namespace trellis::apiserver {

struct ApiOptions {
  std::string gitVersion = "v1.32.0-trellis";
  std::string serviceClusterIpRange = "10.96.0.0/12";  // must parse (checked by the caller)
  // How often watches with allowWatchBookmarks get a BOOKMARK (kube: about a minute).
  std::chrono::milliseconds bookmarkInterval{60'000};
  // Where request and storage metrics go; /metrics renders it. Null: no /metrics.
  base::Registry* metrics = nullptr;
};

class ApiHandler {
 public:
  ApiHandler(storage::Store& store, storage::WatchCache& cache, ApiOptions options = {});
  ~ApiHandler();

  // Serves one request from `user` (already authenticated), authorized by RBAC.
  void handle(http::Request& req, const UserInfo& user, std::shared_ptr<http::ResponseWriter> w);

  // Creates what every cluster has if missing (the namespaces default,
  // kube-system, kube-public, kube-node-lease and the default RBAC policy);
  // blocks until stored; then starts the authorizer.
  base::Status bootstrap();

  // The "kubernetes" Service in default (the range's first address, port
  // 443) and its Endpoints and EndpointSlice pointing at ip:port, as
  // kube-apiserver keeps them. Call once serving; blocks until stored.
  base::Status publishEndpoint(const std::string& ip, int port);

  // Starts the namespace finalizer: a namespace being deleted (Terminating)
  // has its contents deleted, then goes itself. Level-triggered: namespaces
  // left Terminating by a crash are picked up again. Stopped by the destructor.
  void startNamespaceFinalizer();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::apiserver
