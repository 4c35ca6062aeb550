// API objects as JSON (Boost.JSON): parsing request bodies, validating and
// defaulting metadata, and the Status objects every error is returned as.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "apiserver-lite/registry/resources.h"
#include "apiserver-lite/registry/validation.h"
#include "common/base/result.h"

namespace trellis::apiserver::registry {

namespace json = boost::json;

// An API error: becomes a metav1.Status with this code and reason.
struct ApiError {
  int code = 500;
  std::string reason;   // NotFound, AlreadyExists, Conflict, Invalid, BadRequest, ...
  std::string message;
  std::string name;     // details.name
  std::string group;    // details.group
  std::string kind;     // details.kind (the resource plural, as kube-apiserver puts it)
  FieldErrors causes;

  static ApiError notFound(const ResourceInfo& r, std::string_view name);
  static ApiError alreadyExists(const ResourceInfo& r, std::string_view name);
  static ApiError conflict(const ResourceInfo& r, std::string_view name, std::string_view why);
  static ApiError invalid(const ResourceInfo& r, std::string_view name, FieldErrors errs);
  static ApiError badRequest(std::string message);
  static ApiError methodNotAllowed(std::string message);
  static ApiError gone(std::string message);
  static ApiError unsupportedMediaType(std::string message);
  static ApiError tooLarge(std::string message);
  static ApiError internal(std::string message);
};

json::object statusObject(const ApiError& e);
// A Status with status "Success" (deletecollection, delete of some kinds).
json::object successStatus(const ResourceInfo& r, std::string_view name);

// "configmaps" or "ingresses.networking.k8s.io": how messages name a resource.
std::string qualifiedResource(const ResourceInfo& r);

// Parses a request body that must be one JSON object.
base::Result<json::object> parseObject(std::string_view body);

// Checks apiVersion/kind against the resource (both may be absent: then set).
std::optional<ApiError> checkTypeMeta(json::object& obj, const ResourceInfo& r);

// Metadata rules on create: name or generateName, the namespace matching the
// URL, valid labels and annotations. Fills in generated names and defaults:
// uid, creationTimestamp, generation, namespace. `random` supplies entropy.
std::optional<ApiError> prepareCreate(json::object& obj, const ResourceInfo& r, std::string_view urlNamespace,
                                      std::string_view nowRfc3339, const std::string& uid,
                                      const std::string& nameSuffix);

// Metadata rules on update: the name and namespace match the URL; uid and
// creationTimestamp carried over from `old`; generation bumped when the spec changed.
std::optional<ApiError> prepareUpdate(json::object& obj, const json::object& old, const ResourceInfo& r,
                                      std::string_view urlNamespace, std::string_view urlName);

void setResourceVersion(json::object& obj, int64_t revision);
std::string_view objectName(const json::object& obj);
std::string_view objectNamespace(const json::object& obj);
// metadata.resourceVersion parsed as a revision: 0 when absent, -1 when not a number.
int64_t objectResourceVersion(const json::object& obj);

std::string newUid();
// Five characters from the alphabet kube-apiserver uses for generateName.
std::string randomNameSuffix();

}  // namespace trellis::apiserver::registry
