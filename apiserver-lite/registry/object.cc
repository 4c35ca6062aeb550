#include "apiserver-lite/registry/object.h"

#include <sys/random.h>

#include <ctime>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "apiserver-lite/registry/kinds.h"

namespace trellis::apiserver::registry {

using base::ErrorCode;
using base::makeError;

std::string qualifiedResource(const ResourceInfo& r) {
  return r.group.empty() ? r.plural : r.plural + "." + r.group;
}

ApiError ApiError::notFound(const ResourceInfo& r, std::string_view name) {
  return ApiError{404, "NotFound", fmt::format("{} \"{}\" not found", qualifiedResource(r), name), std::string(name),
                  r.group, r.plural, {}};
}

ApiError ApiError::alreadyExists(const ResourceInfo& r, std::string_view name) {
  return ApiError{409, "AlreadyExists", fmt::format("{} \"{}\" already exists", qualifiedResource(r), name),
                  std::string(name), r.group, r.plural, {}};
}

ApiError ApiError::conflict(const ResourceInfo& r, std::string_view name, std::string_view why) {
  return ApiError{409, "Conflict",
                  fmt::format("Operation cannot be fulfilled on {} \"{}\": {}", qualifiedResource(r), name, why),
                  std::string(name), r.group, r.plural, {}};
}

ApiError ApiError::invalid(const ResourceInfo& r, std::string_view name, FieldErrors errs) {
  std::string msg = invalidMessage(r.kind, name, errs);
  return ApiError{422, "Invalid", std::move(msg), std::string(name), r.group, r.kind, std::move(errs)};
}

ApiError ApiError::badRequest(std::string message) { return ApiError{400, "BadRequest", std::move(message)}; }
ApiError ApiError::methodNotAllowed(std::string message) {
  return ApiError{405, "MethodNotAllowed", std::move(message)};
}
ApiError ApiError::gone(std::string message) { return ApiError{410, "Expired", std::move(message)}; }
ApiError ApiError::unsupportedMediaType(std::string message) {
  return ApiError{415, "UnsupportedMediaType", std::move(message)};
}
ApiError ApiError::tooLarge(std::string message) { return ApiError{413, "RequestEntityTooLarge", std::move(message)}; }
ApiError ApiError::internal(std::string message) { return ApiError{500, "InternalError", std::move(message)}; }

json::object statusObject(const ApiError& e) {
  json::object st;
  st["kind"] = "Status";
  st["apiVersion"] = "v1";
  st["metadata"] = json::object();
  st["status"] = "Failure";
  st["message"] = e.message;
  st["reason"] = e.reason;
  if (!e.name.empty() || !e.kind.empty() || !e.causes.empty()) {
    json::object details;
    if (!e.name.empty()) details["name"] = e.name;
    if (!e.group.empty()) details["group"] = e.group;
    if (!e.kind.empty()) details["kind"] = e.kind;
    if (!e.causes.empty()) {
      json::array causes;
      for (const FieldError& f : e.causes) {
        json::object c;
        c["reason"] = f.reason();
        c["message"] = f.message().substr(f.field.size() + 2);
        c["field"] = f.field;
        causes.push_back(std::move(c));
      }
      details["causes"] = std::move(causes);
    }
    st["details"] = std::move(details);
  }
  st["code"] = e.code;
  return st;
}

json::object successStatus(const ResourceInfo& r, std::string_view name) {
  json::object st;
  st["kind"] = "Status";
  st["apiVersion"] = "v1";
  st["metadata"] = json::object();
  st["status"] = "Success";
  json::object details;
  details["name"] = name;
  if (!r.group.empty()) details["group"] = r.group;
  details["kind"] = r.plural;
  st["details"] = std::move(details);
  return st;
}

base::Result<json::object> parseObject(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return makeError(ErrorCode::kInvalidArgument, "the body of the request was in an unknown format: {}", ec.message());
  if (!v.is_object()) return makeError(ErrorCode::kInvalidArgument, "the body of the request must be a JSON object");
  return std::move(v.as_object());
}

namespace {

const json::object* metadataOf(const json::object& obj) {
  auto it = obj.find("metadata");
  return it != obj.end() && it->value().is_object() ? &it->value().as_object() : nullptr;
}

std::string_view stringField(const json::object* o, std::string_view key) {
  if (!o) return {};
  auto it = o->find(key);
  return it != o->end() && it->value().is_string() ? std::string_view(it->value().as_string()) : std::string_view();
}

void validateNameValue(FieldErrors& errs, const std::string& field, std::string_view name, NameRule rule) {
  switch (rule) {
    case NameRule::kSubdomain: appendInvalid(errs, field, name, isDns1123Subdomain); break;
    case NameRule::kLabel: appendInvalid(errs, field, name, isDns1123Label); break;
    case NameRule::kDns1035: appendInvalid(errs, field, name, isDns1035Label); break;
    case NameRule::kPathSegment: appendInvalid(errs, field, name, isPathSegmentName); break;
  }
}

void validateStringMap(FieldErrors& errs, const json::object& meta, std::string_view key, bool labels) {
  auto it = meta.find(key);
  if (it == meta.end() || it->value().is_null()) return;
  std::string field = "metadata." + std::string(key);
  if (!it->value().is_object()) {
    errs.push_back(FieldError::invalid(field, "", "must be a map of strings"));
    return;
  }
  size_t total = 0;
  for (const auto& kv : it->value().as_object()) {
    appendInvalid(errs, field, kv.key(), isQualifiedName);
    if (!kv.value().is_string()) {
      errs.push_back(FieldError::invalid(field + "[" + std::string(kv.key()) + "]", "", "must be a string"));
      continue;
    }
    std::string_view value = kv.value().as_string();
    if (labels) appendInvalid(errs, field, value, isValidLabelValue);
    total += kv.key().size() + value.size();
  }
  if (!labels && total > 256 * 1024) {
    errs.push_back(FieldError{FieldError::Type::kTooLong, field, "", "must have at most 262144 bytes"});
  }
}

FieldErrors validateMeta(const json::object& meta, const ResourceInfo& r) {
  FieldErrors errs;
  validateStringMap(errs, meta, "labels", true);
  validateStringMap(errs, meta, "annotations", false);
  return errs;
}

json::value specOf(const json::object& obj) {
  auto it = obj.find("spec");
  return it == obj.end() ? json::value() : it->value();
}

}  // namespace

std::string_view objectName(const json::object& obj) { return stringField(metadataOf(obj), "name"); }
std::string_view objectNamespace(const json::object& obj) { return stringField(metadataOf(obj), "namespace"); }

int64_t objectResourceVersion(const json::object& obj) {
  std::string_view rv = stringField(metadataOf(obj), "resourceVersion");
  if (rv.empty()) return 0;
  int64_t v = 0;
  for (char c : rv) {
    if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

void setResourceVersion(json::object& obj, int64_t revision) {
  obj["metadata"].as_object()["resourceVersion"] = std::to_string(revision);
}

std::optional<ApiError> checkTypeMeta(json::object& obj, const ResourceInfo& r) {
  std::string_view apiVersion = stringField(&obj, "apiVersion");
  std::string_view kind = stringField(&obj, "kind");
  if (!apiVersion.empty() && apiVersion != r.apiVersion()) {
    return ApiError::badRequest(fmt::format("the API version in the data ({}) does not match the expected API version ({})",
                                            apiVersion, r.apiVersion()));
  }
  if (!kind.empty() && kind != r.kind) {
    return ApiError::badRequest(fmt::format("the kind in the data ({}) does not match the expected kind ({})", kind,
                                            r.kind));
  }
  obj["apiVersion"] = r.apiVersion();
  obj["kind"] = r.kind;
  return std::nullopt;
}

std::optional<ApiError> prepareCreate(json::object& obj, const ResourceInfo& r, std::string_view urlNamespace,
                                      std::string_view nowRfc3339, const std::string& uid,
                                      const std::string& nameSuffix) {
  if (auto e = checkTypeMeta(obj, r)) return e;
  json::value& metaValue = obj["metadata"];
  if (metaValue.is_null()) metaValue = json::object();
  if (!metaValue.is_object()) return ApiError::badRequest("metadata must be an object");
  json::object& meta = metaValue.as_object();
  FieldErrors errs;
  std::string name(stringField(&meta, "name"));
  std::string_view generateName = stringField(&meta, "generateName");
  if (name.empty() && !generateName.empty()) {
    // The prefix is checked as a name would be (with a trailing '-' allowed).
    std::string probe(generateName);
    if (!probe.empty() && probe.back() == '-') probe += 'x';
    validateNameValue(errs, "metadata.generateName", probe, r.nameRule);
    if (!errs.empty()) errs.back().value = goQuote(generateName);
    name = std::string(generateName.substr(0, std::min<size_t>(generateName.size(), 58))) + nameSuffix;
    meta["name"] = name;
  } else if (name.empty()) {
    errs.push_back(FieldError::required("metadata.name", "name or generateName is required"));
  } else {
    validateNameValue(errs, "metadata.name", name, r.nameRule);
  }
  std::string_view ns = stringField(&meta, "namespace");
  if (r.namespaced) {
    if (ns.empty()) {
      meta["namespace"] = urlNamespace;
    } else if (ns != urlNamespace) {
      return ApiError::badRequest("the namespace of the provided object does not match the namespace sent on the request");
    }
  } else if (!ns.empty()) {
    meta.erase("namespace");  // cluster-scoped: kube-apiserver drops it
  }
  FieldErrors metaErrs = validateMeta(meta, r);
  errs.insert(errs.end(), metaErrs.begin(), metaErrs.end());
  meta["uid"] = uid;  // before defaulting: a Job's generated selector names it
  applyDefaults(r, obj, true);
  FieldErrors kindErrs = validateKind(r, obj, nullptr);
  errs.insert(errs.end(), kindErrs.begin(), kindErrs.end());
  if (!errs.empty()) return ApiError::invalid(r, name, std::move(errs));
  json::object& m = obj["metadata"].as_object();  // defaulting may have moved it
  m["uid"] = uid;
  m["creationTimestamp"] = nowRfc3339;
  if (obj.contains("spec")) m["generation"] = 1;  // kinds without a spec have no generation
  else m.erase("generation");
  m.erase("resourceVersion");
  m.erase("deletionTimestamp");
  m.erase("deletionGracePeriodSeconds");
  m.erase("selfLink");
  return std::nullopt;
}

std::optional<ApiError> prepareUpdate(json::object& obj, const json::object& old, const ResourceInfo& r,
                                      std::string_view urlNamespace, std::string_view urlName) {
  if (auto e = checkTypeMeta(obj, r)) return e;
  json::value& metaValue = obj["metadata"];
  if (!metaValue.is_object()) return ApiError::badRequest("metadata must be an object");
  json::object& meta = metaValue.as_object();
  std::string_view name = stringField(&meta, "name");
  if (name != urlName) {
    return ApiError::badRequest(fmt::format("the name of the object ({}) does not match the name on the URL ({})", name,
                                            urlName));
  }
  std::string_view ns = stringField(&meta, "namespace");
  if (r.namespaced && !ns.empty() && ns != urlNamespace) {
    return ApiError::badRequest("the namespace of the provided object does not match the namespace sent on the request");
  }
  if (r.namespaced) meta["namespace"] = urlNamespace;
  FieldErrors errs = validateMeta(meta, r);
  if (!errs.empty()) return ApiError::invalid(r, name, std::move(errs));
  const json::object* oldMeta = metadataOf(old);
  for (std::string_view keep : {"uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"}) {
    auto it = oldMeta ? oldMeta->find(keep) : nullptr;
    if (oldMeta && it != oldMeta->end()) {
      meta[keep] = it->value();
    } else {
      meta.erase(keep);
    }
  }
  if (specOf(obj) != specOf(old)) {
    auto gen = meta.find("generation");
    int64_t g = gen != meta.end() && gen->value().is_int64() ? gen->value().as_int64() : 0;
    meta["generation"] = g + 1;
  }
  return std::nullopt;
}

std::string newUid() {
  unsigned char b[16];
  if (getrandom(b, sizeof b, 0) != sizeof b) throw std::runtime_error("getrandom failed");
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                     b[15]);
}

std::string randomNameSuffix() {
  static constexpr char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  unsigned char b[5];
  if (getrandom(b, sizeof b, 0) != sizeof b) throw std::runtime_error("getrandom failed");
  std::string out;
  for (unsigned char c : b) out += kAlphabet[c % (sizeof kAlphabet - 1)];
  return out;
}

}  // namespace trellis::apiserver::registry
