#include "common/kube/client.h"

#include <sys/random.h>

#include <atomic>
#include <mutex>
#include <thread>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/http/client.h"

namespace trellis::kube {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace resources {
const Resource kNamespaces{"", "v1", "namespaces", "Namespace", false};
const Resource kNodes{"", "v1", "nodes", "Node", false};
const Resource kPods{"", "v1", "pods", "Pod", true};
const Resource kServices{"", "v1", "services", "Service", true};
const Resource kEndpoints{"", "v1", "endpoints", "Endpoints", true};
const Resource kConfigMaps{"", "v1", "configmaps", "ConfigMap", true};
const Resource kSecrets{"", "v1", "secrets", "Secret", true};
const Resource kEvents{"", "v1", "events", "Event", true};
const Resource kPersistentVolumes{"", "v1", "persistentvolumes", "PersistentVolume", false};
const Resource kPersistentVolumeClaims{"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true};
const Resource kEndpointSlices{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true};
const Resource kStorageClasses{"storage.k8s.io", "v1", "storageclasses", "StorageClass", false};
const Resource kVolumeAttachments{"storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", false};
const Resource kCSINodes{"storage.k8s.io", "v1", "csinodes", "CSINode", false};
const Resource kIngresses{"networking.k8s.io", "v1", "ingresses", "Ingress", true};
const Resource kIngressClasses{"networking.k8s.io", "v1", "ingressclasses", "IngressClass", false};
const Resource kLeases{"coordination.k8s.io", "v1", "leases", "Lease", true};
const Resource kCSIDrivers{"storage.k8s.io", "v1", "csidrivers", "CSIDriver", false};
const Resource kCSIStorageCapacities{"storage.k8s.io", "v1", "csistoragecapacities", "CSIStorageCapacity", true};
const Resource kDeployments{"apps", "v1", "deployments", "Deployment", true};
const Resource kReplicaSets{"apps", "v1", "replicasets", "ReplicaSet", true};
const Resource kDaemonSets{"apps", "v1", "daemonsets", "DaemonSet", true};
const Resource kVolumeSnapshots{"snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", true};
const Resource kVolumeSnapshotContents{"snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", "VolumeSnapshotContent", false};
const Resource kVolumeSnapshotClasses{"snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", false};
const Resource kVolumeGroupSnapshots{"groupsnapshot.storage.k8s.io", "v1beta1", "volumegroupsnapshots", "VolumeGroupSnapshot", true};
const Resource kVolumeGroupSnapshotContents{"groupsnapshot.storage.k8s.io", "v1beta1", "volumegroupsnapshotcontents",
                                           "VolumeGroupSnapshotContent", false};
const Resource kVolumeGroupSnapshotClasses{"groupsnapshot.storage.k8s.io", "v1beta1", "volumegroupsnapshotclasses",
                                          "VolumeGroupSnapshotClass", false};
const Resource kServiceAccounts{"", "v1", "serviceaccounts", "ServiceAccount", true};
const Resource kStatefulSets{"apps", "v1", "statefulsets", "StatefulSet", true};
const Resource kControllerRevisions{"apps", "v1", "controllerrevisions", "ControllerRevision", true};
const Resource kJobs{"batch", "v1", "jobs", "Job", true};
const Resource kCronJobs{"batch", "v1", "cronjobs", "CronJob", true};
const Resource kPodDisruptionBudgets{"policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true};
}  // namespace resources

std::string Resource::path(std::string_view ns, std::string_view name, std::string_view sub) const {
  std::string p = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (namespaced && !ns.empty()) {
    p += "/namespaces/";
    p += ns;
  }
  p += "/" + plural;
  if (!name.empty()) {
    p += "/";
    p += name;
    if (!sub.empty()) {
      p += "/";
      p += sub;
    }
  }
  return p;
}

namespace {

std::string urlEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

const json::object* metadata(const json::object& obj) {
  const json::value* m = obj.if_contains("metadata");
  return m && m->is_object() ? &m->get_object() : nullptr;
}

std::string_view metaString(const json::object& obj, std::string_view key) {
  const json::object* m = metadata(obj);
  const json::value* v = m ? m->if_contains(key) : nullptr;
  return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

// A client-side token bucket.
class RateLimiter {
 public:
  RateLimiter(double qps, int burst) : qps_(qps), burst_(burst), tokens_(burst) {}
  void wait() {
    if (qps_ <= 0) return;
    std::unique_lock g(mu_);
    while (true) {
      auto now = std::chrono::steady_clock::now();
      tokens_ = std::min<double>(burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * qps_);
      last_ = now;
      if (tokens_ >= 1) {
        tokens_ -= 1;
        return;
      }
      auto wait = std::chrono::duration<double>((1 - tokens_) / qps_);
      g.unlock();
      std::this_thread::sleep_for(wait);
      g.lock();
    }
  }

 private:
  double qps_;
  int burst_;
  double tokens_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::mutex mu_;
};

double jitter() {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, 0) != sizeof r) r = 0;
  return 0.5 + (r % 1000) / 1000.0;  // 0.5x .. 1.5x
}

base::Error fromStatus(const http::Response& r) {
  std::string reason, message;
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (!ec && v.is_object()) {
    const json::object& o = v.get_object();
    if (const json::value* x = o.if_contains("reason"); x && x->is_string()) reason = std::string(x->get_string());
    if (const json::value* x = o.if_contains("message"); x && x->is_string()) message = std::string(x->get_string());
  }
  if (message.empty()) message = fmt::format("the server answered {} {}", r.status, http::reasonPhrase(r.status));
  return base::Error(errorCodeFor(r.status, reason), std::move(message));
}

}  // namespace

base::ErrorCode errorCodeFor(int status, std::string_view reason) {
  if (reason == "NotFound" || status == 404) return base::ErrorCode::kNotFound;
  if (reason == "AlreadyExists") return base::ErrorCode::kAlreadyExists;
  if (reason == "Conflict" || status == 409) return base::ErrorCode::kConflict;
  if (reason == "Gone" || reason == "Expired" || status == 410) return base::ErrorCode::kOutOfRange;
  if (status == 403) return base::ErrorCode::kPermissionDenied;
  if (status == 401) return base::ErrorCode::kUnauthenticated;
  if (status == 400 || status == 422 || status == 413 || status == 415) return base::ErrorCode::kInvalidArgument;
  if (status == 429) return base::ErrorCode::kResourceExhausted;
  if (status == 504 && reason == "Timeout") return base::ErrorCode::kDeadlineExceeded;
  if (status >= 500) return base::ErrorCode::kUnavailable;
  return base::ErrorCode::kUnknown;
}

std::string_view objectName(const json::object& obj) { return metaString(obj, "name"); }
std::string_view objectNamespace(const json::object& obj) { return metaString(obj, "namespace"); }
std::string_view objectResourceVersion(const json::object& obj) { return metaString(obj, "resourceVersion"); }
std::string objectKey(const json::object& obj) {
  std::string_view ns = objectNamespace(obj);
  return ns.empty() ? std::string(objectName(obj)) : std::string(ns) + "/" + std::string(objectName(obj));
}

std::string ListOptions::query() const {
  std::string q;
  auto add = [&](std::string_view k, std::string_view v) {
    if (v.empty()) return;
    q += (q.empty() ? "" : "&") + std::string(k) + "=" + urlEncode(v);
  };
  add("labelSelector", labelSelector);
  add("fieldSelector", fieldSelector);
  add("resourceVersion", resourceVersion);
  add("resourceVersionMatch", resourceVersionMatch);
  if (limit > 0) add("limit", std::to_string(limit));
  add("continue", continueToken);
  if (timeoutSeconds > 0) add("timeoutSeconds", std::to_string(timeoutSeconds));
  if (allowWatchBookmarks) add("allowWatchBookmarks", "true");
  return q;
}

struct Client::Impl {
  RestConfig config;
  ClientOptions options;
  http::Origin origin;
  std::unique_ptr<http::Client> http;
  RateLimiter limiter;

