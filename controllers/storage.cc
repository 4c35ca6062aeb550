#include "controllers/storage.h"

#include "common/base/base64.h"
#include "common/kube/object.h"
#include "common/kube/quantity.h"

namespace trellis::controllers {

namespace json = boost::json;

std::optional<long double> quantityAt(const json::object& o, kube::Path path) {
  std::string_view q = kube::str(o, path);
  if (q.empty()) return std::nullopt;
  auto v = kube::parseQuantity(q);
  return v ? std::optional<long double>(*v) : std::nullopt;
}

std::optional<long double> claimRequest(const json::object& pvc) {
  return quantityAt(pvc, {"spec", "resources", "requests", "storage"});
}
std::optional<long double> volumeCapacity(const json::object& pv) { return quantityAt(pv, {"spec", "capacity", "storage"}); }

std::vector<std::string> accessModes(const json::object& obj) {
  std::vector<std::string> out;
  if (const json::array* a = kube::array(obj, {"spec", "accessModes"})) {
    for (const json::value& v : *a) {
      if (v.is_string()) out.emplace_back(v.get_string());
    }
  }
  return out;
}

std::string_view volumeMode(const json::object& obj) {
  std::string_view m = kube::str(obj, {"spec", "volumeMode"});
  return m.empty() ? "Filesystem" : m;
}

std::string_view claimClass(const json::object& pvc) { return kube::str(pvc, {"spec", "storageClassName"}); }

bool waitsForFirstConsumer(const json::object& sc) { return kube::str(sc, {"volumeBindingMode"}) == "WaitForFirstConsumer"; }

std::string_view claimProvisioner(const json::object& pvc) {
  std::string_view p = kube::annotation(pvc, kAnnStorageProvisioner);
  return p.empty() ? kube::annotation(pvc, kAnnBetaStorageProvisioner) : p;
}

std::optional<std::map<std::string, std::string>> driverSegment(const json::object& node, const json::object* csiNode,
                                                                std::string_view driver) {
  auto nodeLabels = kube::labels(node);
  if (const json::array* drivers = csiNode ? kube::array(*csiNode, {"spec", "drivers"}) : nullptr) {
    for (const json::value& d : *drivers) {
      if (!d.is_object() || kube::str(d.get_object(), {"name"}) != driver) continue;
      std::map<std::string, std::string> segs;
      if (const json::array* keys = kube::array(d.get_object(), {"topologyKeys"})) {
        for (const json::value& k : *keys) {
          if (!k.is_string()) continue;
          auto it = nodeLabels.find(std::string(k.get_string()));
          if (it != nodeLabels.end()) segs.emplace(it->first, it->second);
        }
      }
      return segs;
    }
  }
  auto it = nodeLabels.find(kDriverTopologyKey);
  if (it == nodeLabels.end()) return std::nullopt;
  return std::map<std::string, std::string>{{it->first, it->second}};
}

std::map<std::string, std::string> driverParameters(const json::object* cls) {
  std::map<std::string, std::string> out;
  if (const json::object* p = cls ? kube::child(*cls, {"parameters"}) : nullptr) {
    for (const auto& [k, v] : *p) {
      if (v.is_string() && !std::string_view(k).starts_with("csi.storage.k8s.io/")) out.emplace(k, v.get_string());
    }
  }
  return out;
}

kube::ObjectPtr classFor(kube::Informer& classes, const json::object& obj, kube::Path field,
                         std::string_view defaultAnnotation, std::string_view driver) {
  std::string_view name = kube::str(obj, field);
  if (!name.empty()) return classes.get(std::string(name));
  for (const kube::ObjectPtr& c : classes.list()) {
    if (kube::str(*c, {"driver"}) == driver && kube::annotation(*c, defaultAnnotation) == "true") return c;
  }
  return nullptr;
}

base::Status setStatusError(kube::Client& client, const kube::Resource& r, const json::object& objIn,
                            const std::string& message) {
  if (kube::str(objIn, {"status", "error", "message"}) == message) return {};
  json::object obj = objIn;
  kube::ensureObject(obj, {"status"})["error"] = json::object{{"time", kube::rfc3339Now()}, {"message", message}};
  auto res = client.update(r, std::move(obj), "status");
  return res ? base::Status() : base::Status(res.error());
}

base::Result<std::map<std::string, std::string>> secretData(kube::Client& client, std::string_view ns,
                                                             std::string_view name, std::string_view what) {
  std::map<std::string, std::string> out;
  if (name.empty()) return out;
  auto secret = client.get(kube::resources::kSecrets, ns, name);
  if (!secret) return std::move(secret).error().wrap("getting {} {}/{}", what, ns, name);
  if (const json::object* data = kube::child(*secret, {"data"})) {
    for (const auto& [k, v] : *data) {
      if (auto d = v.is_string() ? base::base64Decode(v.get_string()) : std::nullopt) out.emplace(k, *d);
    }
  }
  return out;
}

base::Result<std::map<std::string, std::string>> secretData(kube::Client& client, const json::object* ref,
                                                             std::string_view what) {
  if (!ref) return std::map<std::string, std::string>{};
  return secretData(client, kube::str(*ref, {"namespace"}), kube::str(*ref, {"name"}), what);
}

std::string bytesQuantity(int64_t bytes) {
  static const char* suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int i = 0;
  while (i < 6 && bytes != 0 && bytes % 1024 == 0) bytes /= 1024, ++i;
  return std::to_string(bytes) + suffixes[i];
}

std::string claimRefKey(const json::object& pv) {
  const json::object* ref = kube::child(pv, {"spec", "claimRef"});
  if (!ref) return {};
  return std::string(kube::str(*ref, {"namespace"})) + "/" + std::string(kube::str(*ref, {"name"}));
}

}  // namespace trellis::controllers
