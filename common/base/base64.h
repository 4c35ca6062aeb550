// Base64 (RFC 4648 §4, with padding), as Kubernetes uses it for []byte
// fields in JSON and kubeconfig data fields.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace trellis::base {

std::string base64Encode(std::string_view data);

// nullopt when `text` is not padded base64 of the standard alphabet.
std::optional<std::string> base64Decode(std::string_view text);

}  // namespace trellis::base
