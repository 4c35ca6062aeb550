// serviceaccount and root-ca-cert-publisher: what every namespace of a real
// cluster holds — a "default" ServiceAccount and the kube-root-ca.crt
// ConfigMap with the API server's CA (recreated when deleted, corrected
// when changed).
#include "common/kube/object.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kConfigMaps;
using kube::resources::kNamespaces;
using kube::resources::kServiceAccounts;

constexpr const char* kRootCa = "kube-root-ca.crt";

// Keys are namespace names; objects named `name` in them map back.
std::vector<std::string> namespaceOf(const json::object& o, std::string_view name) {
  if (kube::objectName(o) != name) return {};
  return {std::string(kube::objectNamespace(o))};
}

bool liveNamespace(kube::Informer& namespaces, const std::string& ns) {
  kube::ObjectPtr n = namespaces.get(ns);
  return n && !kube::beingDeleted(*n) && kube::str(*n, {"status", "phase"}) != "Terminating";
}

base::Status createIgnoringExists(kube::Client& client, const kube::Resource& r, const std::string& ns, json::object obj) {
  auto res = client.create(r, ns, std::move(obj));
  if (!res && res.error().code() != base::ErrorCode::kAlreadyExists) {
    // A namespace that began terminating refuses new content: nothing to do.
    if (res.error().code() == base::ErrorCode::kPermissionDenied || res.error().code() == base::ErrorCode::kNotFound) return {};
    return res.error();
  }
  return {};
}

class ServiceAccounts : public Reconciler {
 public:
  explicit ServiceAccounts(Context& ctx)
      : Reconciler(ctx, "serviceaccount", [this](const std::string& key) { return reconcile(key); }),
        namespaces_(ctx.informers.get(kNamespaces)),
        accounts_(ctx.informers.get(kServiceAccounts)) {
    controller_.watch(*namespaces_);
    controller_.watch(*accounts_, [](const json::object& o) { return namespaceOf(o, "default"); });
  }

 private:
  base::Status reconcile(const std::string& ns) {
    if (!liveNamespace(*namespaces_, ns) || accounts_->get(ns + "/default")) return {};
    return createIgnoringExists(ctx_.client, kServiceAccounts, ns,
                                json::object{{"metadata", json::object{{"name", "default"}, {"namespace", ns}}}});
  }

  std::shared_ptr<kube::Informer> namespaces_, accounts_;
};

class RootCaPublisher : public Reconciler {
 public:
  explicit RootCaPublisher(Context& ctx)
      : Reconciler(ctx, "root-ca-cert-publisher", [this](const std::string& key) { return reconcile(key); }),
        namespaces_(ctx.informers.get(kNamespaces)),
        configMaps_(ctx.informers.get(kConfigMaps)) {
    controller_.watch(*namespaces_);
    controller_.watch(*configMaps_, [](const json::object& o) { return namespaceOf(o, kRootCa); });
  }

 private:
  base::Status reconcile(const std::string& ns) {
    if (!liveNamespace(*namespaces_, ns)) return {};
    const std::string& ca = ctx_.options.rootCaPem;
    json::object data{{"ca.crt", ca}};
    kube::ObjectPtr cm = configMaps_->get(ns + "/" + kRootCa);
    if (!cm) {
      return createIgnoringExists(
          ctx_.client, kConfigMaps, ns,
          json::object{{"metadata", json::object{{"name", kRootCa}, {"namespace", ns},
                                                 {"annotations", json::object{{"kubernetes.io/description",
                                                                               "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}}}}},
                       {"data", std::move(data)}});
    }
    if (kube::str(*cm, {"data", "ca.crt"}) == ca && kube::child(*cm, {"data"})->size() == 1) return {};
    json::object copy = *cm;
    copy["data"] = std::move(data);
    auto res = ctx_.client.update(kConfigMaps, std::move(copy));
    return res ? base::Status() : base::Status(res.error());
  }

  std::shared_ptr<kube::Informer> namespaces_, configMaps_;
};

}  // namespace

std::unique_ptr<Runnable> makeServiceAccounts(Context& ctx) { return std::make_unique<ServiceAccounts>(ctx); }
std::unique_ptr<Runnable> makeRootCaPublisher(Context& ctx) { return std::make_unique<RootCaPublisher>(ctx); }

}  // namespace trellis::controllers
