// YAML (1.1 as Kubernetes tools write it: kubeconfig files, manifests) read
// into the JSON model the rest of the library works on. One document, or all
// of a "---"-separated stream.
#pragma once

#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "common/base/result.h"

namespace trellis::kube {

// The first document of `text` (null when empty). Plain scalars resolve as
// Kubernetes' YAML reader does: null/~, true/false, integers and floats;
// quoted scalars and `!!str` stay strings. Errors (kInvalidArgument) give
// the line and column.
base::Result<boost::json::value> parseYaml(std::string_view text);

// Every document of a stream, empty documents skipped.
base::Result<std::vector<boost::json::value>> parseYamlStream(std::string_view text);

}  // namespace trellis::kube
