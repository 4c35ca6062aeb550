// meta.k8s.io/v1 Table output: what `kubectl get` prints, with the columns
// kube-apiserver gives each kind (NAME and AGE for kinds not listed here).
#pragma once

#include <ctime>
#include <vector>

#include <boost/json/object.hpp>

#include "apiserver-lite/registry/resources.h"

namespace trellis::apiserver::registry {

// `items` are full objects; rows carry their metadata (PartialObjectMetadata).
boost::json::object toTable(const ResourceInfo& r, const std::vector<boost::json::object>& items,
                            const std::string& resourceVersion, std::time_t now);

// Does the Accept header ask for a Table (as=Table;g=meta.k8s.io)?
bool wantsTable(std::string_view accept);

// kube's HumanDuration: "45s", "3m20s", "5h", "12d", "2y30d".
std::string humanDuration(int64_t seconds);

}  // namespace trellis::apiserver::registry
