// The REST client every Trellis component uses to talk to a Kubernetes API
// server (apiserver-lite or kube-apiserver), over common/http: one HTTP/2
// connection multiplexes every request and watch (HTTP/1.1 when the server
// offers only that).
//
//   auto client = kube::Client::create(*kube::loadDefaultConfig());
//   auto cm = (*client)->get(kube::resources::kConfigMaps, "default", "settings");
//   if (!cm && cm.error().code() == base::ErrorCode::kNotFound) ...
//
// Errors: a Status from the server maps to an ErrorCode — NotFound →
// kNotFound, AlreadyExists → kAlreadyExists, Conflict → kConflict, Gone and
// Expired (410) → kOutOfRange, Forbidden → kPermissionDenied, Unauthorized →
// kUnauthenticated, Invalid and BadRequest → kInvalidArgument,
// TooManyRequests → kResourceExhausted, other 5xx → kUnavailable — with the
// Status message as the message. Transport failures are kUnavailable.
//
// Retries: 429 and 5xx answers are retried (honouring Retry-After) for every
// verb, since the server did not act; connection failures only for reads.
// Exponential backoff with jitter, up to `maxRetries`. Requests other than
// watches pass a client-side token bucket (qps/burst).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/base/result.h"
#include "common/kube/config.h"

namespace trellis::kube {

// A resource type: where its objects live in the API.
struct Resource {
  std::string group;    // "" for core
  std::string version;  // "v1"
  std::string plural;   // "configmaps"
  std::string kind;     // "ConfigMap"
  bool namespaced = true;

  std::string apiVersion() const { return group.empty() ? version : group + "/" + version; }
  // "/api/v1/namespaces/<ns>/configmaps/<name>/<sub>"; an empty ns on a
  // namespaced resource means all namespaces (for list and watch).
  std::string path(std::string_view ns, std::string_view name = {}, std::string_view sub = {}) const;
  std::string id() const { return plural + "." + group + "/" + version; }
};

namespace resources {
extern const Resource kNamespaces, kNodes, kPods, kServices, kEndpoints, kConfigMaps, kSecrets, kEvents,
    kPersistentVolumes, kPersistentVolumeClaims, kEndpointSlices, kStorageClasses, kVolumeAttachments, kCSINodes,
    kIngresses, kIngressClasses, kLeases, kServiceAccounts, kCSIDrivers, kCSIStorageCapacities, kDeployments,
    kReplicaSets, kDaemonSets, kVolumeSnapshots, kVolumeSnapshotContents, kVolumeSnapshotClasses, kVolumeGroupSnapshots,
    kVolumeGroupSnapshotContents, kVolumeGroupSnapshotClasses, kStatefulSets, kControllerRevisions, kJobs, kCronJobs,
    kPodDisruptionBudgets;
}

struct ListOptions {
  std::string labelSelector;
  std::string fieldSelector;
  std::string resourceVersion;       // "" (most recent), "0" (any), or a revision
  std::string resourceVersionMatch;  // "", "Exact", "NotOlderThan"
  int64_t limit = 0;                 // page size; 0: everything at once
  std::string continueToken;
  int timeoutSeconds = 0;            // watches: the server ends the watch after this
  bool allowWatchBookmarks = false;
  std::string query() const;         // "labelSelector=...&..." (URL-encoded), without '?'
};

struct ObjectList {
  std::vector<boost::json::object> items;
  std::string resourceVersion;
  std::string continueToken;
};

enum class PatchType { kMerge, kJson, kStrategic };

struct DeleteOptions {
  std::string propagationPolicy;  // "", "Background", "Foreground", "Orphan"
  std::string uid;                // preconditions
  std::string resourceVersion;
};

struct WatchEvent {
  enum class Type { kAdded, kModified, kDeleted, kBookmark, kError };
  Type type;
  boost::json::object object;  // for kError: the Status
};

struct ClientOptions {
  double qps = 50;
  int burst = 100;
  int maxRetries = 5;
  std::chrono::milliseconds timeout{30'000};      // per request (not watches)
  std::chrono::milliseconds initialBackoff{100};  // doubled per retry, up to maxBackoff
  std::chrono::milliseconds maxBackoff{5'000};
  std::string userAgent = "trellis";
};

class Client {
 public:
  static base::Result<std::unique_ptr<Client>> create(const RestConfig& config, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const RestConfig& config() const;

  base::Result<boost::json::object> get(const Resource& r, std::string_view ns, std::string_view name,
                                        std::string_view subresource = {});
  // One page (opts.limit > 0) or the whole list.
  base::Result<ObjectList> list(const Resource& r, std::string_view ns, const ListOptions& opts = {});
  // Every page, followed through continue tokens (one consistent revision).
  base::Result<ObjectList> listAll(const Resource& r, std::string_view ns, ListOptions opts, int64_t pageSize = 500);
  // apiVersion and kind are filled in when missing; ns "" for cluster-scoped.
  base::Result<boost::json::object> create(const Resource& r, std::string_view ns, boost::json::object obj);
  // PUT of the object (metadata.resourceVersion as the precondition when set).
  base::Result<boost::json::object> update(const Resource& r, boost::json::object obj, std::string_view subresource = {});
  base::Result<boost::json::object> patch(const Resource& r, std::string_view ns, std::string_view name, PatchType type,
                                          const std::string& body, std::string_view subresource = {});
  // DELETE; `resourceVersion` non-empty adds it as a precondition.
  base::Status remove(const Resource& r, std::string_view ns, std::string_view name,
                      std::string_view resourceVersion = {});
  base::Status remove(const Resource& r, std::string_view ns, std::string_view name, const DeleteOptions& opts);
  // POST to a subresource (pods/binding) or a review; returns the answer.
  base::Result<boost::json::object> post(const std::string& path, const boost::json::object& body);

  // A watch: events arrive on the client's thread in order; `onEnd` once,
  // when the server ends the stream (ok), or it fails, or stop() is called.
  class Watch {
   public:
    virtual ~Watch() = default;
    virtual void stop() = 0;  // idempotent; onEnd still runs once
  };
  std::unique_ptr<Watch> watch(const Resource& r, std::string_view ns, const ListOptions& opts,
                               std::function<void(WatchEvent)> onEvent, std::function<void(base::Status)> onEnd);

  // Connections the underlying HTTP client holds (one per server with HTTP/2).
  size_t openConnections() const;

  struct Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The ErrorCode a Status reason/code maps to (see the header comment).
base::ErrorCode errorCodeFor(int httpStatus, std::string_view reason);

// metadata.namespace + "/" + metadata.name (just the name when cluster-scoped).
std::string objectKey(const boost::json::object& obj);
std::string_view objectName(const boost::json::object& obj);
std::string_view objectNamespace(const boost::json::object& obj);
std::string_view objectResourceVersion(const boost::json::object& obj);

// The client a component's main makes from its --kubeconfig flag: that file,
// or (empty) $KUBECONFIG, ~/.kube/config, then the in-cluster config. The
// error says which step failed; `server`, when given, receives the API
// server's URL (for the start-up log).
base::Result<std::unique_ptr<Client>> clientFromKubeconfigFlag(const std::string& kubeconfig, ClientOptions options = {},
                                                              std::string* server = nullptr);

}  // namespace trellis::kube