  Impl(RestConfig c, ClientOptions o) : config(std::move(c)), options(o), limiter(o.qps, o.burst) {}

  base::Result<std::string> authorization() {
    if (!config.token.empty()) return "Bearer " + config.token;
    if (config.tokenFile) {
      auto t = config.tokenFile->token();
      if (!t) return std::move(t).error();
      return "Bearer " + *t;
    }
    return std::string();
  }

  base::Result<http::Request> makeRequest(std::string method, std::string target, std::string body,
                                          std::string_view contentType) {
    http::Request req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.headers.add("accept", "application/json");
    req.headers.add("user-agent", options.userAgent);
    auto auth = authorization();
    if (!auth) return std::move(auth).error();
    if (!auth->empty()) req.headers.add("authorization", std::move(*auth));
    if (!contentType.empty()) req.headers.add("content-type", std::string(contentType));
    req.body = std::move(body);
    return req;
  }

  // One request with rate limiting and retries; the body of a 2xx answer.
  base::Result<std::string> call(const std::string& method, const std::string& target, const std::string& body = {},
                                 std::string_view contentType = {}) {
    bool read = method == "GET";
    auto backoff = options.initialBackoff;
    for (int attempt = 0;; ++attempt) {
      limiter.wait();
      auto req = makeRequest(method, target, body, contentType);
      if (!req) return std::move(req).error();
      auto resp = http->fetch(origin, std::move(*req), options.timeout);
      std::chrono::milliseconds wait = backoff;
      if (resp) {
        if (resp->status >= 200 && resp->status < 300) return std::move(resp->body);
        bool retryable = resp->status == 429 || resp->status == 503 || resp->status == 504 ||
                         (resp->status >= 500 && resp->headers.has("retry-after"));
        if (!retryable || attempt >= options.maxRetries) return fromStatus(*resp);
        if (auto ra = resp->headers.get("retry-after")) {
          int secs = std::atoi(std::string(*ra).c_str());
          if (secs > 0) wait = std::chrono::seconds(std::min(secs, 30));
        }
      } else {
        if (!read || attempt >= options.maxRetries) {
          return base::Error(base::ErrorCode::kUnavailable, resp.error().message()).wrap("{} {}", method, target);
        }
      }
      std::this_thread::sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(wait * jitter()));
      backoff = std::min(options.maxBackoff, backoff * 2);
    }
  }

