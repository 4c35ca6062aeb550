#include "common/kube/object.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/numbers.h"

namespace trellis::kube {

namespace json = boost::json;

const json::value* field(const json::object& obj, Path path) {
  const json::object* cur = &obj;
  const json::value* v = nullptr;
  for (std::string_view step : path) {
    if (!cur) return nullptr;
    v = cur->if_contains(step);
    if (!v) return nullptr;
    cur = v->is_object() ? &v->get_object() : nullptr;
  }
  return v;
}

const json::object* child(const json::object& obj, Path path) {
  const json::value* v = field(obj, path);
  return v && v->is_object() ? &v->get_object() : nullptr;
}

const json::array* array(const json::object& obj, Path path) {
  const json::value* v = field(obj, path);
  return v && v->is_array() ? &v->get_array() : nullptr;
}

std::string_view str(const json::object& obj, Path path) {
  const json::value* v = field(obj, path);
  return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

int64_t integer(const json::object& obj, Path path, int64_t otherwise) {
  const json::value* v = field(obj, path);
  if (!v) return otherwise;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  if (v->is_double()) return static_cast<int64_t>(v->get_double());
  return otherwise;
}

bool boolean(const json::object& obj, Path path, bool otherwise) {
  const json::value* v = field(obj, path);
  return v && v->is_bool() ? v->get_bool() : otherwise;
}

json::object& ensureObject(json::object& obj, Path path) {
  json::object* cur = &obj;
  for (std::string_view step : path) {
    json::value& v = (*cur)[step];
    if (!v.is_object()) v = json::object();
    cur = &v.get_object();
  }
  return *cur;
}

std::string_view uid(const json::object& obj) { return str(obj, {"metadata", "uid"}); }

bool beingDeleted(const json::object& obj) {
  const json::value* v = field(obj, {"metadata", "deletionTimestamp"});
  return v && !v->is_null();
}

std::map<std::string, std::string> labels(const json::object& obj) {
  std::map<std::string, std::string> out;
  if (const json::object* l = child(obj, {"metadata", "labels"})) {
    for (const auto& [k, v] : *l) {
      if (v.is_string()) out.emplace(k, v.get_string());
    }
  }
  return out;
}

std::string_view annotation(const json::object& obj, std::string_view key) {
  const json::object* a = child(obj, {"metadata", "annotations"});
  if (!a) return {};
  const json::value* v = a->if_contains(key);
  return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

bool hasFinalizer(const json::object& obj, std::string_view name) {
  if (const json::array* f = array(obj, {"metadata", "finalizers"})) {
    for (const json::value& v : *f) {
      if (v.is_string() && v.get_string() == name) return true;
    }
  }
  return false;
}

std::optional<std::string> removeFinalizerPatch(const json::object& obj, std::string_view name) {
  if (!hasFinalizer(obj, name)) return std::nullopt;
  json::array rest;
  for (const json::value& v : *array(obj, {"metadata", "finalizers"})) {
    if (!(v.is_string() && v.get_string() == name)) rest.push_back(v);
  }
  json::object meta{{"finalizers", std::move(rest)}};
  if (auto rv = str(obj, {"metadata", "resourceVersion"}); !rv.empty()) meta["resourceVersion"] = rv;
  return json::serialize(json::object{{"metadata", std::move(meta)}});
}

std::optional<std::string> addFinalizerPatch(const json::object& obj, std::string_view name) {
  if (hasFinalizer(obj, name)) return std::nullopt;
  json::array list;
  if (const json::array* f = array(obj, {"metadata", "finalizers"})) list = *f;
  list.push_back(json::string(name));
  json::object meta{{"finalizers", std::move(list)}};
  if (auto rv = str(obj, {"metadata", "resourceVersion"}); !rv.empty()) meta["resourceVersion"] = rv;
  return json::serialize(json::object{{"metadata", std::move(meta)}});
}

std::vector<OwnerReference> ownerReferences(const json::object& obj) {
  std::vector<OwnerReference> out;
  const json::array* refs = array(obj, {"metadata", "ownerReferences"});
  if (!refs) return out;
  for (const json::value& v : *refs) {
    if (!v.is_object()) continue;
    const json::object& r = v.get_object();
    out.push_back(OwnerReference{std::string(str(r, {"apiVersion"})), std::string(str(r, {"kind"})),
                                 std::string(str(r, {"name"})), std::string(str(r, {"uid"})),
                                 boolean(r, {"controller"}), boolean(r, {"blockOwnerDeletion"})});
  }
  return out;
}

json::object toJson(const OwnerReference& ref) {
  json::object o{{"apiVersion", ref.apiVersion}, {"kind", ref.kind}, {"name", ref.name}, {"uid", ref.uid}};
  if (ref.controller) o["controller"] = true;
  if (ref.blockOwnerDeletion) o["blockOwnerDeletion"] = true;
  return o;
}

std::optional<OwnerReference> controllerOf(const json::object& obj) {
  for (OwnerReference& r : ownerReferences(obj)) {
    if (r.controller) return std::move(r);
  }
  return std::nullopt;
}

base::Result<LabelSelector> LabelSelector::fromJson(const json::value* v) {
  LabelSelector s;
  if (!v || v->is_null()) return s;
  if (!v->is_object()) return base::makeError(base::ErrorCode::kInvalidArgument, "a label selector must be an object");
  s.null_ = false;
  const json::object& o = v->get_object();
  if (const json::object* ml = child(o, {"matchLabels"})) {
    for (const auto& [k, val] : *ml) {
      if (!val.is_string()) return base::makeError(base::ErrorCode::kInvalidArgument, "matchLabels[{}] is not a string", std::string(k));
      s.reqs_.push_back({std::string(k), Requirement::Op::kIn, {std::string(val.get_string())}});
    }
  }
  if (const json::array* me = array(o, {"matchExpressions"})) {
    for (const json::value& e : *me) {
      if (!e.is_object()) return base::makeError(base::ErrorCode::kInvalidArgument, "matchExpressions holds a non-object");
      const json::object& x = e.get_object();
      Requirement r{std::string(str(x, {"key"})), Requirement::Op::kIn, {}};
      std::string_view op = str(x, {"operator"});
      if (op == "In") r.op = Requirement::Op::kIn;
      else if (op == "NotIn") r.op = Requirement::Op::kNotIn;
      else if (op == "Exists") r.op = Requirement::Op::kExists;
      else if (op == "DoesNotExist") r.op = Requirement::Op::kDoesNotExist;
      else return base::makeError(base::ErrorCode::kInvalidArgument, "\"{}\" is not a valid label selector operator", op);
      if (const json::array* vals = array(x, {"values"})) {
        for (const json::value& val : *vals) {
          if (val.is_string()) r.values.emplace_back(val.get_string());
        }
      }
      s.reqs_.push_back(std::move(r));
    }
  }
  return s;
}

LabelSelector LabelSelector::fromMap(const json::value* v) {
  LabelSelector s;
  if (!v || !v->is_object()) return s;
  s.null_ = false;
  for (const auto& [k, val] : v->get_object()) {
    if (val.is_string()) s.reqs_.push_back({std::string(k), Requirement::Op::kIn, {std::string(val.get_string())}});
  }
  return s;
}

bool LabelSelector::matches(const std::map<std::string, std::string>& labels) const {
  if (null_) return false;
  for (const Requirement& r : reqs_) {
    auto it = labels.find(r.key);
    bool in = it != labels.end() && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    switch (r.op) {
      case Requirement::Op::kIn: if (!in) return false; break;
      case Requirement::Op::kNotIn: if (in) return false; break;
      case Requirement::Op::kExists: if (it == labels.end()) return false; break;
      case Requirement::Op::kDoesNotExist: if (it != labels.end()) return false; break;
    }
  }
  return true;
}

namespace {

bool expressionMatches(const json::object& x, const std::map<std::string, std::string>& values) {
  std::string_view key = str(x, {"key"}), op = str(x, {"operator"});
  auto it = values.find(std::string(key));
  std::vector<std::string_view> vals;
  if (const json::array* a = array(x, {"values"})) {
    for (const json::value& v : *a) {
      if (v.is_string()) vals.push_back(v.get_string());
    }
  }
  bool present = it != values.end();
  bool in = present && std::find(vals.begin(), vals.end(), it->second) != vals.end();
  if (op == "In") return in;
  if (op == "NotIn") return !in;
  if (op == "Exists") return present;
  if (op == "DoesNotExist") return !present;
  if (op == "Gt" || op == "Lt") {
    if (!present || vals.size() != 1) return false;
    auto have = base::parseInt(it->second, INT64_MIN, INT64_MAX, "label");
    auto want = base::parseInt(vals[0], INT64_MIN, INT64_MAX, "value");
    if (!have || !want) return false;
    return op == "Gt" ? *have > *want : *have < *want;
  }
  return false;
}

}  // namespace

bool nodeSelectorTermsMatch(const json::array& terms, const json::object& node) {
  auto nodeLabels = labels(node);
  std::map<std::string, std::string> fields{{"metadata.name", std::string(str(node, {"metadata", "name"}))}};
  for (const json::value& t : terms) {
    if (!t.is_object()) continue;
    const json::array* exprs = array(t.get_object(), {"matchExpressions"});
    const json::array* flds = array(t.get_object(), {"matchFields"});
    if ((!exprs || exprs->empty()) && (!flds || flds->empty())) continue;  // an empty term matches nothing
    bool ok = true;
    for (const json::array* list : {exprs, flds}) {
      if (!list) continue;
      for (const json::value& x : *list) {
        if (!x.is_object() || !expressionMatches(x.get_object(), list == exprs ? nodeLabels : fields)) ok = false;
      }
    }
    if (ok) return true;
  }
  return false;
}

std::string formatRfc3339(int64_t unixSeconds) {
  time_t secs = static_cast<time_t>(unixSeconds);
  tm t;
  gmtime_r(&secs, &t);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

std::string rfc3339Now() { return formatRfc3339(time(nullptr)); }

std::string microTimeNow() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  std::string s = formatRfc3339(ts.tv_sec);
  s.pop_back();  // the 'Z'
  return fmt::format("{}.{:06d}Z", s, ts.tv_nsec / 1000);
}

std::optional<int64_t> parseRfc3339(std::string_view text) {
  tm t{};
  std::string s(text);
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &t);
  if (!rest) return std::nullopt;
  if (*rest == '.') {
    ++rest;
    while (*rest >= '0' && *rest <= '9') ++rest;
  }
  int64_t offset = 0;
  if (*rest == 'Z' || *rest == 'z') {
    ++rest;
  } else if (*rest == '+' || *rest == '-') {
    int sign = *rest == '-' ? -1 : 1;
    int hh = 0, mm = 0;
    if (sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2) return std::nullopt;
    offset = sign * (hh * 3600 + mm * 60);
    rest += 6;
  } else {
    return std::nullopt;
  }
  if (*rest) return std::nullopt;
  return static_cast<int64_t>(timegm(&t)) - offset;
}

}  // namespace trellis::kube
