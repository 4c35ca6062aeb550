// Per-kind defaulting and validation, as kube-apiserver's registry
// strategies do it for the kinds apiserver-lite serves: required fields,
// supported values, ranges, cross-field rules (a workload's selector must
// match its template labels, an Ingress path needs a pathType), immutable
// fields on update, and the defaults clients read back (a Pod's
// restartPolicy, a Service's protocol and targetPort, a Deployment's
// strategy, ...). Messages follow apimachinery's field errors.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/kube/quantity.h"
#include "apiserver-lite/registry/resources.h"
#include "apiserver-lite/registry/validation.h"

namespace trellis::apiserver::registry {

// Fills in defaults. On create also resets what clients may not set there
// (status, except a Node's, starts as the server says: a Pod Pending, ...).
void applyDefaults(const ResourceInfo& r, boost::json::object& obj, bool create);

// Field errors of the object; with `old` (an update) also of changes to
// immutable fields.
FieldErrors validateKind(const ResourceInfo& r, const boost::json::object& obj, const boost::json::object* old);

// Fields of `obj` the kind does not have, as kube-apiserver's strict decoding
// names them ("datas", "metadata.lables"): checked at the top level and in
// metadata (deeper levels need schemas apiserver-lite does not carry yet).
std::vector<std::string> unknownFields(const ResourceInfo& r, const boost::json::object& obj);

// The first malformed resource.Quantity in `obj` (at the fields the kind
// declares as quantities: resource requests and limits, capacities, size
// limits, quota), as kube-apiserver's decoder reports it: "<Kind> in version
// \"v1\" cannot be handled as a <Kind>: <quantity error>". Quantities given
// as JSON numbers are rewritten as strings, as the decoder reads them.
std::optional<std::string> malformedQuantity(const ResourceInfo& r, boost::json::object& obj);

// The storage a PVC requests, and whether `obj` asks for more than `old`.
// Used for the resize admission rule (the StorageClass must allow expansion).
bool pvcRequestGrew(const boost::json::object& obj, const boost::json::object& old);

}  // namespace trellis::apiserver::registry