  base::Result<json::object> callObject(const std::string& method, const std::string& target,
                                        const std::string& body = {}, std::string_view contentType = {}) {
    auto text = call(method, target, body, contentType);
    if (!text) return std::move(text).error();
    boost::system::error_code ec;
    json::value v = json::parse(*text, ec);
    if (ec || !v.is_object()) {
      return base::makeError(base::ErrorCode::kInternal, "{} {}: the answer is not a JSON object", method, target);
    }
    return std::move(v.get_object());
  }
};

base::Result<std::unique_ptr<Client>> Client::create(const RestConfig& config, ClientOptions options) {
  auto impl = std::make_unique<Impl>(config, options);
  auto origin = http::Origin::parse(config.server);
  if (!origin) return std::move(origin).error().wrap("server {:?}", config.server);
  impl->origin = *origin;
  http::ClientOptions ho;
  if (origin->scheme == "https") {
    http::TlsClientOptions to;
    to.caPem = config.caPem;
    to.certPem = config.clientCertPem;
    to.keyPem = config.clientKeyPem;
    to.insecureSkipVerify = config.insecureSkipTlsVerify;
    auto tls = http::TlsClientConfig::create(to);
    if (!tls) return std::move(tls).error().wrap("TLS for {}", config.server);
    ho.tls = *tls;
  }
  ho.limits.maxBodyBytes = 1ull << 30;  // lists can be large
  impl->http = std::make_unique<http::Client>(ho);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const RestConfig& Client::config() const { return impl_->config; }

base::Result<json::object> Client::get(const Resource& r, std::string_view ns, std::string_view name,
                                       std::string_view subresource) {
  return impl_->callObject("GET", r.path(ns, name, subresource));
}

base::Result<ObjectList> Client::list(const Resource& r, std::string_view ns, const ListOptions& opts) {
  std::string q = opts.query();
  auto obj = impl_->callObject("GET", r.path(ns) + (q.empty() ? "" : "?" + q));
  if (!obj) return std::move(obj).error();
  ObjectList out;
  if (const json::value* m = obj->if_contains("metadata"); m && m->is_object()) {
    if (const json::value* rv = m->get_object().if_contains("resourceVersion"); rv && rv->is_string()) {
      out.resourceVersion = std::string(rv->get_string());
    }
    if (const json::value* c = m->get_object().if_contains("continue"); c && c->is_string()) {
      out.continueToken = std::string(c->get_string());
    }
  }
  if (json::value* items = obj->if_contains("items"); items && items->is_array()) {
    for (json::value& it : items->get_array()) {
      if (!it.is_object()) continue;
      json::object& o = it.get_object();
      // List items carry no TypeMeta; give them the resource's.
      if (!o.contains("kind")) o["kind"] = r.kind;
      if (!o.contains("apiVersion")) o["apiVersion"] = r.apiVersion();
      out.items.push_back(std::move(o));
    }
  }
  return out;
}

base::Result<ObjectList> Client::listAll(const Resource& r, std::string_view ns, ListOptions opts, int64_t pageSize) {
  opts.limit = pageSize;
  ObjectList all;
  while (true) {
    auto page = list(r, ns, opts);
    if (!page) return std::move(page).error();
    for (json::object& o : page->items) all.items.push_back(std::move(o));
    if (all.resourceVersion.empty()) all.resourceVersion = page->resourceVersion;
    if (page->continueToken.empty()) break;
    opts.continueToken = page->continueToken;
    opts.resourceVersion.clear();
    opts.resourceVersionMatch.clear();
  }
  return all;
}

base::Result<json::object> Client::create(const Resource& r, std::string_view ns, json::object obj) {
  if (!obj.contains("apiVersion")) obj["apiVersion"] = r.apiVersion();
  if (!obj.contains("kind")) obj["kind"] = r.kind;
  return impl_->callObject("POST", r.path(ns), json::serialize(obj), "application/json");
}

base::Result<json::object> Client::update(const Resource& r, json::object obj, std::string_view subresource) {
  if (!obj.contains("apiVersion")) obj["apiVersion"] = r.apiVersion();
  if (!obj.contains("kind")) obj["kind"] = r.kind;
  std::string target = r.path(objectNamespace(obj), objectName(obj), subresource);
  return impl_->callObject("PUT", target, json::serialize(obj), "application/json");
}

base::Result<json::object> Client::patch(const Resource& r, std::string_view ns, std::string_view name, PatchType type,
                                         const std::string& body, std::string_view subresource) {
  std::string_view ct = type == PatchType::kMerge  ? "application/merge-patch+json"
                        : type == PatchType::kJson ? "application/json-patch+json"
                                                   : "application/strategic-merge-patch+json";
  return impl_->callObject("PATCH", r.path(ns, name, subresource), body, ct);
}

base::Status Client::remove(const Resource& r, std::string_view ns, std::string_view name,
                            std::string_view resourceVersion) {
  return remove(r, ns, name, DeleteOptions{.resourceVersion = std::string(resourceVersion)});
}

base::Status Client::remove(const Resource& r, std::string_view ns, std::string_view name, const DeleteOptions& opts) {
  std::string body;
  if (!opts.propagationPolicy.empty() || !opts.uid.empty() || !opts.resourceVersion.empty()) {
    json::object o{{"kind", "DeleteOptions"}, {"apiVersion", "v1"}};
    if (!opts.propagationPolicy.empty()) o["propagationPolicy"] = opts.propagationPolicy;
    json::object pre;
    if (!opts.uid.empty()) pre["uid"] = opts.uid;
    if (!opts.resourceVersion.empty()) pre["resourceVersion"] = opts.resourceVersion;
    if (!pre.empty()) o["preconditions"] = std::move(pre);
    body = json::serialize(o);
  }
  auto text = impl_->call("DELETE", r.path(ns, name), body, body.empty() ? "" : "application/json");
  if (!text) return std::move(text).error();
  return {};
}

base::Result<json::object> Client::post(const std::string& path, const json::object& body) {
  return impl_->callObject("POST", path, json::serialize(body), "application/json");
}

size_t Client::openConnections() const { return impl_->http->openConnections(); }

namespace {

class StreamWatch : public Client::Watch {
 public:
  struct State {
    std::mutex mu;
    bool ended = false;
    http::Client* http = nullptr;
    http::Client::RequestId id = 0;
    std::string pending;
    std::function<void(WatchEvent)> onEvent;
    std::function<void(base::Status)> onEnd;
    void end(base::Status st) {
      std::function<void(base::Status)> f;
      {
        std::lock_guard g(mu);
        if (ended) return;
        ended = true;
        f = std::move(onEnd);
        onEvent = nullptr;
      }
      if (f) f(std::move(st));
    }
  };
  explicit StreamWatch(std::shared_ptr<State> s) : state_(std::move(s)) {}
  ~StreamWatch() override { stop(); }
  void stop() override {
    http::Client::RequestId id;
    {
      std::lock_guard g(state_->mu);
      if (state_->ended) return;
      id = state_->id;
    }
    state_->http->cancel(id);  // onComplete reports the cancel and ends the watch
  }

 private:
  std::shared_ptr<State> state_;
};

WatchEvent::Type eventType(std::string_view t) {
  if (t == "ADDED") return WatchEvent::Type::kAdded;
  if (t == "MODIFIED") return WatchEvent::Type::kModified;
  if (t == "DELETED") return WatchEvent::Type::kDeleted;
  if (t == "BOOKMARK") return WatchEvent::Type::kBookmark;
  return WatchEvent::Type::kError;
}

}  // namespace

std::unique_ptr<Client::Watch> Client::watch(const Resource& r, std::string_view ns, const ListOptions& opts,
                                             std::function<void(WatchEvent)> onEvent,
                                             std::function<void(base::Status)> onEnd) {
  auto state = std::make_shared<StreamWatch::State>();
  state->http = impl_->http.get();
  state->onEvent = std::move(onEvent);
  state->onEnd = std::move(onEnd);
  std::string q = opts.query();
  auto req = impl_->makeRequest("GET", r.path(ns) + "?watch=true" + (q.empty() ? "" : "&" + q), "", "");
  auto watch = std::make_unique<StreamWatch>(state);
  if (!req) {
    state->end(std::move(req).error());
    return watch;
  }
  auto status = std::make_shared<int>(0);
  auto id = impl_->http->start(
      impl_->origin, std::move(*req),
      {.onHeaders = [status](int st, const http::Headers&) { *status = st; },
       .onData =
           [state, status](std::string_view data) {
             if (*status != 200) {
               state->pending.append(data);  // an error Status, read at the end
               return;
             }
             state->pending.append(data);
             size_t nl;
             while ((nl = state->pending.find('\n')) != std::string::npos) {
               boost::system::error_code ec;
               json::value v = json::parse(std::string_view(state->pending).substr(0, nl), ec);
               state->pending.erase(0, nl + 1);
               if (ec || !v.is_object()) continue;
               json::object& o = v.get_object();
               const json::value* type = o.if_contains("type");
               json::value* object = o.if_contains("object");
               if (!type || !type->is_string() || !object || !object->is_object()) continue;
               WatchEvent ev{eventType(type->get_string()), std::move(object->get_object())};
               std::function<void(WatchEvent)> f;
               {
                 std::lock_guard g2(state->mu);
                 f = state->onEvent;
               }
               if (f) f(std::move(ev));
             }
           },
       .onComplete =
           [state, status](base::Result<http::Response> resp) {
             if (!resp) return state->end(std::move(resp).error());
             if (*status != 200) {
               http::Response r;
               r.status = *status;
               r.body = state->pending;
               return state->end(fromStatus(r));
             }
             state->end({});
           }});
  std::lock_guard g(state->mu);
  state->id = id;
  return watch;
}

base::Result<std::unique_ptr<Client>> clientFromKubeconfigFlag(const std::string& kubeconfig, ClientOptions options,
                                                              std::string* server) {
  auto cfg = kubeconfig.empty() ? loadDefaultConfig() : loadKubeconfig({kubeconfig});
  if (!cfg) return std::move(cfg).error().wrap("loading the kubeconfig");
  if (server) *server = cfg->server;
  auto client = Client::create(*cfg, std::move(options));
  if (!client) return std::move(client).error().wrap("connecting to {}", cfg->server);
  return client;
}

}  // namespace trellis::kube
