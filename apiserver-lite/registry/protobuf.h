// Kubernetes protobuf request bodies (application/vnd.kubernetes.protobuf)
// turned into the JSON objects the rest of the server works on.
//
// kubectl's typed commands (`create namespace|configmap|secret|service|
// deployment|role|rolebinding|ingress|...`, `auth can-i`) send protobuf,
// never JSON. The wire format is the magic "k8s\0" followed by a
// runtime.Unknown {typeMeta{apiVersion, kind}, raw, contentEncoding,
// contentType} whose `raw` is the object in the field numbering of
// Kubernetes' generated.proto files. A schema table (protobuf.cc) maps field
// numbers to JSON names for the kinds those commands send; decoding follows
// Go's JSON encoding of the same object: zero scalars of non-pointer fields
// are left out (gogo-protobuf writes them), pointer fields keep their zero,
// Time becomes RFC 3339, Quantity and IntOrString become their JSON forms.
//
// A field the table does not know that carries a non-zero value is an error
// (never dropped silently); a kind the table does not know is an error.
#pragma once

#include <string_view>

#include <boost/json/object.hpp>

#include "common/base/result.h"

namespace trellis::apiserver::registry {

inline constexpr std::string_view kProtobufContentType = "application/vnd.kubernetes.protobuf";

// Decodes one protobuf-encoded object (with its "k8s\0" envelope) into JSON,
// with apiVersion and kind set from the envelope. kInvalidArgument on any
// malformed input or unknown kind/field, with a message saying which.
base::Result<boost::json::object> decodeKubeProtobuf(std::string_view body);

}  // namespace trellis::apiserver::registry
