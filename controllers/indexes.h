// Indexes several controllers put on the shared informers (an index is
// defined by its name: each function below always defines the same one).
#pragma once

#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/kube/informer.h"

namespace trellis::controllers {

// Pods by "ns/claim" of each PVC they use (volumes[].persistentVolumeClaim
// and generic ephemeral volumes, whose claim is "<pod>-<volume>").
inline constexpr const char* kPodsByClaim = "claims";
std::vector<std::string> claimKeysOf(const boost::json::object& pod);
void indexPodsByClaim(kube::Informer& pods);

// Pods by spec.nodeName ("" for pending ones).
inline constexpr const char* kPodsByNode = "node";
void indexPodsByNode(kube::Informer& pods);

// Objects by namespace.
inline constexpr const char* kByNamespace = "namespace";
void indexByNamespace(kube::Informer& informer);

// A pod that has stopped for good (Succeeded or Failed).
bool podTerminal(const boost::json::object& pod);

}  // namespace trellis::controllers
