#include "apiserver-lite/server/api_handler.h"

#include <array>
#include <charconv>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <fmt/format.h>

#include "apiserver-lite/registry/allocator.h"
#include "apiserver-lite/registry/kinds.h"
#include "apiserver-lite/registry/object.h"
#include "apiserver-lite/registry/patch.h"
#include "apiserver-lite/registry/protobuf.h"
#include "apiserver-lite/registry/table.h"
#include "apiserver-lite/server/authz.h"
#include "common/base/base64.h"
#include "common/base/build_info.h"
#include "common/base/log.h"
#include "common/http/certgen.h"
#include "common/kube/object.h"
#include "common/kube/yaml.h"

namespace trellis::apiserver {

using namespace registry;
using storage::Event;
using storage::KeyValue;
using storage::Revision;
using storage::Write;
using kube::rfc3339Now;

namespace {

const base::Logger& log() {
  static base::Logger l("apiserver");
  return l;
}

std::string urlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      unsigned byte = 0;
      std::from_chars(s.data() + i + 1, s.data() + i + 3, byte, 16);  // two hex digits, checked above
      out += static_cast<char>(byte);
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parseQuery(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    size_t eq = kv.find('=');
    out[urlDecode(kv.substr(0, eq))] = eq == std::string_view::npos ? "" : urlDecode(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

std::vector<std::string_view> splitPath(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Does the Accept header prefer the aggregated discovery document (v2)?
bool wantsAggregated(std::string_view accept) {
  std::string_view first = accept.substr(0, accept.find(','));
  return first.find("g=apidiscovery.k8s.io") != std::string_view::npos && first.find("v=v2") != std::string_view::npos &&
         first.find("v=v2beta1") == std::string_view::npos && first.find("as=APIGroupDiscoveryList") != std::string_view::npos;
}

json::array discoveryVerbs(const ResourceInfo& r) {
  return r.review ? json::array{"create"}
                  : json::array{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"};
}

// dryRun=All (checked by the handler: no other value gets this far).
bool isDryRun(std::string_view query) { return query.find("dryRun=All") != std::string_view::npos; }
bool isDryRun(const std::map<std::string, std::string>& q) { return q.count("dryRun") && q.at("dryRun") == "All"; }

// A DELETE's options: from the DeleteOptions body (where kubectl puts them)
// and the query (dryRun=All, propagationPolicy=..., as client-go may send).
struct DeleteOptions {
  bool dryRun = false;
  std::string propagation;           // "", "Orphan", "Background", "Foreground"
  std::string uid, resourceVersion;  // preconditions
  bool evicted = false;              // answer success as the eviction subresource does (201 Status)
};

base::Result<DeleteOptions> deleteOptions(const http::Request& req, const json::value* body = nullptr) {
  DeleteOptions o;
  o.dryRun = isDryRun(req.query());
  auto q = parseQuery(req.query());
  if (q.count("propagationPolicy")) o.propagation = q["propagationPolicy"];
  if (q.count("orphanDependents") && o.propagation.empty()) o.propagation = q["orphanDependents"] == "true" ? "Orphan" : "Background";
  json::value parsed;
  if (!body && !req.body.empty()) {
    boost::system::error_code ec;
    parsed = json::parse(req.body, ec);
    if (ec || !parsed.is_object()) return base::makeError(base::ErrorCode::kInvalidArgument, "invalid DeleteOptions body");
    body = &parsed;
  }
  if (body && !body->is_null()) {
    if (!body->is_object()) return base::makeError(base::ErrorCode::kInvalidArgument, "invalid DeleteOptions body");
    const json::object& b = body->get_object();
    if (const json::value* dry = b.if_contains("dryRun"); dry && !dry->is_null()) {
      if (!dry->is_array()) return base::makeError(base::ErrorCode::kInvalidArgument, "DeleteOptions.dryRun must be a list");
      for (const json::value& v : dry->get_array()) {
        if (!v.is_string() || v.get_string() != "All") {
          return base::makeError(base::ErrorCode::kInvalidArgument,
                                 "dryRun: Unsupported value: {}: supported values: \"All\"", json::serialize(v));
        }
      }
      o.dryRun = o.dryRun || !dry->get_array().empty();
    }
    if (const json::value* p = b.if_contains("propagationPolicy"); p && p->is_string()) o.propagation = p->get_string();
    if (const json::value* orphan = b.if_contains("orphanDependents"); orphan && orphan->is_bool()) {
      if (!o.propagation.empty()) {
        return base::makeError(base::ErrorCode::kFailedPrecondition,
                               "propagationPolicy: Invalid value: \"{}\": orphanDependents and deletionPropagation cannot be both set",
                               o.propagation);
      }
      o.propagation = orphan->get_bool() ? "Orphan" : "Background";
    }
    if (const json::value* pre = b.if_contains("preconditions"); pre && pre->is_object()) {
      if (const json::value* u = pre->get_object().if_contains("uid"); u && u->is_string()) o.uid = u->get_string();
      if (const json::value* rv = pre->get_object().if_contains("resourceVersion"); rv && rv->is_string()) {
        o.resourceVersion = rv->get_string();
      }
    }
  }
  if (!o.propagation.empty() && o.propagation != "Orphan" && o.propagation != "Background" && o.propagation != "Foreground") {
    return base::makeError(base::ErrorCode::kFailedPrecondition,
                           "propagationPolicy: Unsupported value: \"{}\": supported values: \"Foreground\", \"Background\", \"Orphan\"",
                           o.propagation);
  }
  return o;
}

// What a successful eviction answers.
json::object evictedStatus() {
  return json::object{{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", json::object{}}, {"status", "Success"},
                      {"code", 201}};
}

// A DeleteOptions error as kube-apiserver answers it: 400 for an unreadable
// body, 422 Invalid (kind DeleteOptions) for values validation rejects.
ApiError deleteOptionsError(const base::Error& e) {
  if (e.code() != base::ErrorCode::kFailedPrecondition) return ApiError::badRequest(e.message());
  return ApiError{422, "Invalid", fmt::format("DeleteOptions.meta.k8s.io \"\" is invalid: {}", e.message()), "",
                  "meta.k8s.io", "DeleteOptions"};
}

// The kind list and watch query errors are reported against.
const ResourceInfo& listOptions() {
  static const ResourceInfo r{"meta.k8s.io", "v1", "ListOptions.meta.k8s.io", "", "", false, {}, {}};
  return r;
}

// What kube-apiserver's decoder rejects or drops: a malformed quantity is a
// 400; fields the kind does not have, with fieldValidation=Strict a 400
// worded as its strict decoding error, otherwise dropped, as decoding into
// kube-apiserver's types drops them (never stored).
std::optional<ApiError> decodingCheck(const ResourceInfo& r, json::object& obj, std::string_view query) {
  if (auto bad = malformedQuantity(r, obj)) return ApiError::badRequest(std::move(*bad));
  std::vector<std::string> unknown = unknownFields(r, obj);
  if (unknown.empty()) return std::nullopt;
  if (query.find("fieldValidation=Strict") != std::string_view::npos) {
    std::string msg = fmt::format("{} in version {:?} cannot be handled as a {}: strict decoding error: ", r.kind,
                                  r.version, r.kind);
    for (size_t i = 0; i < unknown.size(); ++i) msg += fmt::format("{}unknown field {:?}", i ? ", " : "", unknown[i]);
    return ApiError::badRequest(std::move(msg));
  }
  for (const std::string& f : unknown) {
    if (f.starts_with("metadata.")) {
      if (json::value* m = obj.if_contains("metadata"); m && m->is_object()) m->get_object().erase(f.substr(9));
    } else {
      obj.erase(f);
    }
  }
  return std::nullopt;
}

// Writes and blocks until the store answers (startup and background work only).
base::Result<KeyValue> writeAndWait(storage::Store& store, Write w) {
  std::promise<base::Result<KeyValue>> p;
  auto f = p.get_future();
  store.write(std::move(w), [&p](base::Result<KeyValue> r) { p.set_value(std::move(r)); });
  return f.get();
}

// A label selector: equality- and set-based requirements, ANDed.
struct LabelSelector {
  struct Req {
    enum class Op { kEq, kNe, kIn, kNotIn, kExists, kNotExists } op;
    std::string key;
    std::set<std::string> values;
  };
  std::vector<Req> reqs;

  static base::Result<LabelSelector> parse(std::string_view text) {
    LabelSelector sel;
    // Split on commas outside parentheses.
    std::vector<std::string_view> parts;
    int depth = 0;
    size_t start = 0;
    for (size_t i = 0; i <= text.size(); ++i) {
      if (i == text.size() || (text[i] == ',' && depth == 0)) {
        parts.push_back(trim(text.substr(start, i - start)));
        start = i + 1;
      } else if (text[i] == '(') {
        ++depth;
      } else if (text[i] == ')') {
        --depth;
      }
    }
    auto bad = [&](std::string_view part) {
      return base::makeError(base::ErrorCode::kInvalidArgument, "unable to parse requirement: {}", part);
    };
    for (std::string_view p : parts) {
      if (p.empty()) {
        if (parts.size() == 1) break;
        return bad(p);
      }
      Req r;
      size_t sp;
      if (p.front() == '!') {
        r.op = Req::Op::kNotExists;
        r.key = std::string(trim(p.substr(1)));
      } else if ((sp = p.find(" notin ")) != std::string_view::npos || (sp = p.find(" in ")) != std::string_view::npos) {
        bool notin = p.find(" notin ") != std::string_view::npos;
        r.op = notin ? Req::Op::kNotIn : Req::Op::kIn;
        r.key = std::string(trim(p.substr(0, sp)));
        std::string_view rest = trim(p.substr(sp + (notin ? 7 : 4)));
        if (rest.size() < 2 || rest.front() != '(' || rest.back() != ')') return bad(p);
        rest = rest.substr(1, rest.size() - 2);
        while (true) {
          size_t comma = rest.find(',');
          std::string_view v = trim(rest.substr(0, comma));
          if (!isValidLabelValue(v).empty()) return bad(p);
          r.values.insert(std::string(v));
          if (comma == std::string_view::npos) break;
          rest.remove_prefix(comma + 1);
        }
      } else if ((sp = p.find("!=")) != std::string_view::npos) {
        r.op = Req::Op::kNe;
        r.key = std::string(trim(p.substr(0, sp)));
        r.values.insert(std::string(trim(p.substr(sp + 2))));
      } else if ((sp = p.find('=')) != std::string_view::npos) {
        r.op = Req::Op::kEq;
        r.key = std::string(trim(p.substr(0, sp)));
        size_t skip = sp + 1 < p.size() && p[sp + 1] == '=' ? 2 : 1;
        r.values.insert(std::string(trim(p.substr(sp + skip))));
      } else {
        r.op = Req::Op::kExists;
        r.key = std::string(p);
      }
      if (!isQualifiedName(r.key).empty()) return bad(p);
      for (const std::string& v : r.values) {
        if (!isValidLabelValue(v).empty()) return bad(p);
      }
      sel.reqs.push_back(std::move(r));
    }
    return sel;
  }

  bool matches(const json::object& obj) const {
    const json::object* labels = nullptr;
    if (auto m = obj.find("metadata"); m != obj.end() && m->value().is_object()) {
      if (auto l = m->value().as_object().find("labels"); l != m->value().as_object().end() && l->value().is_object()) {
        labels = &l->value().as_object();
      }
    }
    for (const Req& r : reqs) {
      std::optional<std::string_view> v;
      if (labels) {
        if (auto it = labels->find(r.key); it != labels->end() && it->value().is_string()) v = it->value().as_string();
      }
      switch (r.op) {
        case Req::Op::kExists: if (!v) return false; break;
        case Req::Op::kNotExists: if (v) return false; break;
        case Req::Op::kEq:
        case Req::Op::kIn: if (!v || !r.values.count(std::string(*v))) return false; break;
        case Req::Op::kNe:
        case Req::Op::kNotIn: if (v && r.values.count(std::string(*v))) return false; break;
      }
    }
    return true;
  }
};

// The field selectors kube-apiserver supports: metadata.name and
// metadata.namespace everywhere, plus each kind's own.
const std::vector<std::string_view>& selectableFields(std::string_view kind) {
  static const std::vector<std::string_view> none;
  static const std::map<std::string_view, std::vector<std::string_view>> table = {
      {"Event", {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                 "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                 "reportingComponent", "source", "type"}},
      {"Pod", {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
               "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"}},
      {"Secret", {"type"}},
      {"Namespace", {"status.phase"}},
      {"Node", {"spec.unschedulable"}},
      {"PersistentVolumeClaim", {}},
      {"ReplicaSet", {"status.replicas"}},
  };
  auto it = table.find(kind);
  return it == table.end() ? none : it->second;
}

// A field's value as a selector compares it: strings as they are, booleans
// and numbers in their JSON spelling, absent as "".
std::string fieldValue(const json::object& obj, std::string_view dotted) {
  const json::object* cur = &obj;
  const json::value* v = nullptr;
  while (cur) {
    size_t dot = dotted.find('.');
    auto it = cur->find(dotted.substr(0, dot));
    if (it == cur->end()) return "";
    v = &it->value();
    if (dot == std::string_view::npos) break;
    dotted.remove_prefix(dot + 1);
    cur = v->is_object() ? &v->as_object() : nullptr;
    if (!cur) return "";
  }
  if (!v) return "";
  if (v->is_string()) return std::string(v->as_string());
  if (v->is_null()) return "";
  return json::serialize(*v);
}

struct FieldSelector {
  struct Req {
    std::string field;
    std::string value;
    bool negate;
  };
  std::vector<Req> reqs;

  static base::Result<FieldSelector> parse(std::string_view text, std::string_view kind) {
    FieldSelector sel;
    const auto& extra = selectableFields(kind);
    while (!text.empty()) {
      size_t comma = text.find(',');
      std::string_view p = trim(text.substr(0, comma));
      Req r;
      size_t ne = p.find("!="), eq = p.find('=');
      if (ne != std::string_view::npos) {
        r = Req{std::string(trim(p.substr(0, ne))), std::string(trim(p.substr(ne + 2))), true};
      } else if (eq != std::string_view::npos) {
        size_t skip = eq + 1 < p.size() && p[eq + 1] == '=' ? 2 : 1;
        r = Req{std::string(trim(p.substr(0, eq))), std::string(trim(p.substr(eq + skip))), false};
      } else {
        return base::makeError(base::ErrorCode::kInvalidArgument, "invalid selector: '{}'; can't understand '{}'", text, p);
      }
      bool known = r.field == "metadata.name" || r.field == "metadata.namespace" ||
                   std::find(extra.begin(), extra.end(), r.field) != extra.end();
      if (!known) return base::makeError(base::ErrorCode::kInvalidArgument, "field label not supported: {}", r.field);
      sel.reqs.push_back(std::move(r));
      if (comma == std::string_view::npos) break;
      text.remove_prefix(comma + 1);
    }
    return sel;
  }

  bool matches(const json::object& obj) const {
    for (const Req& r : reqs) {
      std::string v = fieldValue(obj, r.field);
      if ((v == r.value) == r.negate) return false;
    }
    return true;
  }
};

// application/json, with or without parameters (charset=utf-8).
bool isJson(std::string_view contentType) {
  std::string_view type = trim(contentType.substr(0, contentType.find(';')));
  return http::equalsIgnoreCase(type, "application/json");
}

// Makes a POST/PUT body JSON: protobuf (what kubectl's typed commands send)
// is decoded into the equivalent JSON object; any other type is refused.
std::optional<ApiError> jsonBody(http::Request& req) {
  std::string_view contentType = req.headers.get("content-type").value_or("application/json");
  if (isJson(contentType)) return std::nullopt;
  if (trim(contentType.substr(0, contentType.find(';'))) == kProtobufContentType) {
    auto obj = decodeKubeProtobuf(req.body);
    if (!obj) return ApiError::badRequest(obj.error().message());
    req.body = json::serialize(*obj);
    req.headers.set("content-type", "application/json");
    return std::nullopt;
  }
  return ApiError::unsupportedMediaType(
      "the body of the request was in an unknown format - accepted media types include: application/json, "
      "application/vnd.kubernetes.protobuf");
}

// The labelSelector and fieldSelector query parameters of a list or watch.
struct Selector {
  LabelSelector labels;
  FieldSelector fields;

  static base::Result<Selector> fromQuery(const std::map<std::string, std::string>& q, std::string_view kind) {
    Selector sel;
    if (auto it = q.find("labelSelector"); it != q.end()) {
      auto s = LabelSelector::parse(it->second);
      if (!s) return std::move(s).error();
      sel.labels = std::move(*s);
    }
    if (auto it = q.find("fieldSelector"); it != q.end()) {
      auto s = FieldSelector::parse(it->second, kind);
      if (!s) return std::move(s).error();
      sel.fields = std::move(*s);
    }
    return sel;
  }
  bool matches(const json::object& obj) const { return labels.matches(obj) && fields.matches(obj); }
};

void sendJson(const std::shared_ptr<http::ResponseWriter>& w, int status, const json::value& body) {
  http::Response r;
  r.status = status;
  r.headers.add("content-type", "application/json");
  r.headers.add("cache-control", "no-cache, private");
  r.body = json::serialize(body);
  r.body += '\n';
  w->respond(std::move(r));
}

void sendError(const std::shared_ptr<http::ResponseWriter>& w, const ApiError& e) { sendJson(w, e.code, statusObject(e)); }

// The object stored under a key, parsed, with its resourceVersion set.
std::optional<json::object> decode(const KeyValue& kv) {
  boost::system::error_code ec;
  json::value v = json::parse(kv.value, ec);
  if (ec || !v.is_object()) return std::nullopt;
  json::object obj = std::move(v.as_object());
  setResourceVersion(obj, kv.modRevision);
  return obj;
}

ApiError fromStoreError(const base::Error& e, const ResourceInfo& r, std::string_view name) {
  switch (e.code()) {
    case base::ErrorCode::kNotFound: return ApiError::notFound(r, name);
    case base::ErrorCode::kAlreadyExists: return ApiError::alreadyExists(r, name);
    case base::ErrorCode::kConflict:
      return ApiError::conflict(r, name, "the object has been modified; please apply your changes to the latest version and try again");
    case base::ErrorCode::kOutOfRange: return ApiError::gone(e.message());
    default:
      log().error("storage failed", {{"resource", r.plural}, {"name", name}, {"error", e.message()}});
      return ApiError::internal(e.message());
  }
}

}  // namespace

// Which part of an object a write may change: for kinds with a status
// subresource the main resource cannot change status, and /status changes
// nothing but status (kube-apiserver's status strategies).
// Which part of an object a write is for: the main resource, /status, or
// /scale (autoscaling/v1 Scale: spec.replicas of a Deployment or ReplicaSet).
enum class Part { kMain, kStatus, kScale };

// The autoscaling/v1 Scale view of a workload.
json::object toScale(const json::object& obj) {
  const json::object& meta = obj.at("metadata").as_object();
  json::object m;
  for (const char* k : {"name", "namespace", "uid", "resourceVersion", "creationTimestamp"}) {
    if (const json::value* v = meta.if_contains(k)) m[k] = *v;
  }
  const json::value* spec = obj.if_contains("spec");
  const json::value* status = obj.if_contains("status");
  auto intAt = [](const json::value* o, std::string_view k) -> int64_t {
    const json::value* v = o && o->is_object() ? o->get_object().if_contains(k) : nullptr;
    return v && v->is_int64() ? v->get_int64() : 0;
  };
  std::string selector;
  if (const json::value* sel = spec && spec->is_object() ? spec->get_object().if_contains("selector") : nullptr;
      sel && sel->is_object()) {
    if (const json::value* ml = sel->get_object().if_contains("matchLabels"); ml && ml->is_object()) {
      for (const auto& [k, v] : ml->get_object()) {
        selector += (selector.empty() ? "" : ",") + std::string(k) + "=" + (v.is_string() ? std::string(v.get_string()) : "");
      }
    }
  }
  return json::object{{"kind", "Scale"},
                      {"apiVersion", "autoscaling/v1"},
                      {"metadata", std::move(m)},
                      {"spec", json::object{{"replicas", intAt(spec, "replicas")}}},
                      {"status", json::object{{"replicas", intAt(status, "replicas")}, {"selector", selector}}}};
}

// The workload `obj` with the replicas (and the resourceVersion precondition) of a Scale.
base::Result<json::object> fromScale(json::object obj, const json::object& scale) {
  const json::value* spec = scale.if_contains("spec");
  const json::value* replicas = spec && spec->is_object() ? spec->get_object().if_contains("replicas") : nullptr;
  if (replicas && !replicas->is_int64()) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "Scale spec.replicas must be an integer");
  }
  obj["spec"].as_object()["replicas"] = replicas ? replicas->get_int64() : 0;
  json::object& meta = obj["metadata"].as_object();
  const json::value* sm = scale.if_contains("metadata");
  const json::value* rv = sm && sm->is_object() ? sm->get_object().if_contains("resourceVersion") : nullptr;
  if (rv && rv->is_string() && !rv->get_string().empty()) meta["resourceVersion"] = *rv;
  else meta.erase("resourceVersion");
  return obj;
}

void applyPart(json::object& obj, const json::object& old, const ResourceInfo& r, Part part) {
  bool hasStatus = std::find(r.subresources.begin(), r.subresources.end(), "status") != r.subresources.end();
  if (!hasStatus) return;
  auto oldStatus = old.find("status");
  if (part != Part::kStatus) {
    if (oldStatus != old.end()) obj["status"] = oldStatus->value();
    else obj.erase("status");
    return;
  }
  json::object out = old;
  auto newStatus = obj.find("status");
  if (newStatus != obj.end()) out["status"] = newStatus->value();
  else out.erase("status");
  if (auto rv = obj.find("metadata"); rv != obj.end() && rv->value().is_object()) {
    auto v = rv->value().as_object().find("resourceVersion");
    if (v != rv->value().as_object().end()) out["metadata"].as_object()["resourceVersion"] = v->value();
  }
  obj = std::move(out);
}

const json::array* finalizersOf(const json::object& obj) {
  auto m = obj.find("metadata");
  if (m == obj.end() || !m->value().is_object()) return nullptr;
  auto f = m->value().as_object().find("finalizers");
  return f != m->value().as_object().end() && f->value().is_array() ? &f->value().as_array() : nullptr;
}

bool hasFinalizers(const json::object& obj) {
  const json::array* f = finalizersOf(obj);
  return f && !f->empty();
}

bool beingDeleted(const json::object& obj) {
  auto m = obj.find("metadata");
  return m != obj.end() && m->value().is_object() && m->value().as_object().contains("deletionTimestamp");
}

// While an object is being deleted, finalizers may only be removed.
std::optional<ApiError> checkFinalizers(const json::object& obj, const json::object& old, const ResourceInfo& r) {
  if (!beingDeleted(old)) return std::nullopt;
  const json::array* before = finalizersOf(old);
  const json::array* after = finalizersOf(obj);
  if (!after) return std::nullopt;
  for (const json::value& f : *after) {
    if (!before || std::find(before->begin(), before->end(), f) == before->end()) {
      FieldErrors errs{FieldError::forbidden("metadata.finalizers", "no new finalizers can be added if the object is being deleted")};
      return ApiError::invalid(r, objectName(obj), std::move(errs));
    }
  }
  return std::nullopt;
}

struct ApiHandler::Impl {
  storage::Store& store;
  storage::WatchCache& cache;
  ApiOptions options;
  ServiceAllocator allocator;
  RbacAuthorizer authz{cache};
  // apiserver_request_total by resource (index in servedResources()) and
  // verb, created up front so counting costs no lookup.
  static constexpr std::string_view kVerbs[] = {"get", "list", "watch", "create", "update", "patch", "delete",
                                                 "deletecollection"};
  std::vector<std::array<base::Counter*, std::size(kVerbs)>> requestCounters;
  base::Counter* exceptions = nullptr;  // requests that ended in an unexpected exception: bugs
  Impl(storage::Store& s, storage::WatchCache& c, ApiOptions o)
      : store(s), cache(c), options(std::move(o)), allocator(*Ipv4Cidr::parse(options.serviceClusterIpRange)) {
    if (!options.metrics) return;
    exceptions = &options.metrics->counter("apiserver_request_exceptions_total",
                                           "Requests that ended in an unexpected exception (each one is a bug)");
    for (const ResourceInfo& r : servedResources()) {
      auto& row = requestCounters.emplace_back();
      for (size_t v = 0; v < std::size(kVerbs); ++v) {
        row[v] = &options.metrics->counter("apiserver_request_total", "Authorized requests by verb, group and resource",
                                            {{"verb", std::string(kVerbs[v])}, {"group", r.group}, {"resource", r.plural}});
      }
    }
  }
  base::Counter* requestCounter(const ResourceInfo& r, std::string_view verb) {
    if (requestCounters.empty()) return nullptr;
    size_t row = static_cast<size_t>(&r - servedResources().data());
    for (size_t v = 0; v < std::size(kVerbs); ++v) {
      if (kVerbs[v] == verb) return requestCounters[row][v];
    }
    return nullptr;
  }

  bool isService(const ResourceInfo& r) const { return r.kind == "Service" && r.group.empty(); }

  // What stored Services use (ClusterIPs, nodePorts), kept current by a
  // watch on the cache (its events arrive at commit, before the writer is
  // answered), so an allocation costs a lookup, not a decode of every Service.
  std::once_flag useOnce;
  std::mutex useMu;
  std::unordered_map<std::string, ServiceAllocator::InUse> useByKey;
  ServiceAllocator::InUse use;
  storage::WatchCache::WatchId useWatch = 0;

  void followServiceUse(const ResourceInfo& r) {
    auto usesOf = [](const KeyValue& kv) {
      std::vector<json::object> one;
      if (auto o = decode(kv)) one.push_back(std::move(*o));
      return ServiceAllocator::collect(one);
    };
    storage::Snapshot snap = cache.list(r.keyPrefix());
    {
      std::lock_guard g(useMu);
      for (const KeyValue& kv : snap.items) use.add(useByKey[kv.key] = usesOf(kv));
    }
    auto id = cache.watch(r.keyPrefix(), snap.revision, [this, usesOf](const std::vector<storage::Event>& events) {
      std::lock_guard g(useMu);
      for (const storage::Event& e : events) {
        auto it = useByKey.find(e.kv.key);
        if (it != useByKey.end()) {
          use.remove(it->second);
          useByKey.erase(it);
        }
        if (e.type == storage::Event::Type::kPut) use.add(useByKey[e.kv.key] = usesOf(e.kv));
      }
    });
    if (id) useWatch = *id;
  }

  // Allocates a Service's ClusterIP and nodePorts (create: old == nullptr).
  base::Result<ServiceAllocator::Reservation> allocateService(json::object& obj, const json::object* old,
                                                               const ResourceInfo& r) {
    std::call_once(useOnce, [&] { followServiceUse(r); });
    std::lock_guard g(useMu);
    return allocator.allocate(obj, old, [&]() -> const ServiceAllocator::InUse& { return use; });
  }
  ApiError allocationError(const ResourceInfo& r, std::string_view name, const base::Error& e) {
    if (e.code() == base::ErrorCode::kResourceExhausted) {
      return ApiError::internal("Internal error occurred: failed to allocate: " + e.message());
    }
    // "field: Invalid value: <value>: detail" -> a field error, so the Status
    // has the causes kubectl prints.
    const std::string& m = e.message();
    size_t colon = m.find(": Invalid value: ");
    FieldError fe{FieldError::Type::kInvalid, m.substr(0, colon), "", ""};
    if (colon != std::string::npos) {
      std::string rest = m.substr(colon + 17);
      size_t sep = rest.rfind("]: ") != std::string::npos && rest.front() == '[' ? rest.find("]: ") + 1 : rest.find(": ");
      fe.value = rest.substr(0, sep);
      fe.detail = sep == std::string::npos ? "" : rest.substr(sep + 2);
    } else {
      fe.detail = m;
    }
    return ApiError::invalid(r, name, {fe});
  }
  // The namespace finalizer's thread and its wake-up.
  std::thread finalizer;
  std::mutex finMu;
  std::condition_variable finCv;
  bool finStop = false;
  bool finWake = false;

  ~Impl() {
    if (useWatch) cache.unwatch(useWatch);
    {
      std::lock_guard g(finMu);
      finStop = true;
    }
    finCv.notify_all();
    if (finalizer.joinable()) finalizer.join();
    {
      std::lock_guard g(watchMu);
      deadlineStop = true;
    }
    watchCv.notify_all();
    deadlineThread.join();
  }
  void wakeFinalizer() {
    {
      std::lock_guard g(finMu);
      finWake = true;
    }
    finCv.notify_all();
  }
  void runFinalizer();
  bool finalizeNamespace(const std::string& ns);
  // Watches with a timeoutSeconds, by deadline; one thread ends them.
  struct WatchDeadline {
    storage::WatchCache::WatchId id;
    std::shared_ptr<http::ResponseWriter> writer;
    // Set for watches with allowWatchBookmarks: writes a BOOKMARK at a revision.
    std::function<void(Revision)> bookmark;
    bool timeout = true;  // false: a periodic bookmark, rescheduled
  };
  std::mutex watchMu;
  std::condition_variable watchCv;
  std::multimap<std::chrono::steady_clock::time_point, WatchDeadline> deadlines;
  bool deadlineStop = false;
  std::thread deadlineThread{[this] { runWatchDeadlines(); }};
  void runWatchDeadlines();

  // Every write of a request goes through here. dryRun=All: nothing is
  // stored; `done` gets what the store would have (for a delete, the object).
  void write(Write w, bool dryRun, std::function<void(base::Result<KeyValue>)> done) {
    if (!dryRun) return store.write(std::move(w), std::move(done));
    KeyValue kv;
    kv.key = w.key;
    kv.modRevision = w.expected;
    if (w.op == Write::Op::kDelete) {
      auto current = cache.get(w.key);
      if (!current) return done(std::move(current).error());
      kv = *current;
    } else {
      kv.value = std::move(w.value);
    }
    done(std::move(kv));
  }

  void handle(http::Request& req, const UserInfo& user, std::shared_ptr<http::ResponseWriter> w);
  // Sends 403 and returns false unless RBAC allows the request.
  bool authorized(const UserInfo& user, const RequestAttributes& a, const std::shared_ptr<http::ResponseWriter>& w);
  void review(const ResourceInfo& r, const UserInfo& user, http::Request& req, const std::shared_ptr<http::ResponseWriter>& w);
  void discovery(const std::vector<std::string_view>& segs, const std::shared_ptr<http::ResponseWriter>& w);
  // apidiscovery.k8s.io/v2 APIGroupDiscoveryList: /api (core) or /apis (the groups) in one answer.
  void aggregatedDiscovery(bool core, const std::shared_ptr<http::ResponseWriter>& w);
  void openapi(const std::vector<std::string_view>& segs, const std::shared_ptr<http::ResponseWriter>& w);
  void list(const ResourceInfo& r, std::string_view ns, const std::map<std::string, std::string>& q, bool table,
            const std::shared_ptr<http::ResponseWriter>& w);
  void watch(const ResourceInfo& r, std::string_view ns, const std::map<std::string, std::string>& q, bool table,
             const std::shared_ptr<http::ResponseWriter>& w);
  void create(const ResourceInfo& r, std::string_view ns, http::Request& req, const std::shared_ptr<http::ResponseWriter>& w);
  void update(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req, Part part,
              const std::shared_ptr<http::ResponseWriter>& w);
  void deleteCollection(const ResourceInfo& r, std::string_view ns, const std::map<std::string, std::string>& q,
                        const std::shared_ptr<http::ResponseWriter>& w);
  void commitUpdate(const ResourceInfo& r, std::string_view ns, std::string_view name, json::object obj,
                    const json::object& old, const KeyValue& current, Part part, bool dryRun,
                    const std::shared_ptr<http::ResponseWriter>& w, std::function<bool()> retryOnConflict);
  void remove(const ResourceInfo& r, std::string_view ns, std::string_view name, const DeleteOptions& opts,
              const std::shared_ptr<http::ResponseWriter>& w, int tries = 0);
  void patch(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req, Part part,
             const std::shared_ptr<http::ResponseWriter>& w);
  std::optional<ApiError> checkNamespace(std::string_view ns);
  base::Status ensureObject(const ResourceInfo& r, json::object obj, std::initializer_list<std::string_view> replace = {});
  // pods/<name>/binding: assigns the pod to the Binding's target node, once.
  void bind(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req,
            const std::shared_ptr<http::ResponseWriter>& w);
  // pods/<name>/eviction: deletes the pod unless the one PodDisruptionBudget
  // selecting it allows no disruption now (429), spending one disruption.
  void evict(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req,
             const std::shared_ptr<http::ResponseWriter>& w, int tries = 0);
  // The PersistentVolumeClaimResize admission rule: only claims whose
  // StorageClass allows expansion may grow.
  std::optional<ApiError> checkPvcResize(const ResourceInfo& r, const json::object& pvc, std::string_view name);
};

ApiHandler::ApiHandler(storage::Store& store, storage::WatchCache& cache, ApiOptions options)
    : impl_(std::make_unique<Impl>(store, cache, std::move(options))) {}

ApiHandler::~ApiHandler() = default;

// The floor under every request: an exception is a bug, so it is logged and
// counted, the client gets a 500 Status, and the server keeps serving.
void ApiHandler::handle(http::Request& req, const UserInfo& user, std::shared_ptr<http::ResponseWriter> w) {
  try {
    impl_->handle(req, user, w);
  } catch (const std::exception& e) {
    log().error("unexpected exception serving a request", {{"method", req.method}, {"path", req.path()}, {"what", e.what()}});
    if (impl_->exceptions) impl_->exceptions->inc();
    sendError(w, ApiError::internal(fmt::format("an unexpected error occurred while serving {} {}: {}", req.method,
                                                req.path(), e.what())));
  }
}

// Creates `obj` unless it exists. With `replace` (top-level fields), an
// existing object where one of them differs gets this one's.
base::Status ApiHandler::Impl::ensureObject(const ResourceInfo& r, json::object obj,
                                            std::initializer_list<std::string_view> replace) {
  std::string name(objectName(obj));
  std::string ns(objectNamespace(obj));
  std::string key = r.key(ns, name);
  if (auto current = cache.get(key); current.ok()) {
    if (replace.size() == 0) return {};  // present (perhaps changed by the user): kept
    auto old = decode(*current);
    if (!old) return base::makeError(base::ErrorCode::kInternal, "stored {} is not JSON", key);
    json::object updated = *old;
    for (std::string_view f : replace) updated[f] = obj[f];
    if (updated == *old) return {};
    updated["metadata"].as_object().erase("resourceVersion");
    auto written = writeAndWait(store, Write{Write::Op::kUpdate, key, json::serialize(updated), current->modRevision});
    return written ? base::Status{} : base::Status(std::move(written).error());
  }
  if (auto e = prepareCreate(obj, r, ns, rfc3339Now(), newUid(), "")) {
    return base::makeError(base::ErrorCode::kInternal, "{}", e->message);
  }
  auto written = writeAndWait(store, Write{Write::Op::kCreate, key, json::serialize(obj), 0});
  if (!written && written.error().code() != base::ErrorCode::kAlreadyExists) return std::move(written).error();
  return {};
}

base::Status ApiHandler::bootstrap() {
  for (const char* name : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
    json::object obj;
    obj["metadata"] = json::object{{"name", name}};
    obj["spec"] = json::object{{"finalizers", json::array{"kubernetes"}}};
    obj["status"] = json::object{{"phase", "Active"}};
    if (auto st = impl_->ensureObject(*findResource("", "v1", "namespaces"), std::move(obj)); !st) return st;
  }
  for (auto& [plural, obj] : bootstrapPolicy()) {
    if (auto st = impl_->ensureObject(*findResource("rbac.authorization.k8s.io", "v1", plural), std::move(obj)); !st) {
      return st;
    }
  }
  return impl_->authz.start();
}

base::Status ApiHandler::publishEndpoint(const std::string& ip, int port) {
  auto range = Ipv4Cidr::parse(impl_->options.serviceClusterIpRange);
  std::string clusterIp = formatIpv4(range->first());
  json::object meta{{"name", "kubernetes"}, {"namespace", "default"},
                    {"labels", json::object{{"component", "apiserver"}, {"provider", "kubernetes"}}}};
  json::object svc{{"apiVersion", "v1"},
                   {"kind", "Service"},
                   {"metadata", meta},
                   {"spec", json::object{{"type", "ClusterIP"},
                                         {"clusterIP", clusterIp},
                                         {"clusterIPs", json::array{json::value(clusterIp)}},
                                         {"ports", json::array{json::object{{"name", "https"},
                                                                            {"port", 443},
                                                                            {"protocol", "TCP"},
                                                                            {"targetPort", port}}}}}}};
  if (auto st = impl_->ensureObject(*findResource("", "v1", "services"), std::move(svc)); !st) return st;
  json::object ep{{"apiVersion", "v1"},
                  {"kind", "Endpoints"},
                  {"metadata", meta},
                  {"subsets", json::array{json::object{
                                  {"addresses", json::array{json::object{{"ip", ip}}}},
                                  {"ports", json::array{json::object{{"name", "https"}, {"port", port}, {"protocol", "TCP"}}}}}}}};
  if (auto st = impl_->ensureObject(*findResource("", "v1", "endpoints"), std::move(ep), {"subsets"}); !st) return st;
  json::object sliceMeta = meta;
  sliceMeta["labels"] = json::object{{"kubernetes.io/service-name", "kubernetes"},
                                     {"endpointslice.kubernetes.io/managed-by", "trellis-apiserver"}};
  json::object slice{{"apiVersion", "discovery.k8s.io/v1"},
                     {"kind", "EndpointSlice"},
                     {"metadata", std::move(sliceMeta)},
                     {"addressType", "IPv4"},
                     {"endpoints", json::array{json::object{{"addresses", json::array{json::value(ip)}},
                                                            {"conditions", json::object{{"ready", true}}}}}},
                     {"ports", json::array{json::object{{"name", "https"}, {"port", port}, {"protocol", "TCP"}}}}};
  if (auto st = impl_->ensureObject(*findResource("discovery.k8s.io", "v1", "endpointslices"), std::move(slice),
                                    {"endpoints", "ports"});
      !st) {
    return st;
  }
  return {};
}

bool ApiHandler::Impl::authorized(const UserInfo& user, const RequestAttributes& a,
                                  const std::shared_ptr<http::ResponseWriter>& w) {
  Decision d = authz.authorize(user, a);
  if (d.allowed) return true;
  ApiError e{403, "Forbidden", ""};
  if (a.resourceRequest) {
    std::string what = a.subresource.empty() ? a.resource : a.resource + "/" + a.subresource;
    if (!a.group.empty()) what += "." + a.group;
    e.message = (a.name.empty() ? what : fmt::format("{} {:?}", what, a.name)) + " is forbidden: " + forbiddenMessage(user, a);
    e.name = a.name;
    e.group = a.group;
    e.kind = a.resource;
  } else {
    e.message = "forbidden: " + forbiddenMessage(user, a);
  }
  // The audit trail of refusals: who asked for what.
  log().info("forbidden", {{"user", user.name}, {"verb", a.verb}, {"resource", a.resource}, {"subresource", a.subresource},
                           {"namespace", a.ns}, {"name", a.name}, {"path", a.path}});
  sendError(w, e);
  return false;
}

void ApiHandler::Impl::handle(http::Request& req, const UserInfo& user, std::shared_ptr<http::ResponseWriter> w) {
  std::string_view path = req.path();
  std::string method = req.method;
  for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string_view> segs = splitPath(path);
  bool resourcePath = segs.size() >= 3 && ((segs[0] == "api" && segs.size() >= 3) || (segs[0] == "apis" && segs.size() >= 4));
  if (!resourcePath) {
    RequestAttributes a;
    a.verb = method == "head" ? "get" : method;
    a.resourceRequest = false;
    a.path = std::string(path);
    if (!authorized(user, a, w)) return;
  }
  if (path == "/healthz" || path == "/livez" || path == "/readyz") {
    http::Response r;
    r.headers.add("content-type", "text/plain; charset=utf-8");
    r.body = "ok";
    w->respond(std::move(r));
    return;
  }
  if (path == "/metrics" && options.metrics) {
    options.metrics->gauge("apiserver_registered_watchers", "Watches open now").set(static_cast<double>(cache.watchers()));
    options.metrics->gauge("apiserver_storage_revision", "The store's current revision")
        .set(static_cast<double>(cache.revision()));
    http::Response r;
    r.headers.add("content-type", base::Registry::kContentType);
    r.body = options.metrics->render();
    w->respond(std::move(r));
    return;
  }
  if (path == "/version") {
    json::object v{{"major", "1"}, {"minor", "32"}, {"gitVersion", options.gitVersion}, {"gitCommit", base::buildInfo().gitCommit},
                   {"gitTreeState", base::buildInfo().gitTreeState}, {"buildDate", base::buildInfo().buildDate}, {"goVersion", ""}, {"compiler", "gc"},
                   {"platform", "linux/amd64"}};
    sendJson(w, 200, v);
    return;
  }
  if (!segs.empty() && segs[0] == "openapi") return openapi(segs, w);
  std::string_view group, version;
  size_t rest;
  if (!segs.empty() && segs[0] == "api") {
    if (segs.size() < 2) {
      if (wantsAggregated(req.headers.get("accept").value_or(""))) return aggregatedDiscovery(true, w);
      return discovery(segs, w);
    }
    version = segs[1];
    rest = 2;
  } else if (!segs.empty() && segs[0] == "apis") {
    if (segs.size() == 1 && wantsAggregated(req.headers.get("accept").value_or(""))) {
      return aggregatedDiscovery(false, w);
    }
    if (segs.size() < 3) return discovery(segs, w);
    group = segs[1];
    version = segs[2];
    rest = 3;
  } else {
    return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  }
  std::vector<std::string_view> r(segs.begin() + static_cast<long>(rest), segs.end());
  if (r.empty()) return discovery(segs, w);
  std::string_view ns, plural, name, sub;
  if (r[0] == "namespaces" && r.size() >= 3 && !(r.size() == 3 && (r[2] == "status" || r[2] == "finalize"))) {
    ns = r[1];
    plural = r[2];
    if (r.size() > 3) name = r[3];
    if (r.size() > 4) sub = r[4];
    if (r.size() > 5) return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  } else {
    plural = r[0];
    if (r.size() > 1) name = r[1];
    if (r.size() > 2) sub = r[2];
    if (r.size() > 3) return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  }
  const ResourceInfo* res = findResource(group, version, plural);
  if (!res) return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  if (!ns.empty() && !res->namespaced) {
    return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  }
  Part part = Part::kMain;
  if (!sub.empty()) {
    bool has = std::find(res->subresources.begin(), res->subresources.end(), sub) != res->subresources.end();
    if (!has) return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
    if (sub == "status") part = Part::kStatus;
    else if (sub == "scale") part = Part::kScale;
    else if (sub != "binding" && sub != "eviction") {
      return sendError(w, ApiError::methodNotAllowed(fmt::format("subresource {} is not served yet", sub)));
    }
  }
  auto q = parseQuery(req.query());
  const std::string& m = req.method;
  if (auto it = q.find("dryRun"); it != q.end() && it->second != "All") {
    return sendError(w, ApiError::invalid(listOptions(), "", {FieldError{FieldError::Type::kNotSupported, "dryRun",
                                                                         goQuote(it->second), R"(supported values: "All")"}}));
  }
  RequestAttributes attrs;
  attrs.verb = m == "GET" || m == "HEAD"
                   ? (name.empty() ? (q.count("watch") && (q["watch"] == "true" || q["watch"] == "1") ? "watch" : "list")
                                   : "get")
               : m == "POST"   ? "create"
               : m == "PUT"    ? "update"
               : m == "PATCH"  ? "patch"
               : m == "DELETE" ? (name.empty() ? "deletecollection" : "delete")
                               : method;
  attrs.ns = std::string(ns.empty() && res->plural == "namespaces" && res->group.empty() ? name : ns);
  attrs.group = res->group;
  attrs.resource = res->plural;
  attrs.subresource = std::string(sub);
  attrs.name = std::string(name);
  if ((attrs.verb == "list" || attrs.verb == "watch") && attrs.name.empty()) {
    // As kube-apiserver's RequestInfo: a list or watch selecting one name by
    // field is authorized as a request for that name (resourceNames rules).
    if (auto it = q.find("fieldSelector"); it != q.end()) {
      std::string_view fs = it->second;
      for (std::string_view prefix : {"metadata.name==", "metadata.name="}) {
        if (fs.starts_with(prefix) && fs.find(',') == std::string_view::npos) {
          attrs.name = std::string(fs.substr(prefix.size()));
          break;
        }
      }
    }
  }
  if (!authorized(user, attrs, w)) return;
  if (base::Counter* c = requestCounter(*res, attrs.verb)) c->inc();
  if (res->review) {
    if (m != "POST" || !name.empty()) {
      return sendError(w, ApiError::methodNotAllowed("the server does not allow this method on the requested resource"));
    }
    if (auto e = jsonBody(req)) return sendError(w, *e);
    return review(*res, user, req, w);
  }
  if (m == "POST" || m == "PUT") {
    if (auto e = jsonBody(req)) return sendError(w, *e);
  }
  if (name.empty()) {
    if (m == "GET") {
      if (q.count("watch") && (q["watch"] == "true" || q["watch"] == "1")) return watch(*res, ns, q, wantsTable(req.headers.get("accept").value_or("")), w);
      return list(*res, ns, q, wantsTable(req.headers.get("accept").value_or("")), w);
    }
    if (m == "POST") {
      if (res->namespaced && ns.empty()) {
        return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
      }
      return create(*res, ns, req, w);
    }
    if (m == "DELETE") {
      auto opts = deleteOptions(req);
      if (!opts) return sendError(w, deleteOptionsError(opts.error()));
      if (opts->dryRun) q["dryRun"] = "All";
      return deleteCollection(*res, ns, q, w);
    }
    return sendError(w, ApiError::methodNotAllowed(fmt::format("the server does not allow this method on the requested resource")));
  }
  if (res->namespaced && ns.empty()) {
    return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  }
  if (m == "GET") {
    auto kv = cache.get(res->key(ns, name));
    if (!kv) return sendError(w, ApiError::notFound(*res, name));
    auto obj = decode(*kv);
    if (!obj) return sendError(w, ApiError::internal("stored object is not valid JSON"));
    if (part == Part::kScale) return sendJson(w, 200, toScale(*obj));
    if (wantsTable(req.headers.get("accept").value_or(""))) {
      return sendJson(w, 200, toTable(*res, {*obj}, std::to_string(kv->modRevision), time(nullptr)));
    }
    return sendJson(w, 200, *obj);
  }
  if (sub == "binding") {
    if (m != "POST") return sendError(w, ApiError::methodNotAllowed("the server does not allow this method on the requested resource"));
    return bind(*res, ns, name, req, w);
  }
  if (sub == "eviction") {
    if (m != "POST") return sendError(w, ApiError::methodNotAllowed("the server does not allow this method on the requested resource"));
    return evict(*res, ns, name, req, w);
  }
  if (m == "PUT") return update(*res, ns, name, req, part, w);
  if (m == "DELETE") {
    auto opts = deleteOptions(req);
    if (!opts) return sendError(w, deleteOptionsError(opts.error()));
    return remove(*res, ns, name, *opts, w);
  }
  if (m == "PATCH") return patch(*res, ns, name, req, part, w);
  sendError(w, ApiError::methodNotAllowed("the server does not allow this method on the requested resource"));
}

// SelfSubjectAccessReview and SelfSubjectRulesReview: answered from RBAC
// for the requesting user, never stored.
void ApiHandler::Impl::review(const ResourceInfo& r, const UserInfo& user, http::Request& req,
                              const std::shared_ptr<http::ResponseWriter>& w) {
  auto obj = parseObject(req.body);
  if (!obj) return sendError(w, ApiError::badRequest(obj.error().message()));
  if (auto e = checkTypeMeta(*obj, r)) return sendError(w, *e);
  const json::value* spec = obj->if_contains("spec");
  if (!spec || !spec->is_object()) {
    return sendError(w, ApiError::invalid(r, "", {FieldError{FieldError::Type::kRequired, "spec", "", ""}}));
  }
  const json::object& sp = spec->get_object();
  auto field = [](const json::object& o, std::string_view k) {
    const json::value* v = o.if_contains(k);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
  };
  json::object status;
  if (r.kind == "SelfSubjectRulesReview") {
    status = authz.rulesFor(user, field(sp, "namespace"));
  } else {
    const json::value* ra = sp.if_contains("resourceAttributes");
    const json::value* na = sp.if_contains("nonResourceAttributes");
    if ((ra && ra->is_object()) == (na && na->is_object())) {
      return sendError(w, ApiError::invalid(r, "", {FieldError{FieldError::Type::kInvalid, "spec",
                                                               "{...}",
                                                               "exactly one of nonResourceAttributes or "
                                                               "resourceAttributes must be specified"}}));
    }
    RequestAttributes a;
    if (ra && ra->is_object()) {
      const json::object& o = ra->get_object();
      a.verb = field(o, "verb");
      a.ns = field(o, "namespace");
      a.group = field(o, "group");
      a.resource = field(o, "resource");
      a.subresource = field(o, "subresource");
      a.name = field(o, "name");
    } else {
      a.resourceRequest = false;
      a.verb = field(na->get_object(), "verb");
      a.path = field(na->get_object(), "path");
    }
    Decision d = authz.authorize(user, a);
    status["allowed"] = d.allowed;
    if (!d.reason.empty()) status["reason"] = d.reason;
  }
  (*obj)["status"] = std::move(status);
  json::object& meta = (*obj)["metadata"].is_object() ? (*obj)["metadata"].as_object()
                                                       : ((*obj)["metadata"] = json::object{}).as_object();
  meta.erase("managedFields");
  sendJson(w, 201, *obj);
}

void ApiHandler::Impl::aggregatedDiscovery(bool core, const std::shared_ptr<http::ResponseWriter>& w) {
  json::array items;
  for (const GroupVersion& gv : servedGroupVersions()) {
    if (gv.group.empty() != core) continue;
    json::array resources;
    for (const ResourceInfo& r : servedResources()) {
      if (r.group != gv.group || r.version != gv.version) continue;
      json::object kind{{"group", r.group}, {"version", r.version}, {"kind", r.kind}};
      json::object res{{"resource", r.plural},
                       {"responseKind", kind},
                       {"scope", r.namespaced ? "Namespaced" : "Cluster"},
                       {"singularResource", r.singular},
                       {"verbs", discoveryVerbs(r)}};
      if (!r.shortNames.empty()) res["shortNames"] = json::value_from(r.shortNames);
      if (!r.categories.empty()) res["categories"] = json::value_from(r.categories);
      json::array subs;
      for (const std::string& sub : r.subresources) {
        if (sub == "status") {
          subs.push_back(json::object{{"subresource", "status"}, {"responseKind", kind},
                                      {"verbs", json::array{"get", "patch", "update"}}});
        } else if (sub == "scale") {
          subs.push_back(json::object{{"subresource", "scale"},
                                      {"responseKind", json::object{{"group", "autoscaling"}, {"version", "v1"}, {"kind", "Scale"}}},
                                      {"verbs", json::array{"get", "patch", "update"}}});
        } else if (sub == "binding") {
          subs.push_back(json::object{{"subresource", "binding"},
                                      {"responseKind", json::object{{"group", ""}, {"version", "v1"}, {"kind", "Binding"}}},
                                      {"verbs", json::array{"create"}}});
        } else if (sub == "eviction") {
          subs.push_back(json::object{{"subresource", "eviction"},
                                      {"responseKind", json::object{{"group", "policy"}, {"version", "v1"}, {"kind", "Eviction"}}},
                                      {"verbs", json::array{"create"}}});
        }
      }
      if (!subs.empty()) res["subresources"] = std::move(subs);
      resources.push_back(std::move(res));
    }
    json::object meta;
    if (!core) meta["name"] = gv.group;
    items.push_back(json::object{
        {"metadata", std::move(meta)},
        {"versions", json::array{json::object{
                         {"version", gv.version}, {"resources", std::move(resources)}, {"freshness", "Current"}}}}});
  }
  http::Response r;
  r.headers.add("content-type", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
  r.body = json::serialize(json::object{{"kind", "APIGroupDiscoveryList"},
                                        {"apiVersion", "apidiscovery.k8s.io/v2"},
                                        {"metadata", json::object{}},
                                        {"items", std::move(items)}});
  w->respond(std::move(r));
}

void ApiHandler::Impl::discovery(const std::vector<std::string_view>& segs, const std::shared_ptr<http::ResponseWriter>& w) {
  if (segs.size() == 1 && segs[0] == "api") {
    json::object v{{"kind", "APIVersions"}, {"versions", json::array{"v1"}},
                   {"serverAddressByClientCIDRs", json::array{json::object{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", ""}}}}};
    return sendJson(w, 200, v);
  }
  if (segs.size() == 1 && segs[0] == "apis") {
    json::array groups;
    for (const GroupVersion& gv : servedGroupVersions()) {
      if (gv.group.empty()) continue;
      json::object ver{{"groupVersion", gv.group + "/" + gv.version}, {"version", gv.version}};
      groups.push_back(json::object{{"name", gv.group}, {"versions", json::array{ver}}, {"preferredVersion", ver}});
    }
    return sendJson(w, 200, json::object{{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", std::move(groups)}});
  }
  std::string_view group = segs[0] == "apis" && segs.size() > 1 ? segs[1] : "";
  if (segs[0] == "apis" && segs.size() == 2) {
    for (const GroupVersion& gv : servedGroupVersions()) {
      if (gv.group != group) continue;
      json::object ver{{"groupVersion", gv.group + "/" + gv.version}, {"version", gv.version}};
      return sendJson(w, 200, json::object{{"kind", "APIGroup"}, {"apiVersion", "v1"}, {"name", gv.group},
                                           {"versions", json::array{ver}}, {"preferredVersion", ver}});
    }
    return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  }
  std::string_view version = segs[0] == "api" ? segs[1] : segs[2];
  json::array resources;
  for (const ResourceInfo& r : servedResources()) {
    if (r.group != group || r.version != version) continue;
    json::array verbs = discoveryVerbs(r);
    json::object o{{"name", r.plural}, {"singularName", r.singular}, {"namespaced", r.namespaced}, {"kind", r.kind},
                   {"verbs", verbs}};
    if (!r.shortNames.empty()) {
      json::array sn;
      for (const std::string& s : r.shortNames) sn.push_back(json::value(s));
      o["shortNames"] = std::move(sn);
    }
    if (!r.categories.empty()) {
      json::array c;
      for (const std::string& s : r.categories) c.push_back(json::value(s));
      o["categories"] = std::move(c);
    }
    resources.push_back(std::move(o));
    for (const std::string& sub : r.subresources) {
      if (sub == "status") {
        resources.push_back(json::object{{"name", r.plural + "/status"}, {"singularName", ""}, {"namespaced", r.namespaced},
                                         {"kind", r.kind}, {"verbs", json::array{"get", "patch", "update"}}});
      } else if (sub == "scale") {
        resources.push_back(json::object{{"name", r.plural + "/scale"}, {"singularName", ""}, {"namespaced", r.namespaced},
                                         {"group", "autoscaling"}, {"version", "v1"}, {"kind", "Scale"},
                                         {"verbs", json::array{"get", "patch", "update"}}});
      } else if (sub == "binding") {
        resources.push_back(json::object{{"name", r.plural + "/binding"}, {"singularName", ""}, {"namespaced", r.namespaced},
                                         {"kind", "Binding"}, {"verbs", json::array{"create"}}});
      } else if (sub == "eviction") {
        resources.push_back(json::object{{"name", r.plural + "/eviction"}, {"singularName", ""}, {"namespaced", r.namespaced},
                                         {"group", "policy"}, {"version", "v1"}, {"kind", "Eviction"},
                                         {"verbs", json::array{"create"}}});
      }
    }
  }
  if (resources.empty()) return sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
  std::string gv = group.empty() ? std::string(version) : std::string(group) + "/" + std::string(version);
  sendJson(w, 200, json::object{{"kind", "APIResourceList"}, {"apiVersion", "v1"}, {"groupVersion", gv},
                                {"resources", std::move(resources)}});
}

// OpenAPI v3: the index and, per group/version, a document with each
// resource's PATCH operation and its query parameters. It carries no schemas
// yet; it tells kubectl that the server validates fields itself, so the
// default `kubectl apply --validate=strict` sends fieldValidation instead of
// validating against schemas it would have to download.
void ApiHandler::Impl::openapi(const std::vector<std::string_view>& segs, const std::shared_ptr<http::ResponseWriter>& w) {
  static const std::string kHash = "trellis-" + options.gitVersion;
  auto gvPath = [](const GroupVersion& gv) {
    return gv.group.empty() ? "api/" + gv.version : "apis/" + gv.group + "/" + gv.version;
  };
  if (segs.size() == 2 && segs[1] == "v3") {
    json::object paths;
    for (const GroupVersion& gv : servedGroupVersions()) {
      paths[gvPath(gv)] = json::object{{"serverRelativeURL", "/openapi/v3/" + gvPath(gv) + "?hash=" + kHash}};
    }
    return sendJson(w, 200, json::object{{"paths", std::move(paths)}});
  }
  if (segs.size() >= 4 && segs[1] == "v3") {
    std::string want;
    for (size_t i = 2; i < segs.size(); ++i) want += (i > 2 ? "/" : "") + std::string(segs[i]);
    for (const GroupVersion& gv : servedGroupVersions()) {
      if (gvPath(gv) != want) continue;
      json::object paths;
      for (const ResourceInfo& r : servedResources()) {
        if (r.group != gv.group || r.version != gv.version) continue;
        json::array params;
        for (const char* q : {"dryRun", "fieldManager", "fieldValidation", "force", "pretty"}) {
          params.push_back(json::object{{"name", q}, {"in", "query"}, {"schema", json::object{{"type", "string"}}}});
        }
        json::object patch{{"operationId", "patch" + r.kind},
                           {"parameters", std::move(params)},
                           {"x-kubernetes-action", "patch"},
                           {"x-kubernetes-group-version-kind",
                            json::object{{"group", r.group}, {"version", r.version}, {"kind", r.kind}}}};
        std::string item = "/" + want + (r.namespaced ? "/namespaces/{namespace}/" : "/") + r.plural + "/{name}";
        paths[item] = json::object{{"patch", std::move(patch)}};
      }
      return sendJson(w, 200, json::object{{"openapi", "3.0.0"},
                                           {"info", json::object{{"title", "Kubernetes"}, {"version", options.gitVersion}}},
                                           {"paths", std::move(paths)},
                                           {"components", json::object{{"schemas", json::object()}}}});
    }
  }
  sendError(w, ApiError{404, "NotFound", "the server could not find the requested resource"});
}

namespace {

// A continue token: the revision the first page was read at and the last key
// returned, base64url(JSON), opaque to clients.
std::string encodeContinue(Revision rev, const std::string& key) {
  std::string raw = json::serialize(json::object{{"rv", rev}, {"start", key}});
  std::string b64 = base::base64Encode(raw);
  for (char& c : b64) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return b64;
}

std::optional<std::pair<Revision, std::string>> decodeContinue(std::string token) {
  for (char& c : token) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
  }
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string raw;
  int val = 0, bits = -8;
  for (char c : token) {
    if (c == '=') break;
    size_t pos = alphabet.find(c);
    if (pos == std::string::npos) return std::nullopt;
    val = (val << 6) | static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      raw.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  boost::system::error_code ec;
  json::value v = json::parse(raw, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.as_object();
  auto rv = o.find("rv");
  auto start = o.find("start");
  if (rv == o.end() || !rv->value().is_int64() || start == o.end() || !start->value().is_string()) return std::nullopt;
  return std::make_pair(rv->value().as_int64(), std::string(start->value().as_string()));
}

}  // namespace

// A list at one revision, in pages when `limit` is given: the first page
// comes from the watch cache; the following ones from the same revision (the
// cache if it has not moved on, else the store's history; 410 Expired once
// that revision is compacted).
void ApiHandler::Impl::list(const ResourceInfo& r, std::string_view ns, const std::map<std::string, std::string>& q,
                            bool table, const std::shared_ptr<http::ResponseWriter>& w) {
  auto selector = Selector::fromQuery(q, r.kind);
  if (!selector) return sendError(w, ApiError::badRequest(selector.error().message()));
  size_t limit = 0;
  if (auto it = q.find("limit"); it != q.end() && !it->second.empty()) {
    int64_t l = 0;
    auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), l);
    if (ec != std::errc() || p != it->second.data() + it->second.size() || l < 0) {
      return sendError(w, ApiError::badRequest(fmt::format("invalid limit {:?}", it->second)));
    }
    limit = static_cast<size_t>(l);
  }
  std::string prefix = r.keyPrefix();
  if (r.namespaced && !ns.empty()) prefix += std::string(ns) + "/";
  std::string startAfter;
  storage::Snapshot snap;
  if (auto it = q.find("continue"); it != q.end() && !it->second.empty()) {
    auto token = decodeContinue(it->second);
    if (!token) return sendError(w, ApiError::badRequest("invalid continue token"));
    startAfter = token->second;
    snap = cache.list(prefix);
    if (snap.revision != token->first) {
      auto old = store.list(prefix, token->first);
      if (!old) {
        return sendError(w, ApiError::gone("The provided continue parameter is too old to display a consistent list "
                                           "result. You can start a new list without the continue parameter."));
      }
      snap = std::move(*old);
    }
  } else {
    // resourceVersion: unset or "0" (any) and NotOlderThan N serve the cache,
    // which is never behind an acknowledged write; Exact N reads revision N.
    auto rvIt = q.find("resourceVersion");
    std::string rvText = rvIt == q.end() ? "" : rvIt->second;
    auto matchIt = q.find("resourceVersionMatch");
    std::string match = matchIt == q.end() ? "" : matchIt->second;
    Revision rv = 0;
    if (!rvText.empty()) {
      auto [p, ec] = std::from_chars(rvText.data(), rvText.data() + rvText.size(), rv);
      if (ec != std::errc() || p != rvText.data() + rvText.size() || rv < 0) {
        return sendError(w, ApiError::badRequest(fmt::format("invalid resourceVersion {:?}", rvText)));
      }
    }
    if (!match.empty() && match != "Exact" && match != "NotOlderThan") {
      return sendError(w, ApiError::invalid(listOptions(), "", {FieldError{FieldError::Type::kNotSupported, "resourceVersionMatch",
                                                               match, R"(supported values: "Exact", "NotOlderThan")"}}));
    }
    if (!match.empty() && rvText.empty()) {
      return sendError(w, ApiError::invalid(listOptions(), "", {FieldError{FieldError::Type::kForbidden, "resourceVersionMatch", "",
                                                               "resourceVersionMatch is forbidden unless "
                                                               "resourceVersion is provided"}}));
    }
    if (match == "Exact" && rv == 0) {
      return sendError(w, ApiError::invalid(listOptions(), "", {FieldError{FieldError::Type::kForbidden, "resourceVersionMatch", "",
                                                               "resourceVersionMatch \"exact\" is forbidden for "
                                                               "resourceVersion \"0\""}}));
    }
    snap = cache.list(prefix);
    if (rv > snap.revision) {
      ApiError e{504, "Timeout", fmt::format("Too large resource version: {}, current: {}", rv, snap.revision)};
      return sendError(w, e);
    }
    if (match == "Exact" && rv != snap.revision) {
      auto old = store.list(prefix, rv);
      if (!old) return sendError(w, ApiError::gone(fmt::format("resourceVersion {} is too old", rv)));
      snap = std::move(*old);
    }
  }
  std::vector<json::object> objs;
  std::string lastKey;
  bool more = false;
  for (const KeyValue& kv : snap.items) {
    if (!startAfter.empty() && kv.key <= startAfter) continue;
    auto obj = decode(kv);
    if (!obj || !selector->matches(*obj)) continue;
    if (limit && objs.size() == limit) {
      more = true;
      break;
    }
    lastKey = kv.key;
    objs.push_back(std::move(*obj));
  }
  json::object meta{{"resourceVersion", std::to_string(snap.revision)}};
  if (more) meta["continue"] = encodeContinue(snap.revision, lastKey);
  if (table) {
    json::object t = toTable(r, objs, std::to_string(snap.revision), time(nullptr));
    t["metadata"] = std::move(meta);
    return sendJson(w, 200, t);
  }
  json::array items;
  for (json::object& o : objs) items.push_back(std::move(o));
  sendJson(w, 200, json::object{{"kind", r.listKind()}, {"apiVersion", r.apiVersion()}, {"metadata", std::move(meta)},
                                {"items", std::move(items)}});
}

void ApiHandler::Impl::watch(const ResourceInfo& r, std::string_view ns, const std::map<std::string, std::string>& q,
                             bool table, const std::shared_ptr<http::ResponseWriter>& w) {
  auto selector = Selector::fromQuery(q, r.kind);
  if (!selector) return sendError(w, ApiError::badRequest(selector.error().message()));
  Revision from = 0;
  if (auto it = q.find("resourceVersion"); it != q.end() && !it->second.empty()) {
    auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), from);
    if (ec != std::errc() || p != it->second.data() + it->second.size() || from < 0) {
      return sendError(w, ApiError::badRequest(fmt::format("invalid resourceVersion {:?}", it->second)));
    }
  }
  auto flag = [&](const char* name) {
    auto it = q.find(name);
    return it != q.end() && (it->second == "true" || it->second == "1");
  };
  bool bookmarks = flag("allowWatchBookmarks") && !table;
  bool initialEvents = flag("sendInitialEvents");
  if (initialEvents) {
    auto m = q.find("resourceVersionMatch");
    if (m == q.end() || m->second != "NotOlderThan" || !bookmarks) {
      return sendError(w, ApiError::invalid(listOptions(), "", {FieldError{FieldError::Type::kForbidden, "sendInitialEvents", "",
                                                               "sendInitialEvents requires setting "
                                                               "resourceVersionMatch to NotOlderThan and "
                                                               "allowWatchBookmarks"}}));
    }
  }
  std::string prefix = r.keyPrefix();
  if (r.namespaced && !ns.empty()) prefix += std::string(ns) + "/";
  http::Headers h;
  h.add("content-type", "application/json");
  h.add("cache-control", "no-cache, private");
  w->begin(200, std::move(h));
  // Events are emitted in order: the initial ones from here, the rest from
  // the cache's dispatch (serialized). A Table watch sends each object as a
  // one-row Table, the column definitions only in the first.
  auto firstTable = std::make_shared<bool>(true);
  auto emit = [w, &r, table, firstTable, sel = std::move(*selector)](std::string_view type, const json::object& obj) {
    if (!sel.matches(obj)) return;
    if (!table) {
      w->write(json::serialize(json::object{{"type", type}, {"object", obj}}) + "\n");
      return;
    }
    json::object t = toTable(r, {obj}, std::to_string(objectResourceVersion(obj)), time(nullptr));
    if (!*firstTable) t.erase("columnDefinitions");
    *firstTable = false;
    w->write(json::serialize(json::object{{"type", type}, {"object", std::move(t)}}) + "\n");
  };
  auto bookmark = [w, &r](Revision rev, bool initialEnd) {
    json::object meta{{"resourceVersion", std::to_string(rev)}, {"creationTimestamp", nullptr}};
    if (initialEnd) meta["annotations"] = json::object{{"k8s.io/initial-events-end", "true"}};
    w->write(json::serialize(json::object{
                 {"type", "BOOKMARK"},
                 {"object", json::object{{"kind", r.kind}, {"apiVersion", r.apiVersion()}, {"metadata", std::move(meta)}}}}) +
             "\n");
  };
  // resourceVersion unset or "0", or sendInitialEvents: synthetic ADDED
  // events for what exists, then changes.
  if (from == 0 || initialEvents) {
    storage::Snapshot snap = cache.list(prefix);
    for (const KeyValue& kv : snap.items) {
      if (auto obj = decode(kv)) emit("ADDED", *obj);
    }
    if (initialEvents) bookmark(snap.revision, true);
    from = snap.revision;
  }
  auto id = cache.watch(prefix, from, [emit](const std::vector<Event>& events) {
    for (const Event& e : events) {
      auto obj = decode(e.kv);
      if (!obj) continue;
      emit(e.type == Event::Type::kDelete ? "DELETED" : e.created ? "ADDED" : "MODIFIED", *obj);
    }
  });
  if (!id) {
    ApiError gone = ApiError::gone(fmt::format("too old resource version: {} ({})", from, cache.revision()));
    w->write(json::serialize(json::object{{"type", "ERROR"}, {"object", statusObject(gone)}}) + "\n");
    w->finish();
    return;
  }
  storage::WatchCache* c = &cache;
  storage::WatchCache::WatchId wid = *id;
  w->onClose([c, wid] { c->unwatch(wid); });
  int timeout = 0;
  if (auto it = q.find("timeoutSeconds"); it != q.end()) timeout = std::atoi(it->second.c_str());
  std::function<void(Revision)> mark;
  if (bookmarks) mark = [bookmark](Revision rev) { bookmark(rev, false); };
  auto now = std::chrono::steady_clock::now();
  std::lock_guard g(watchMu);
  if (timeout > 0) deadlines.emplace(now + std::chrono::seconds(timeout), WatchDeadline{wid, w, mark, true});
  if (bookmarks) deadlines.emplace(now + options.bookmarkInterval, WatchDeadline{wid, w, mark, false});
  watchCv.notify_all();
}

// One thread ends every watch whose timeoutSeconds has passed (with a last
// bookmark when the watch asked for bookmarks) and sends periodic bookmarks.
void ApiHandler::Impl::runWatchDeadlines() {
  std::unique_lock g(watchMu);
  while (!deadlineStop) {
    if (deadlines.empty()) {
      watchCv.wait(g);
      continue;
    }
    auto next = deadlines.begin();
    if (watchCv.wait_until(g, next->first) == std::cv_status::no_timeout) continue;  // woken: re-check
    while (!deadlines.empty() && deadlines.begin()->first <= std::chrono::steady_clock::now()) {
      WatchDeadline d = std::move(deadlines.begin()->second);
      deadlines.erase(deadlines.begin());
      bool alive = !d.writer->closed() && (!d.bookmark || cache.atRevision(d.id, d.bookmark));
      if (d.timeout) {
        cache.unwatch(d.id);
        d.writer->finish();
      } else if (alive) {
        deadlines.emplace(std::chrono::steady_clock::now() + options.bookmarkInterval, std::move(d));
      }
    }
  }
}

void ApiHandler::Impl::bind(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req,
                            const std::shared_ptr<http::ResponseWriter>& w) {
  auto binding = parseObject(req.body);
  if (!binding) return sendError(w, ApiError::badRequest(binding.error().message()));
  const json::value* target = binding->if_contains("target");
  const json::value* node = target && target->is_object() ? target->get_object().if_contains("name") : nullptr;
  if (!node || !node->is_string() || node->get_string().empty()) {
    static const ResourceInfo kBinding{"", "v1", "Binding", "bindings", "binding", true, {}, {}};
    return sendError(w, ApiError::invalid(kBinding, name, {FieldError::required("target.name", "")}));
  }
  std::string key = r.key(ns, name);
  auto current = cache.get(key);
  if (!current) return sendError(w, ApiError::notFound(r, name));
  auto pod = decode(*current);
  if (!pod) return sendError(w, ApiError::internal("stored object is not valid JSON"));
  json::object& spec = (*pod)["spec"].is_object() ? (*pod)["spec"].as_object()
                                                    : ((*pod)["spec"] = json::object{}).as_object();
  if (const json::value* was = spec.if_contains("nodeName"); was && was->is_string() && !was->get_string().empty()) {
    return sendError(w, ApiError::conflict(r, name, fmt::format("pod {} is already assigned to node {:?}", name,
                                                                std::string(was->get_string()))));
  }
  spec["nodeName"] = node->get_string();
  (*pod)["metadata"].as_object().erase("resourceVersion");
  write(Write{Write::Op::kUpdate, key, json::serialize(*pod), current->modRevision}, isDryRun(req.query()),
        [this, w, &r, name = std::string(name)](base::Result<KeyValue> kv) {
          if (!kv) return sendError(w, fromStoreError(kv.error(), r, name));
          json::object st{{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", json::object{}}, {"status", "Success"},
                          {"code", 201}};
          sendJson(w, 201, st);
        });
}

void ApiHandler::Impl::evict(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req,
                             const std::shared_ptr<http::ResponseWriter>& w, int tries) {
  static const ResourceInfo kEviction{"policy", "v1", "Eviction", "evictions", "eviction", true, {}, {}};
  auto ev = parseObject(req.body);
  if (!ev) return sendError(w, ApiError::badRequest(ev.error().message()));
  if (auto e = checkTypeMeta(*ev, kEviction)) return sendError(w, *e);
  const json::value* meta = ev->if_contains("metadata");
  const json::value* evName = meta && meta->is_object() ? meta->get_object().if_contains("name") : nullptr;
  if (!evName || !evName->is_string() || evName->get_string() != name) {
    return sendError(w, ApiError::badRequest("name in URL does not match name in Eviction object"));
  }
  auto opts = deleteOptions(req, ev->if_contains("deleteOptions"));
  if (!opts) return sendError(w, deleteOptionsError(opts.error()));
  opts->evicted = true;
  auto current = cache.get(r.key(ns, name));
  if (!current) return sendError(w, ApiError::notFound(r, name));
  auto pod = decode(*current);
  if (!pod) return sendError(w, ApiError::internal("stored object is not valid JSON"));
  std::string phase(kube::str(*pod, {"status", "phase"}));
  // Terminal, pending and deleting pods are no disruption (kube's canIgnorePDB).
  if (phase == "Succeeded" || phase == "Failed" || phase == "Pending" || beingDeleted(*pod)) {
    return remove(r, ns, name, *opts, w);
  }
  const ResourceInfo& pdbs = *findResource("policy", "v1", "poddisruptionbudgets");
  auto labels = kube::labels(*pod);
  std::vector<std::pair<KeyValue, json::object>> budgets;
  for (const KeyValue& kv : cache.list(pdbs.keyPrefix() + std::string(ns) + "/").items) {
    auto pdb = decode(kv);
    if (!pdb) continue;
    auto sel = kube::LabelSelector::fromJson(kube::field(*pdb, {"spec", "selector"}));
    if (sel && !sel->isNull() && sel->matches(labels)) budgets.emplace_back(kv, std::move(*pdb));
  }
  if (budgets.size() > 1) {
    return sendError(w, ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                           "does not support."));
  }
  if (budgets.empty()) return remove(r, ns, name, *opts, w);
  auto& [pdbKv, pdb] = budgets.front();
  std::string pdbName(objectName(pdb));
  auto tooMany = [&](std::string cause) {
    json::object st = statusObject(ApiError{429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."});
    st["details"] = json::object{{"causes", json::array{json::object{{"reason", "DisruptionBudget"}, {"message", std::move(cause)}}}}};
    sendJson(w, 429, st);
  };
  if (kube::integer(pdb, {"status", "observedGeneration"}, 0) < kube::integer(pdb, {"metadata", "generation"}, 0)) {
    return tooMany(fmt::format("The disruption budget {} is still being processed by the server.", pdbName));
  }
  bool ready = false;
  if (const json::array* conds = kube::array(*pod, {"status", "conditions"})) {
    for (const json::value& c : *conds) {
      if (c.is_object() && kube::str(c.get_object(), {"type"}) == "Ready") ready = kube::str(c.get_object(), {"status"}) == "True";
    }
  }
  int64_t healthy = kube::integer(pdb, {"status", "currentHealthy"}, 0);
  int64_t desired = kube::integer(pdb, {"status", "desiredHealthy"}, 0);
  if (!ready) {
    // An unhealthy pod may go when the budget is met anyway (IfHealthyBudget), or always.
    if (kube::str(pdb, {"spec", "unhealthyPodEvictionPolicy"}) == "AlwaysAllow" || (healthy >= desired && desired > 0)) {
      return remove(r, ns, name, *opts, w);
    }
  }
  int64_t allowed = kube::integer(pdb, {"status", "disruptionsAllowed"}, 0);
  if (allowed < 0) {
    return sendError(w, ApiError{403, "Forbidden", "pdb disruptions allowed is negative", std::string(name), "", "pods"});
  }
  if (allowed == 0) {
    return tooMany(fmt::format("The disruption budget {} needs {} healthy pods and has {} currently", pdbName, desired, healthy));
  }
  json::object& status = kube::ensureObject(pdb, {"status"});
  json::value& disrupted = status["disruptedPods"];
  if (!disrupted.is_object()) disrupted = json::object{};
  if (disrupted.get_object().size() >= 2000) {
    return sendError(w, ApiError{403, "Forbidden", "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
                                 std::string(name), "", "pods"});
  }
  disrupted.get_object()[name] = rfc3339Now();
  status["disruptionsAllowed"] = allowed - 1;
  pdb["metadata"].as_object().erase("resourceVersion");
  // Spend the disruption first (compare-and-swap on the budget), then delete.
  write(Write{Write::Op::kUpdate, pdbKv.key, json::serialize(pdb), pdbKv.modRevision}, opts->dryRun,
        [this, w, &r, ns = std::string(ns), n = std::string(name), opts = *opts, body = req.body, tries,
         query = std::string(req.query())](base::Result<KeyValue> kv) mutable {
          if (!kv && kv.error().code() == base::ErrorCode::kConflict && tries < 8) {
            http::Request again;
            again.body = std::move(body);
            again.target = "/eviction?" + query;
            return evict(r, ns, n, again, w, tries + 1);
          }
          if (!kv) return sendError(w, fromStoreError(kv.error(), r, n));
          remove(r, ns, n, opts, w);
        });
}

std::optional<ApiError> ApiHandler::Impl::checkPvcResize(const ResourceInfo& r, const json::object& pvc,
                                                         std::string_view name) {
  ApiError denied{403, "Forbidden",
                  fmt::format("{} {:?} is forbidden: only dynamically provisioned pvc can be resized and the "
                              "storageclass that provisions the pvc must support resize",
                              qualifiedResource(r), name),
                  std::string(name), r.group, r.plural};
  const json::value* spec = pvc.if_contains("spec");
  const json::value* scName = spec && spec->is_object() ? spec->get_object().if_contains("storageClassName") : nullptr;
  if (!scName || !scName->is_string() || scName->get_string().empty()) return denied;
  const ResourceInfo& scr = *findResource("storage.k8s.io", "v1", "storageclasses");
  auto kv = cache.get(scr.key("", std::string(scName->get_string())));
  if (!kv) return denied;
  auto sc = decode(*kv);
  const json::value* allow = sc ? sc->if_contains("allowVolumeExpansion") : nullptr;
  if (!allow || !allow->is_bool() || !allow->get_bool()) return denied;
  return std::nullopt;
}

std::optional<ApiError> ApiHandler::Impl::checkNamespace(std::string_view ns) {
  const ResourceInfo& nsr = *findResource("", "v1", "namespaces");
  auto kv = cache.get(nsr.key("", ns));
  if (!kv) return ApiError::notFound(nsr, ns);
  auto obj = decode(*kv);
  if (obj && beingDeleted(*obj)) {
    return ApiError{403, "Forbidden",
                    fmt::format("unable to create new content in namespace {} because it is being terminated", ns),
                    std::string(ns), "", "namespaces"};
  }
  return std::nullopt;
}

void ApiHandler::Impl::create(const ResourceInfo& r, std::string_view ns, http::Request& req,
                              const std::shared_ptr<http::ResponseWriter>& w) {
  auto obj = parseObject(req.body);
  if (!obj) return sendError(w, ApiError::badRequest(obj.error().message()));
  if (auto e = decodingCheck(r, *obj, req.query())) return sendError(w, *e);
  if (r.namespaced) {
    if (auto e = checkNamespace(ns)) return sendError(w, *e);
  }
  bool generated = objectName(*obj).empty();
  if (auto e = prepareCreate(*obj, r, ns, rfc3339Now(), newUid(), randomNameSuffix())) return sendError(w, *e);
  std::string name(objectName(*obj));
  // A generated name that is taken gets another suffix, up to 7 more times
  // (kube-apiserver's RetryGenerateName); after that, AlreadyExists.
  for (int retry = 0; generated && retry < 7 && cache.get(r.key(ns, name)).ok(); ++retry) {
    json::object& meta = (*obj)["metadata"].as_object();
    name = std::string(meta["generateName"].as_string()) + randomNameSuffix();
    meta["name"] = name;
  }
  ServiceAllocator::Reservation reserved;
  if (isService(r)) {
    auto a = allocateService(*obj, nullptr, r);
    if (!a) return sendError(w, allocationError(r, name, a.error()));
    reserved = std::move(*a);
  }
  std::string body = json::serialize(*obj);
  write(Write{Write::Op::kCreate, r.key(ns, name), std::move(body), 0}, isDryRun(req.query()),
        [this, w, &r, name, reserved](base::Result<KeyValue> kv) {
          allocator.release(reserved);  // stored now (or failed): the cache has the truth
          if (!kv) return sendError(w, fromStoreError(kv.error(), r, name));
          auto out = decode(*kv);
          sendJson(w, 201, *out);
        });
}

void ApiHandler::Impl::update(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req,
                              Part part, const std::shared_ptr<http::ResponseWriter>& w) {
  auto obj = parseObject(req.body);
  if (!obj) return sendError(w, ApiError::badRequest(obj.error().message()));
  if (part != Part::kScale) {
    if (auto e = decodingCheck(r, *obj, req.query())) return sendError(w, *e);
  }
  std::string key = r.key(ns, name);
  auto current = cache.get(key);
  if (!current) return sendError(w, ApiError::notFound(r, name));
  auto old = decode(*current);
  if (!old) return sendError(w, ApiError::internal("stored object is not valid JSON"));
  if (part == Part::kScale) {
    auto scaled = fromScale(*old, *obj);
    if (!scaled) return sendError(w, ApiError::badRequest(scaled.error().message()));
    obj = std::move(*scaled);
  }
  commitUpdate(r, ns, name, std::move(*obj), *old, *current, part, isDryRun(req.query()), w, nullptr);
}

// What every write of a new version goes through (PUT and PATCH): metadata
// rules, the status/main split, finalizers, Service allocation, then the
// resourceVersion precondition; then the write — an update, or the delete
// that removing the last finalizer of a deleting object means. A conflict in
// the store is retried by `retryOnConflict` when given (it returns false to
// give up), else answered 409.
void ApiHandler::Impl::commitUpdate(const ResourceInfo& r, std::string_view ns, std::string_view name, json::object obj,
                                    const json::object& old, const KeyValue& current, Part part, bool dryRun,
                                    const std::shared_ptr<http::ResponseWriter>& w,
                                    std::function<bool()> retryOnConflict) {
  int64_t rv = objectResourceVersion(obj);
  if (rv < 0) return sendError(w, ApiError::badRequest("metadata.resourceVersion: Invalid value: must be a number"));
  applyDefaults(r, obj, false);
  if (auto e = prepareUpdate(obj, old, r, ns, name)) return sendError(w, *e);
  applyPart(obj, old, r, part);
  if (part != Part::kStatus) {
    if (FieldErrors errs = validateKind(r, obj, &old); !errs.empty()) {
      return sendError(w, ApiError::invalid(r, name, std::move(errs)));
    }
    if (r.kind == "PersistentVolumeClaim" && r.group.empty() && pvcRequestGrew(obj, old)) {
      if (auto e = checkPvcResize(r, obj, name)) return sendError(w, *e);
    }
  }
  if (auto e = checkFinalizers(obj, old, r)) return sendError(w, *e);
  ServiceAllocator::Reservation reserved;
  if (isService(r) && part == Part::kMain) {
    auto a = allocateService(obj, &old, r);
    if (!a) return sendError(w, allocationError(r, name, a.error()));
    reserved = std::move(*a);
  }
  // The revision the client saw; without one, the write is unconditional.
  if (rv != 0 && rv != current.modRevision) {
    allocator.release(reserved);
    return sendError(w, fromStoreError(base::Error(base::ErrorCode::kConflict, ""), r, name));
  }
  obj["metadata"].as_object().erase("resourceVersion");
  bool finalized = beingDeleted(obj) && !hasFinalizers(obj);
  write(Write{finalized ? Write::Op::kDelete : Write::Op::kUpdate, current.key, json::serialize(obj), current.modRevision},
        dryRun,
        [this, w, &r, part, n = std::string(name), reserved, retry = std::move(retryOnConflict)](base::Result<KeyValue> kv) {
          allocator.release(reserved);
          if (!kv && kv.error().code() == base::ErrorCode::kConflict && retry && retry()) return;
          if (!kv) return sendError(w, fromStoreError(kv.error(), r, n));
          sendJson(w, 200, part == Part::kScale ? toScale(*decode(*kv)) : *decode(*kv));
        });
}

namespace {

// kApply: server-side apply (application/apply-patch+yaml), simplified: see patch().
enum class PatchType { kMerge, kJson, kStrategic, kApply };

std::optional<PatchType> patchType(std::string_view contentType) {
  std::string_view type = trim(contentType.substr(0, contentType.find(';')));
  if (http::equalsIgnoreCase(type, "application/merge-patch+json")) return PatchType::kMerge;
  if (http::equalsIgnoreCase(type, "application/json-patch+json")) return PatchType::kJson;
  if (http::equalsIgnoreCase(type, "application/strategic-merge-patch+json")) return PatchType::kStrategic;
  if (http::equalsIgnoreCase(type, "application/apply-patch+yaml")) return PatchType::kApply;
  return std::nullopt;
}

}  // namespace

// Applies the patch to the current object and stores the result; when the
// patch names no resourceVersion, a concurrent change is not the caller's
// conflict: read again and re-apply (kube-apiserver's GuaranteedUpdate).
void ApiHandler::Impl::patch(const ResourceInfo& r, std::string_view ns, std::string_view name, http::Request& req,
                             Part part, const std::shared_ptr<http::ResponseWriter>& w) {
  auto type = patchType(req.headers.get("content-type").value_or(""));
  if (!type) {
    return sendError(w, ApiError::unsupportedMediaType(
                            "the body of the request was in an unknown format - accepted media types include: "
                            "application/json-patch+json, application/merge-patch+json, "
                            "application/strategic-merge-patch+json, application/apply-patch+yaml"));
  }
  json::value doc;
  if (*type == PatchType::kApply) {
    // Server-side apply, simplified: the applied configuration creates the
    // object, or is merged into it as a strategic merge patch. Field
    // ownership (managedFields), conflicts between managers and removal of
    // fields a manager stops applying are not implemented.
    auto q = parseQuery(req.query());
    if (q["fieldManager"].empty()) {
      return sendError(w, ApiError::invalid(listOptions(), "", {FieldError::required("fieldManager", "is required for apply patch")}));
    }
    auto parsed = kube::parseYaml(req.body);
    if (!parsed || !parsed->is_object()) {
      return sendError(w, ApiError::badRequest("error decoding YAML: " +
                                               (parsed ? std::string("not a mapping") : parsed.error().message())));
    }
    doc = std::move(*parsed);
    if (auto e = checkTypeMeta(doc.as_object(), r)) return sendError(w, *e);
    if (part == Part::kMain && !cache.get(r.key(ns, name)).ok()) {
      json::object& obj = doc.as_object();
      json::value& meta = obj["metadata"];
      if (!meta.is_object()) meta = json::object{};
      if (objectName(obj) != name) {
        return sendError(w, ApiError::badRequest(fmt::format(
                                "the name of the object ({}) does not match the name on the URL ({})", objectName(obj), name)));
      }
      req.body = json::serialize(obj);
      req.headers.set("content-type", "application/json");
      return create(r, ns, req, w);
    }
  } else {
    boost::system::error_code ec;
    doc = json::parse(req.body, ec);
    if (ec) return sendError(w, ApiError::badRequest("error decoding patch: " + ec.message()));
  }
  struct Attempt : std::enable_shared_from_this<Attempt> {
    Impl* impl;
    const ResourceInfo* r;
    std::string ns, name, key;
    PatchType type;
    Part part;
    json::value doc;
    std::string query;
    std::shared_ptr<http::ResponseWriter> w;
    int tries = 0;

    void run() {
      auto current = impl->cache.get(key);
      if (!current) return sendError(w, ApiError::notFound(*r, name));
      auto old = decode(*current);
      if (!old) return sendError(w, ApiError::internal("stored object is not valid JSON"));
      json::object target = part == Part::kScale ? toScale(*old) : *old;
      base::Result<json::value> patched = type == PatchType::kMerge  ? applyMergePatch(target, doc)
                                          : type == PatchType::kJson ? applyJsonPatch(target, doc)
                                                                     : applyStrategicMergePatch(target, doc, *r);  // and kApply
      if (!patched) return sendError(w, ApiError{422, "Invalid", patched.error().message(), name, r->group, r->kind});
      if (!patched->is_object()) return sendError(w, ApiError::badRequest("the patched object is not a JSON object"));
      if (part == Part::kScale) {
        auto scaled = fromScale(*old, patched->as_object());
        if (!scaled) return sendError(w, ApiError::badRequest(scaled.error().message()));
        *patched = std::move(*scaled);
      } else if (auto e = decodingCheck(*r, patched->as_object(), query)) {
        return sendError(w, *e);
      }
      auto self = shared_from_this();
      impl->commitUpdate(*r, ns, name, std::move(patched->as_object()), *old, *current, part, isDryRun(query), w, [self] {
        if (++self->tries >= 8) return false;
        self->run();  // the object changed under us: read it again, apply the patch again
        return true;
      });
    }
  };
  auto a = std::make_shared<Attempt>();
  a->impl = this;
  a->r = &r;
  a->ns = std::string(ns);
  a->name = std::string(name);
  a->query = std::string(req.query());
  a->key = r.key(ns, name);
  a->type = *type;
  a->part = part;
  a->doc = std::move(doc);
  a->w = w;
  a->run();
}

// Deletes every object the selectors match, then answers Success. Each
// delete is its own durable write; one that fails fails the whole answer
// (those already deleted stay deleted, as with kube-apiserver).
void ApiHandler::Impl::deleteCollection(const ResourceInfo& r, std::string_view ns,
                                        const std::map<std::string, std::string>& q,
                                        const std::shared_ptr<http::ResponseWriter>& w) {
  auto selector = Selector::fromQuery(q, r.kind);
  if (!selector) return sendError(w, ApiError::badRequest(selector.error().message()));
  std::string prefix = r.keyPrefix();
  if (r.namespaced && !ns.empty()) prefix += std::string(ns) + "/";
  std::vector<KeyValue> victims;
  for (KeyValue& kv : cache.list(prefix).items) {
    auto obj = decode(kv);
    if (obj && selector->matches(*obj)) victims.push_back(std::move(kv));
  }
  struct State {
    std::mutex mu;
    size_t left;
    std::optional<ApiError> error;
  };
  auto st = std::make_shared<State>();
  st->left = victims.size();
  auto finish = [w, &r](const std::shared_ptr<State>& s) {
    if (s->error) return sendError(w, *s->error);
    sendJson(w, 200, successStatus(r, ""));
  };
  if (victims.empty()) return finish(st);
  for (const KeyValue& kv : victims) {
    std::string name = kv.key.substr(kv.key.rfind('/') + 1);
    write(Write{Write::Op::kDelete, kv.key, "", kv.modRevision}, isDryRun(q), [st, finish, &r, name](base::Result<KeyValue> res) {
      std::lock_guard g(st->mu);
      // Gone meanwhile or changed meanwhile: not this request's failure.
      if (!res && res.error().code() != base::ErrorCode::kNotFound && res.error().code() != base::ErrorCode::kConflict &&
          !st->error) {
        st->error = fromStoreError(res.error(), r, name);
      }
      if (--st->left == 0) finish(st);
    });
  }
}

// Marking an object deleted (finalizers hold it) is a write of the object
// read from the cache; if it changed meanwhile the mark is made again on the
// new version, as kube-apiserver's GuaranteedUpdate does: a DELETE without
// preconditions never fails with a Conflict. Foreground and Orphan
// propagation add the "foregroundDeletion" / "orphan" finalizer that the
// garbage collector finishes.
void ApiHandler::Impl::remove(const ResourceInfo& r, std::string_view ns, std::string_view name,
                              const DeleteOptions& opts, const std::shared_ptr<http::ResponseWriter>& w, int tries) {
  std::string n(name), nsName(ns);
  bool dryRun = opts.dryRun;
  auto again = [this, &r, nsName, n, opts, w, tries](const base::Error& e) {
    if (e.code() != base::ErrorCode::kConflict || tries >= 8) return false;
    remove(r, nsName, n, opts, w, tries + 1);
    return true;
  };
  auto current = cache.get(r.key(ns, name));
  if (!current) return sendError(w, ApiError::notFound(r, name));
  auto obj = decode(*current);
  if (obj && (!opts.uid.empty() || !opts.resourceVersion.empty())) {
    const json::object& meta = (*obj)["metadata"].as_object();
    std::string uid = meta.contains("uid") && meta.at("uid").is_string() ? std::string(meta.at("uid").get_string()) : "";
    std::string rv = std::to_string(current->modRevision);
    std::string msg;
    if (!opts.uid.empty() && opts.uid != uid) {
      msg = fmt::format("Precondition failed: UID in precondition: {}, UID in object meta: {}", opts.uid, uid);
    } else if (!opts.resourceVersion.empty() && opts.resourceVersion != rv) {
      msg = fmt::format("Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                        opts.resourceVersion, rv);
    }
    if (!msg.empty()) return sendError(w, ApiError{409, "Conflict", msg, n, r.group, r.plural});
  }
  if (obj && r.kind == "Namespace" && r.group.empty()) {
    if (n == "default" || n == "kube-system" || n == "kube-public") {
      return sendError(w, ApiError{403, "Forbidden",
                                   fmt::format("namespaces \"{}\" is forbidden: this namespace may not be deleted", n), n,
                                   "", "namespaces"});
    }
    if (beingDeleted(*obj)) return sendJson(w, 200, *obj);
    json::object& meta = (*obj)["metadata"].as_object();
    meta["deletionTimestamp"] = rfc3339Now();
    meta["deletionGracePeriodSeconds"] = 0;
    meta.erase("resourceVersion");
    (*obj)["status"] = json::object{{"phase", "Terminating"}};
    return write(Write{Write::Op::kUpdate, current->key, json::serialize(*obj), current->modRevision}, dryRun,
                 [this, w, &r, n, again](base::Result<KeyValue> kv) {
                   if (!kv && again(kv.error())) return;
                   if (!kv) return sendError(w, fromStoreError(kv.error(), r, n));
                   sendJson(w, 200, *decode(*kv));
                   wakeFinalizer();
                 });
  }
  std::string_view gcFinalizer = opts.propagation == "Foreground" ? "foregroundDeletion"
                                 : opts.propagation == "Orphan"   ? "orphan"
                                                                  : "";
  if (obj && (hasFinalizers(*obj) || !gcFinalizer.empty())) {
    // Finalizers hold the object: mark it deleted and let them finish.
    json::object& meta = (*obj)["metadata"].as_object();
    json::value& fins = meta["finalizers"];
    if (!fins.is_array()) fins = json::array();
    bool hasGc = gcFinalizer.empty();
    for (const json::value& f : fins.get_array()) hasGc = hasGc || (f.is_string() && f.get_string() == gcFinalizer);
    if (beingDeleted(*obj) && hasGc) return opts.evicted ? sendJson(w, 201, evictedStatus()) : sendJson(w, 200, *obj);
    if (!hasGc) fins.get_array().push_back(json::string(gcFinalizer));
    if (!beingDeleted(*obj)) {
      meta["deletionTimestamp"] = rfc3339Now();
      meta["deletionGracePeriodSeconds"] = 0;
    }
    meta.erase("resourceVersion");
    return write(Write{Write::Op::kUpdate, current->key, json::serialize(*obj), current->modRevision}, dryRun,
                 [w, &r, n, again, evicted = opts.evicted](base::Result<KeyValue> kv) {
                   if (!kv && again(kv.error())) return;
                   if (!kv) return sendError(w, fromStoreError(kv.error(), r, n));
                   if (evicted) return sendJson(w, 201, evictedStatus());
                   sendJson(w, 200, *decode(*kv));
                 });
  }
  write(Write{Write::Op::kDelete, r.key(ns, name), "", opts.resourceVersion.empty() && opts.uid.empty() ? 0 : current->modRevision},
        dryRun, [w, &r, n, evicted = opts.evicted](base::Result<KeyValue> kv) {
    if (!kv) return sendError(w, fromStoreError(kv.error(), r, n));
    if (evicted) return sendJson(w, 201, evictedStatus());
    auto obj = decode(*kv);
    sendJson(w, 200, *obj);
  });
}

void ApiHandler::startNamespaceFinalizer() {
  Impl* im = impl_.get();
  im->finalizer = std::thread([im] { im->runFinalizer(); });
}

// Every terminating namespace: delete what is in it (objects with finalizers
// are marked and waited for), then the namespace. Runs when woken and every
// second, so a crash mid-way is finished after the restart.
void ApiHandler::Impl::runFinalizer() {
  const ResourceInfo& nsr = *findResource("", "v1", "namespaces");
  for (;;) {
    {
      std::unique_lock g(finMu);
      finCv.wait_for(g, std::chrono::seconds(1), [&] { return finStop || finWake; });
      if (finStop) return;
      finWake = false;
    }
    bool again = false;
    for (const KeyValue& kv : cache.list(nsr.keyPrefix()).items) {
      auto obj = decode(kv);
      if (!obj || !beingDeleted(*obj)) continue;
      std::string ns(objectName(*obj));
      if (!finalizeNamespace(ns)) {
        again = true;
        continue;
      }
      auto gone = writeAndWait(store, Write{Write::Op::kDelete, kv.key, "", kv.modRevision});
      if (!gone && gone.error().code() != base::ErrorCode::kNotFound) again = true;
    }
    if (again) {
      std::lock_guard g(finMu);
      finWake = false;  // poll again after the wait above
    }
  }
}

// Deletes the namespace's contents; true once nothing is left in it.
bool ApiHandler::Impl::finalizeNamespace(const std::string& ns) {
  bool empty = true;
  for (const ResourceInfo& r : servedResources()) {
    if (!r.namespaced) continue;
    for (const KeyValue& kv : cache.list(r.keyPrefix() + ns + "/").items) {
      empty = false;
      auto obj = decode(kv);
      if (!obj) continue;
      if (hasFinalizers(*obj)) {
        if (beingDeleted(*obj)) continue;  // waiting for its finalizers
        json::object& meta = (*obj)["metadata"].as_object();
        meta["deletionTimestamp"] = rfc3339Now();
        meta["deletionGracePeriodSeconds"] = 0;
        meta.erase("resourceVersion");
        static_cast<void>(writeAndWait(store, Write{Write::Op::kUpdate, kv.key, json::serialize(*obj), kv.modRevision}));
        continue;  // a conflict is retried on the next pass
      }
      static_cast<void>(writeAndWait(store, Write{Write::Op::kDelete, kv.key, "", kv.modRevision}));
    }
  }
  return empty;
}

}  // namespace trellis::apiserver
