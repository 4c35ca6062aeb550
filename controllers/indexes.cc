#include "controllers/indexes.h"

#include "common/kube/object.h"

namespace trellis::controllers {

namespace json = boost::json;

std::vector<std::string> claimKeysOf(const json::object& pod) {
  std::vector<std::string> out;
  std::string ns(kube::str(pod, {"metadata", "namespace"}));
  const json::array* vols = kube::array(pod, {"spec", "volumes"});
  if (!vols) return out;
  for (const json::value& v : *vols) {
    if (!v.is_object()) continue;
    if (auto claim = kube::str(v.get_object(), {"persistentVolumeClaim", "claimName"}); !claim.empty()) {
      out.push_back(ns + "/" + std::string(claim));
    } else if (kube::child(v.get_object(), {"ephemeral"})) {
      out.push_back(ns + "/" + std::string(kube::str(pod, {"metadata", "name"})) + "-" +
                    std::string(kube::str(v.get_object(), {"name"})));
    }
  }
  return out;
}

void indexPodsByClaim(kube::Informer& pods) { pods.addIndex(kPodsByClaim, claimKeysOf); }

void indexPodsByNode(kube::Informer& pods) {
  pods.addIndex(kPodsByNode, [](const json::object& p) {
    return std::vector<std::string>{std::string(kube::str(p, {"spec", "nodeName"}))};
  });
}

void indexByNamespace(kube::Informer& informer) { informer.addIndex(kByNamespace, kube::namespaceIndex()); }

bool podTerminal(const json::object& pod) {
  std::string_view phase = kube::str(pod, {"status", "phase"});
  return phase == "Succeeded" || phase == "Failed";
}

}  // namespace trellis::controllers
