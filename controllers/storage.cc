#include "controllers/storage.h"

#include "common/kube/object.h"
#include "common/kube/quantity.h"

namespace trellis::controllers {

namespace json = boost::json;

namespace {
std::optional<long double> quantityAt(const json::object& o, kube::Path path) {
  std::string_view q = kube::str(o, path);
  if (q.empty()) return std::nullopt;
  auto v = kube::parseQuantity(q);
  return v ? std::optional<long double>(*v) : std::nullopt;
}
}  // namespace

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

std::string claimRefKey(const json::object& pv) {
  const json::object* ref = kube::child(pv, {"spec", "claimRef"});
  if (!ref) return {};
  return std::string(kube::str(*ref, {"namespace"})) + "/" + std::string(kube::str(*ref, {"name"}));
}

}  // namespace trellis::controllers
