// The three patch formats kube-apiserver accepts:
//   application/merge-patch+json           RFC 7386 JSON merge patch
//   application/json-patch+json            RFC 6902 JSON patch (RFC 6901 pointers)
//   application/strategic-merge-patch+json Kubernetes strategic merge patch:
//     lists of objects merge by a key per field (containers by name, ports by
//     containerPort/port, ...), with the $patch (merge|replace|delete),
//     $retainKeys, $setElementOrder/<list> and $deleteFromPrimitiveList/<list>
//     directives; lists without a merge key are replaced, as kube does.
// Errors are kInvalidArgument with a message for a 422/400 Status.
#pragma once

#include <string_view>

#include <boost/json/value.hpp>

#include "apiserver-lite/registry/resources.h"
#include "common/base/result.h"

namespace trellis::apiserver::registry {

base::Result<boost::json::value> applyMergePatch(boost::json::value target, const boost::json::value& patch);
base::Result<boost::json::value> applyJsonPatch(boost::json::value target, const boost::json::value& patch);
base::Result<boost::json::value> applyStrategicMergePatch(boost::json::value target, const boost::json::value& patch,
                                                         const ResourceInfo& resource);

// The merge key of a list field for strategic merge ("name" for containers);
// empty when the list is replaced whole. `path` is the field names from the
// object root, e.g. {"spec", "template", "spec", "containers"}.
std::string_view strategicMergeKey(const ResourceInfo& resource, const std::vector<std::string_view>& path);

}  // namespace trellis::apiserver::registry
