#include "apiserver-lite/registry/kinds.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/base64.h"
#include "common/kube/cron.h"

namespace trellis::apiserver::registry {

namespace json = boost::json;
using kube::parseQuantity;
using kube::kQuantityFormatError;

namespace {

// ---- access helpers ---------------------------------------------------------

const json::value* get(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}
const json::object* obj(const json::object& o, std::string_view key) {
  const json::value* v = get(o, key);
  return v && v->is_object() ? &v->get_object() : nullptr;
}
const json::array* arr(const json::object& o, std::string_view key) {
  const json::value* v = get(o, key);
  return v && v->is_array() ? &v->get_array() : nullptr;
}
std::string str(const json::object& o, std::string_view key) {
  const json::value* v = get(o, key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}
bool has(const json::object& o, std::string_view key) { return get(o, key) != nullptr; }
json::object* mobj(json::object& o, std::string_view key) {
  json::value* v = o.if_contains(key);
  return v && v->is_object() ? &v->get_object() : nullptr;
}
json::object& ensure(json::object& o, std::string_view key) {
  json::value& v = o[key];
  if (!v.is_object()) v = json::object{};
  return v.get_object();
}
void def(json::object& o, std::string_view key, json::value v) {
  if (!get(o, key)) o[key] = std::move(v);
}
template <typename Fn>
void eachObject(json::object& o, std::string_view key, Fn fn) {
  json::value* v = o.if_contains(key);
  if (!v || !v->is_array()) return;
  for (json::value& e : v->get_array()) {
    if (e.is_object()) fn(e.get_object());
  }
}
std::string idx(const std::string& path, size_t i) { return fmt::format("{}[{}]", path, i); }
std::string render(const json::value& v) { return json::serialize(v); }

// ---- defaults ---------------------------------------------------------------

void containerDefaults(json::object& c) {
  def(c, "terminationMessagePath", "/dev/termination-log");
  def(c, "terminationMessagePolicy", "File");
  def(c, "resources", json::object{});
  std::string image = str(c, "image");
  size_t slash = image.rfind('/');
  std::string_view last = std::string_view(image).substr(slash == std::string::npos ? 0 : slash + 1);
  bool latest = image.find('@') == std::string::npos &&
                (last.find(':') == std::string_view::npos || last.ends_with(":latest"));
  def(c, "imagePullPolicy", latest ? "Always" : "IfNotPresent");
  eachObject(c, "ports", [](json::object& p) { def(p, "protocol", "TCP"); });
}

void podSpecDefaults(json::object& spec) {
  def(spec, "restartPolicy", "Always");
  def(spec, "dnsPolicy", "ClusterFirst");
  def(spec, "schedulerName", "default-scheduler");
  def(spec, "terminationGracePeriodSeconds", 30);
  def(spec, "securityContext", json::object{});
  def(spec, "enableServiceLinks", true);
  eachObject(spec, "containers", containerDefaults);
  eachObject(spec, "initContainers", containerDefaults);
}

void templateDefaults(json::object& o) {
  json::object* spec = mobj(o, "spec");
  if (!spec) return;
  json::object* tmpl = mobj(*spec, "template");
  if (!tmpl) return;
  if (json::object* ps = mobj(*tmpl, "spec")) podSpecDefaults(*ps);
}

std::string qosClass(const json::object& spec) {
  bool any = false, guaranteed = true;
  const json::array* cs = arr(spec, "containers");
  for (size_t i = 0; cs && i < cs->size(); ++i) {
    if (!(*cs)[i].is_object()) continue;
    const json::object* res = obj((*cs)[i].get_object(), "resources");
    const json::object* req = res ? obj(*res, "requests") : nullptr;
    const json::object* lim = res ? obj(*res, "limits") : nullptr;
    any = any || (req && !req->empty()) || (lim && !lim->empty());
    for (const char* r : {"cpu", "memory"}) {
      const json::value* l = lim ? get(*lim, r) : nullptr;
      const json::value* q = req ? get(*req, r) : nullptr;
      if (!l || (q && *q != *l)) guaranteed = false;
    }
  }
  return !any ? "BestEffort" : guaranteed ? "Guaranteed" : "Burstable";
}

void addFinalizer(json::object& o, std::string_view name) {
  json::value& f = ensure(o, "metadata")["finalizers"];
  if (!f.is_array()) f = json::array{};
  for (const json::value& e : f.get_array()) {
    if (e.is_string() && e.get_string() == name) return;
  }
  f.get_array().emplace_back(name);
}

// A Job's spec defaults (kube's SetDefaults_Job): with neither completions
// nor parallelism both are 1; backoffLimit 6 (unbounded per index when
// backoffLimitPerIndex is set).
void jobSpecDefaults(json::object& spec) {
  if (!has(spec, "completions") && !has(spec, "parallelism")) {
    spec["completions"] = 1;
    spec["parallelism"] = 1;
  }
  def(spec, "parallelism", 1);
  def(spec, "backoffLimit", has(spec, "backoffLimitPerIndex") ? 2147483647 : 6);
  def(spec, "completionMode", "NonIndexed");
  def(spec, "suspend", false);
  def(spec, "podReplacementPolicy", has(spec, "podFailurePolicy") ? "Failed" : "TerminatingOrFailed");
}

// Without manualSelector, kube-apiserver labels the template with the Job's
// uid and name and selects on the uid (set by the create path before this).
void generateJobSelector(json::object& o) {
  json::object& spec = ensure(o, "spec");
  const json::value* manual = get(spec, "manualSelector");
  if ((manual && manual->is_bool() && manual->get_bool()) || has(spec, "selector")) return;
  std::string uid = str(ensure(o, "metadata"), "uid");
  std::string name = str(ensure(o, "metadata"), "name");
  if (uid.empty()) return;
  json::object& labels = ensure(ensure(ensure(spec, "template"), "metadata"), "labels");
  for (const char* key : {"batch.kubernetes.io/controller-uid", "controller-uid"}) labels[key] = uid;
  for (const char* key : {"batch.kubernetes.io/job-name", "job-name"}) labels[key] = name;
  spec["selector"] = json::object{{"matchLabels", json::object{{"batch.kubernetes.io/controller-uid", uid}}}};
}

// ---- validation helpers -------------------------------------------------------

struct Errs {
  FieldErrors list;
  void required(std::string f, std::string detail = "") { list.push_back(FieldError::required(std::move(f), std::move(detail))); }
  void invalid(std::string f, std::string_view value, std::string detail) {
    list.push_back(FieldError::invalid(std::move(f), value, std::move(detail)));
  }
  void invalidRaw(std::string f, std::string value, std::string detail) {
    list.push_back(FieldError{FieldError::Type::kInvalid, std::move(f), std::move(value), std::move(detail)});
  }
  void forbidden(std::string f, std::string detail) { list.push_back(FieldError::forbidden(std::move(f), std::move(detail))); }
  void duplicate(std::string f, std::string_view value) {
    list.push_back(FieldError{FieldError::Type::kDuplicate, std::move(f), goQuote(value), ""});
  }
  // Unsupported value unless `value` is one of `allowed` (sorted, as kube prints them).
  void oneOf(const std::string& f, const std::string& value, std::initializer_list<std::string_view> allowed) {
    for (std::string_view a : allowed) {
      if (value == a) return;
    }
    std::string detail = "supported values: ";
    bool first = true;
    for (std::string_view a : allowed) {
      detail += (first ? "" : ", ") + goQuote(a);
      first = false;
    }
    list.push_back(FieldError{FieldError::Type::kNotSupported, f, goQuote(value), detail});
  }
  void port(const std::string& f, const json::object& o, std::string_view key, bool required) {
    const json::value* v = get(o, key);
    if (!v) {
      if (required) this->required(f + "." + std::string(key));
      return;
    }
    if (!v->is_int64() || v->get_int64() < 1 || v->get_int64() > 65535) {
      invalidRaw(f + "." + std::string(key), render(*v), "must be between 1 and 65535, inclusive");
    }
  }
  void name(const std::string& f, const std::string& value, std::vector<std::string> (*check)(std::string_view)) {
    appendInvalid(list, f, value, check);
  }
};

std::vector<std::string> isConfigKey(std::string_view k) {
  bool ok = !k.empty() && k.size() <= 253 && k != "." && k != ".." && !k.starts_with("..");
  for (char c : k) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
  if (ok) return {};
  return {"a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
          "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"};
}

// Without the '*.' of a wildcard host.
std::vector<std::string> isWildcardOrSubdomain(std::string_view h) {
  if (h.starts_with("*.")) h.remove_prefix(2);
  return isDns1123Subdomain(h);
}

bool looksLikeIp(std::string_view h) {
  return !h.empty() && (h.find(':') != std::string_view::npos ||
                        h.find_first_not_of("0123456789.") == std::string_view::npos);
}

void validateContainers(Errs& e, const json::object& spec, const std::string& path, std::string_view key, bool required) {
  const json::array* cs = arr(spec, key);
  std::string f = path + "." + std::string(key);
  if (!cs || cs->empty()) {
    if (required) e.required(f);
    return;
  }
  std::set<std::string> names;
  for (size_t i = 0; i < cs->size(); ++i) {
    std::string ci = idx(f, i);
    if (!(*cs)[i].is_object()) {
      e.invalidRaw(ci, render((*cs)[i]), "must be an object");
      continue;
    }
    const json::object& c = (*cs)[i].get_object();
    std::string name = str(c, "name");
    if (name.empty()) {
      e.required(ci + ".name");
    } else {
      e.name(ci + ".name", name, isDns1123Label);
      if (!names.insert(name).second) e.duplicate(ci + ".name", name);
    }
    if (str(c, "image").empty()) e.required(ci + ".image");
    const json::array* ports = arr(c, "ports");
    for (size_t p = 0; ports && p < ports->size(); ++p) {
      if (!(*ports)[p].is_object()) continue;
      const json::object& po = (*ports)[p].get_object();
      std::string pi = idx(ci + ".ports", p);
      e.port(pi, po, "containerPort", true);
      if (has(po, "hostPort")) e.port(pi, po, "hostPort", false);
      if (has(po, "protocol")) e.oneOf(pi + ".protocol", str(po, "protocol"), {"SCTP", "TCP", "UDP"});
    }
  }
}

void validatePodSpec(Errs& e, const json::object& spec, const std::string& path, bool workload) {
  validateContainers(e, spec, path, "containers", true);
  validateContainers(e, spec, path, "initContainers", false);
  if (workload) {
    e.oneOf(path + ".restartPolicy", str(spec, "restartPolicy"), {"Always"});
  } else {
    e.oneOf(path + ".restartPolicy", str(spec, "restartPolicy"), {"Always", "Never", "OnFailure"});
  }
  e.oneOf(path + ".dnsPolicy", str(spec, "dnsPolicy"), {"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"});
}

// The template's labels must satisfy the selector's matchLabels.
void selectorMatchesTemplate(Errs& e, const json::object* sel, const json::object* tmpl, const std::string& path) {
  const json::object* matchLabels = sel ? obj(*sel, "matchLabels") : nullptr;
  const json::object* tmeta = tmpl ? obj(*tmpl, "metadata") : nullptr;
  const json::object* labels = tmeta ? obj(*tmeta, "labels") : nullptr;
  if (!matchLabels) return;
  bool matches = true;
  for (const auto& [k, v] : *matchLabels) {
    const json::value* have = labels ? get(*labels, k) : nullptr;
    matches = matches && have && *have == v;
  }
  if (!matches) {
    e.invalidRaw(path + "template.metadata.labels", labels ? render(*labels) : "null",
                 "`selector` does not match template `labels`");
  }
}

// A Deployment's, ReplicaSet's or DaemonSet's selector and template.
void validateWorkload(Errs& e, const json::object& o, const json::object* old, std::string_view kind) {
  const json::object* spec = obj(o, "spec");
  if (!spec) {
    e.required("spec");
    return;
  }
  if (const json::value* r = get(*spec, "replicas"); r && (!r->is_int64() || r->get_int64() < 0)) {
    e.invalidRaw("spec.replicas", render(*r), "must be greater than or equal to 0");
  }
  const json::object* sel = obj(*spec, "selector");
  const json::object* matchLabels = sel ? obj(*sel, "matchLabels") : nullptr;
  const json::array* exprs = sel ? arr(*sel, "matchExpressions") : nullptr;
  if (!sel) {
    e.required("spec.selector");
  } else if ((!matchLabels || matchLabels->empty()) && (!exprs || exprs->empty())) {
    std::string k(kind);
    for (char& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    e.invalidRaw("spec.selector", render(*sel), "empty selector is invalid for " + k);
  }
  const json::object* tmpl = obj(*spec, "template");
  selectorMatchesTemplate(e, sel, tmpl, "spec.");
  const json::object* podSpec = tmpl ? obj(*tmpl, "spec") : nullptr;
  if (!podSpec) {
    e.required("spec.template.spec.containers");
  } else {
    validatePodSpec(e, *podSpec, "spec.template.spec", true);
  }
  if (old) {
    const json::object* oldSpec = obj(*old, "spec");
    const json::value* oldSel = oldSpec ? get(*oldSpec, "selector") : nullptr;
    if (oldSel && sel && *oldSel != json::value(*sel)) e.invalidRaw("spec.selector", render(*sel), "field is immutable");
  }
}

void specImmutable(Errs& e, const json::object& o, const json::object* old, std::string_view field) {
  if (!old) return;
  const json::object* spec = obj(o, "spec");
  const json::object* oldSpec = obj(*old, "spec");
  const json::value* a = spec ? get(*spec, field) : nullptr;
  const json::value* b = oldSpec ? get(*oldSpec, field) : nullptr;
  if ((a == nullptr) != (b == nullptr) || (a && *a != *b)) {
    e.invalidRaw("spec." + std::string(field), a ? render(*a) : "null", "field is immutable");
  }
}

// A value that must be a non-negative integer when present.
void nonNegative(Errs& e, const json::object& o, std::string_view key, const std::string& path, bool positive = false) {
  const json::value* v = get(o, key);
  if (!v) return;
  if (!v->is_int64() || v->get_int64() < (positive ? 1 : 0)) {
    e.invalidRaw(path, render(*v), positive ? "must be greater than 0" : "must be greater than or equal to 0");
  }
}

// An IntOrString that must be a non-negative integer or a percentage.
void intOrPercent(Errs& e, const json::object& o, std::string_view key, const std::string& path) {
  const json::value* v = get(o, key);
  if (!v) return;
  if (v->is_int64()) {
    if (v->get_int64() < 0) e.invalidRaw(path, render(*v), "must be greater than or equal to 0");
    return;
  }
  std::string_view t = v->is_string() ? std::string_view(v->get_string()) : std::string_view();
  bool percent = t.size() >= 2 && t.back() == '%' && t.substr(0, t.size() - 1).find_first_not_of("0123456789") == std::string_view::npos;
  if (!percent) {
    e.invalidRaw(path, render(*v), "a valid percent string must be a numeric string followed by an ending '%' (e.g. "
                                   "'1%',  or '93%', regex used for validation is '[0-9]+%')");
  } else if (std::stoll(std::string(t.substr(0, std::min<size_t>(t.size() - 1, 6)))) > 100) {
    e.invalidRaw(path, render(*v), "must not be greater than 100%");
  }
}

// A Job's spec (also a CronJob's jobTemplate.spec at `path`).
void validateJobSpec(Errs& e, const json::object& spec, const std::string& path, bool selectorRequired) {
  for (const char* f : {"parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished", "backoffLimitPerIndex",
                        "maxFailedIndexes"}) {
    nonNegative(e, spec, f, path + "." + f);
  }
  nonNegative(e, spec, "activeDeadlineSeconds", path + ".activeDeadlineSeconds", true);
  std::string mode = str(spec, "completionMode");
  if (!mode.empty()) e.oneOf(path + ".completionMode", mode, {"NonIndexed", "Indexed"});
  if (mode == "Indexed" && !has(spec, "completions")) e.required(path + ".completions", "when completion mode is Indexed");
  if (has(spec, "backoffLimitPerIndex") && mode != "Indexed") {
    e.required(path + ".completionMode", "when backoffLimitPerIndex is specified, completionMode must be Indexed");
  }
  const json::object* tmpl = obj(spec, "template");
  const json::object* podSpec = tmpl ? obj(*tmpl, "spec") : nullptr;
  if (!podSpec) {
    e.required(path + ".template.spec.containers");
    return;
  }
  validateContainers(e, *podSpec, path + ".template.spec", "containers", true);
  validateContainers(e, *podSpec, path + ".template.spec", "initContainers", false);
  std::string restart = str(*podSpec, "restartPolicy");
  if (restart != "OnFailure" && restart != "Never") {
    e.list.push_back(FieldError{FieldError::Type::kNotSupported, path + ".template.spec.restartPolicy", goQuote(restart),
                                R"(supported values: "OnFailure", "Never")"});
  }
  const json::object* sel = obj(spec, "selector");
  if (selectorRequired && !sel) e.required(path + ".selector");
  selectorMatchesTemplate(e, sel, tmpl, path + ".");
  if (const json::object* pfp = obj(spec, "podFailurePolicy")) {
    if (restart != "Never") {
      e.invalid(path + ".template.spec.restartPolicy", restart,
                "only \"Never\" is supported when podFailurePolicy is specified");
    }
    const json::array* rules = arr(*pfp, "rules");
    for (size_t i = 0; rules && i < rules->size(); ++i) {
      if (!(*rules)[i].is_object()) continue;
      const json::object& rule = (*rules)[i].get_object();
      std::string f = idx(path + ".podFailurePolicy.rules", i);
      e.oneOf(f + ".action", str(rule, "action"), {"Count", "FailIndex", "FailJob", "Ignore"});
      const json::object* codes = obj(rule, "onExitCodes");
      const json::array* conds = arr(rule, "onPodConditions");
      if ((codes != nullptr) == (conds != nullptr && !conds->empty())) {
        e.invalidRaw(f, render(rule), "specifying one of OnExitCodes and OnPodConditions is required");
      }
      if (codes) {
        e.oneOf(f + ".onExitCodes.operator", str(*codes, "operator"), {"In", "NotIn"});
        const json::array* values = arr(*codes, "values");
        if (!values || values->empty()) e.required(f + ".onExitCodes.values", "at least one value is required");
      }
    }
  }
}

void validateJob(Errs& e, const json::object& o, const json::object* old) {
  const json::object* spec = obj(o, "spec");
  if (!spec) return e.required("spec");
  validateJobSpec(e, *spec, "spec", true);
  const json::value* manual = get(*spec, "manualSelector");
  bool isManual = manual && manual->is_bool() && manual->get_bool();
  const json::object* meta = obj(o, "metadata");
  std::string uid = meta ? str(*meta, "uid") : "";
  if (!old && !isManual && obj(*spec, "selector")) {
    json::value generated = json::object{{"matchLabels", json::object{{"batch.kubernetes.io/controller-uid", uid}}}};
    if (*get(*spec, "selector") != generated) {
      e.invalidRaw("spec.selector", render(*get(*spec, "selector")), "`selector` will be auto-generated");
    }
  }
  if (!old) return;
  const json::object* oldSpec = obj(*old, "spec");
  if (!oldSpec) return;
  for (std::string_view f : {"selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex"}) {
    specImmutable(e, o, old, f);
  }
  // completions may change only with parallelism on an Indexed Job (elastic).
  const json::value* c = get(*spec, "completions");
  const json::value* oc = get(*oldSpec, "completions");
  if ((c == nullptr) != (oc == nullptr) || (c && *c != *oc)) {
    bool elastic = str(*spec, "completionMode") == "Indexed" && c && get(*spec, "parallelism") &&
                   *c == *get(*spec, "parallelism");
    if (!elastic) e.invalidRaw("spec.completions", c ? render(*c) : "null", "field is immutable");
  }
  // The template only while suspended (a resumed Job keeps what it started with).
  const json::value* t = get(*spec, "template");
  const json::value* ot = get(*oldSpec, "template");
  const json::value* suspended = get(*oldSpec, "suspend");
  bool wasSuspended = suspended && suspended->is_bool() && suspended->get_bool();
  if (t && ot && *t != *ot && !wasSuspended) {
    e.invalidRaw("spec.template", render(*t), "field is immutable");
  }
}

void validateCronJob(Errs& e, const json::object& o) {
  const json::object* meta = obj(o, "metadata");
  if (std::string name = meta ? str(*meta, "name") : ""; name.size() > 52) {
    e.invalid("metadata.name", name, "must be no more than 52 characters");
  }
  const json::object* spec = obj(o, "spec");
  if (!spec) return e.required("spec");
  std::string schedule = str(*spec, "schedule");
  std::string zone = str(*spec, "timeZone");
  if (schedule.empty()) {
    e.required("spec.schedule");
  } else if (schedule.find("TZ=") != std::string::npos) {
    if (has(*spec, "timeZone")) {
      e.invalid("spec.schedule", schedule, "cannot use both timeZone field and TZ or CRON_TZ in schedule");
    } else {
      e.invalid("spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
    }
  } else if (auto parsed = kube::CronSchedule::parse(schedule); !parsed) {
    e.invalid("spec.schedule", schedule, parsed.error().message());
  }
  if (has(*spec, "timeZone")) {
    if (auto tz = kube::TimeZone::load(zone); !tz || zone.empty()) {
      e.invalid("spec.timeZone", zone, "unknown time zone " + zone);
    }
  }
  std::string policy = str(*spec, "concurrencyPolicy");
  e.oneOf("spec.concurrencyPolicy", policy, {"Allow", "Forbid", "Replace"});
  nonNegative(e, *spec, "startingDeadlineSeconds", "spec.startingDeadlineSeconds");
  nonNegative(e, *spec, "successfulJobsHistoryLimit", "spec.successfulJobsHistoryLimit");
  nonNegative(e, *spec, "failedJobsHistoryLimit", "spec.failedJobsHistoryLimit");
  const json::object* jt = obj(*spec, "jobTemplate");
  const json::object* js = jt ? obj(*jt, "spec") : nullptr;
  if (!js) return e.required("spec.jobTemplate.spec.template.spec.containers");
  validateJobSpec(e, *js, "spec.jobTemplate.spec", false);
}

void validateStatefulSet(Errs& e, const json::object& o, const json::object* old) {
  validateWorkload(e, o, old, "StatefulSet");
  const json::object* spec = obj(o, "spec");
  if (!spec) return;
  e.oneOf("spec.podManagementPolicy", str(*spec, "podManagementPolicy"), {"OrderedReady", "Parallel"});
  const json::object* strategy = obj(*spec, "updateStrategy");
  std::string type = strategy ? str(*strategy, "type") : "";
  e.oneOf("spec.updateStrategy.type", type, {"OnDelete", "RollingUpdate"});
  if (const json::object* ru = strategy ? obj(*strategy, "rollingUpdate") : nullptr) {
    if (type == "OnDelete") e.forbidden("spec.updateStrategy.rollingUpdate", "only allowed for updateStrategy 'RollingUpdate'");
    nonNegative(e, *ru, "partition", "spec.updateStrategy.rollingUpdate.partition");
    intOrPercent(e, *ru, "maxUnavailable", "spec.updateStrategy.rollingUpdate.maxUnavailable");
    if (const json::value* mu = get(*ru, "maxUnavailable"); mu && ((mu->is_int64() && mu->get_int64() == 0) ||
                                                                   (mu->is_string() && mu->get_string() == "0%"))) {
      e.invalidRaw("spec.updateStrategy.rollingUpdate.maxUnavailable", render(*mu), "must be greater than 0");
    }
  }
  if (const json::object* ret = obj(*spec, "persistentVolumeClaimRetentionPolicy")) {
    e.oneOf("spec.persistentVolumeClaimRetentionPolicy.whenDeleted", str(*ret, "whenDeleted"), {"Retain", "Delete"});
    e.oneOf("spec.persistentVolumeClaimRetentionPolicy.whenScaled", str(*ret, "whenScaled"), {"Retain", "Delete"});
  }
  const json::array* vcts = arr(*spec, "volumeClaimTemplates");
  for (size_t i = 0; vcts && i < vcts->size(); ++i) {
    const json::object* t = (*vcts)[i].is_object() ? &(*vcts)[i].get_object() : nullptr;
    const json::object* m = t ? obj(*t, "metadata") : nullptr;
    std::string f = idx("spec.volumeClaimTemplates", i);
    if (!m || str(*m, "name").empty()) e.required(f + ".metadata.name");
    else e.name(f + ".metadata.name", str(*m, "name"), isDns1123Subdomain);
    const json::object* ts = t ? obj(*t, "spec") : nullptr;
    const json::array* modes = ts ? arr(*ts, "accessModes") : nullptr;
    if (!modes || modes->empty()) e.required(f + ".spec.accessModes", "at least 1 access mode is required");
  }
  if (old) {
    // Only these may change (kube's ValidateStatefulSetUpdate).
    const json::object* oldSpec = obj(*old, "spec");
    if (oldSpec) {
      json::object a = *spec, b = *oldSpec;
      for (json::object* x : {&a, &b}) {
        for (const char* f : {"replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
                              "persistentVolumeClaimRetentionPolicy", "minReadySeconds"}) {
          x->erase(f);
        }
      }
      if (a != b) {
        e.forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                            "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden");
      }
    }
  }
}

void validatePdb(Errs& e, const json::object& o) {
  const json::object* spec = obj(o, "spec");
  if (!spec) return;
  if (has(*spec, "minAvailable") && has(*spec, "maxUnavailable")) {
    e.invalidRaw("spec", render(*spec), "minAvailable and maxUnavailable cannot be both set");
  }
  intOrPercent(e, *spec, "minAvailable", "spec.minAvailable");
  intOrPercent(e, *spec, "maxUnavailable", "spec.maxUnavailable");
  if (std::string p = str(*spec, "unhealthyPodEvictionPolicy"); !p.empty()) {
    e.oneOf("spec.unhealthyPodEvictionPolicy", p, {"AlwaysAllow", "IfHealthyBudget"});
  }
}

void validateService(Errs& e, const json::object& o) {
  const json::object* spec = obj(o, "spec");
  if (!spec) {
    e.required("spec");
    return;
  }
  std::string type = str(*spec, "type");
  e.oneOf("spec.type", type, {"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"});
  if (type == "ExternalName") {
    std::string name = str(*spec, "externalName");
    if (name.empty()) e.required("spec.externalName");
    else e.name("spec.externalName", name, isDns1123Subdomain);
  }
  const json::array* ports = arr(*spec, "ports");
  bool headless = str(*spec, "clusterIP") == "None";
  if ((!ports || ports->empty()) && type != "ExternalName" && !headless) e.required("spec.ports");
  std::set<std::string> names;
  for (size_t i = 0; ports && i < ports->size(); ++i) {
    std::string pi = idx("spec.ports", i);
    if (!(*ports)[i].is_object()) continue;
    const json::object& p = (*ports)[i].get_object();
    std::string name = str(p, "name");
    if (name.empty() && ports->size() > 1) e.required(pi + ".name");
    if (!name.empty()) {
      e.name(pi + ".name", name, isDns1123Label);
      if (!names.insert(name).second) e.duplicate(pi + ".name", name);
    }
    e.port(pi, p, "port", true);
    e.oneOf(pi + ".protocol", str(p, "protocol"), {"SCTP", "TCP", "UDP"});
    if (const json::value* tp = get(p, "targetPort"); tp && tp->is_int64()) e.port(pi, p, "targetPort", false);
    if (has(p, "nodePort") && type == "ClusterIP") {
      e.forbidden(pi + ".nodePort", "may not be used when `type` is 'ClusterIP'");
    }
  }
  if (has(*spec, "sessionAffinity")) e.oneOf("spec.sessionAffinity", str(*spec, "sessionAffinity"), {"ClientIP", "None"});
}

void validatePvc(Errs& e, const json::object& o, const json::object* old) {
  const json::object* spec = obj(o, "spec");
  if (!spec) {
    e.required("spec");
    return;
  }
  const json::array* modes = arr(*spec, "accessModes");
  if (!modes || modes->empty()) e.required("spec.accessModes", "at least 1 access mode is required");
  for (size_t i = 0; modes && i < modes->size(); ++i) {
    e.oneOf(idx("spec.accessModes", i), (*modes)[i].is_string() ? std::string((*modes)[i].get_string()) : "",
            {"ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"});
  }
  const json::object* res = obj(*spec, "resources");
  const json::object* req = res ? obj(*res, "requests") : nullptr;
  std::string storage = req ? str(*req, "storage") : "";
  if (storage.empty()) {
    e.required("spec.resources[storage]");
  } else if (auto q = parseQuantity(storage); !q || *q <= 0) {
    e.invalid("spec.resources.requests[storage]", storage, "must be greater than zero");
  }
  if (has(*spec, "volumeMode")) e.oneOf("spec.volumeMode", str(*spec, "volumeMode"), {"Block", "Filesystem"});
  if (!old) return;
  // Only resources.requests (for bound claims) and volumeAttributesClassName
  // may change; volumeName and storageClassName may be set once.
  const json::object* oldSpec = obj(*old, "spec");
  if (!oldSpec) return;
  json::object a = *spec, b = *oldSpec;
  for (json::object* s : {&a, &b}) {
    s->erase("volumeAttributesClassName");
    if (json::object* r = mobj(*s, "resources")) r->erase("requests");
  }
  if (str(b, "volumeName").empty()) b.erase("volumeName"), a.erase("volumeName");
  if (!has(b, "storageClassName")) a.erase("storageClassName");
  bool bound = obj(*old, "status") && str(*obj(*old, "status"), "phase") == "Bound";
  const json::object* oldRes = obj(*oldSpec, "resources");
  const json::object* oldReq = oldRes ? obj(*oldRes, "requests") : nullptr;
  bool requestsChanged = (oldReq ? json::value(*oldReq) : json::value()) != (req ? json::value(*req) : json::value());
  if (a != b || (requestsChanged && !bound)) {
    e.forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName "
                        "for bound claims");
    return;
  }
  if (requestsChanged && !storage.empty()) {
    const json::object* st = obj(*old, "status");
    const json::object* cap = st ? obj(*st, "capacity") : nullptr;
    std::string floor = cap ? str(*cap, "storage") : (oldReq ? str(*oldReq, "storage") : "");
    auto now = parseQuantity(storage);
    auto min = parseQuantity(floor);
    if (now && min && *now < *min) {
      e.forbidden("spec.resources.requests.storage", "field can not be less than status.capacity");
    }
  }
}

constexpr std::string_view kVolumeSources[] = {
    "csi", "hostPath", "local", "nfs", "iscsi", "fc", "rbd", "cephfs", "glusterfs", "flexVolume", "awsElasticBlockStore",
    "gcePersistentDisk", "azureDisk", "azureFile", "vsphereVolume", "quobyte", "portworxVolume", "scaleIO",
    "storageos", "photonPersistentDisk", "cinder", "flocker"};

void validatePv(Errs& e, const json::object& o, const json::object* old) {
  const json::object* spec = obj(o, "spec");
  if (!spec) {
    e.required("spec");
    return;
  }
  const json::object* cap = obj(*spec, "capacity");
  if (!cap || str(*cap, "storage").empty()) e.required("spec.capacity");
  const json::array* modes = arr(*spec, "accessModes");
  if (!modes || modes->empty()) e.required("spec.accessModes");
  int sources = 0;
  for (std::string_view s : kVolumeSources) sources += has(*spec, s);
  if (sources == 0) e.required("spec", "must specify a volume type");
  if (sources > 1) e.forbidden("spec", "may not specify more than 1 volume type");
  e.oneOf("spec.persistentVolumeReclaimPolicy", str(*spec, "persistentVolumeReclaimPolicy"), {"Delete", "Recycle", "Retain"});
  if (old) {
    const json::object* oldSpec = obj(*old, "spec");
    for (std::string_view s : kVolumeSources) {
      const json::value* a = get(*spec, s);
      const json::value* b = oldSpec ? get(*oldSpec, s) : nullptr;
      if ((a == nullptr) != (b == nullptr) || (a && *a != *b)) {
        e.forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation");
        break;
      }
    }
  }
}

void validateStorageClass(Errs& e, const json::object& o, const json::object* old) {
  if (str(o, "provisioner").empty()) e.required("provisioner");
  e.oneOf("reclaimPolicy", str(o, "reclaimPolicy"), {"Delete", "Retain"});
  e.oneOf("volumeBindingMode", str(o, "volumeBindingMode"), {"Immediate", "WaitForFirstConsumer"});
  if (!old) return;
  for (std::string_view f : {"parameters", "provisioner", "reclaimPolicy", "volumeBindingMode"}) {
    const json::value* a = get(o, f);
    const json::value* b = get(*old, f);
    if ((a == nullptr) != (b == nullptr) || (a && *a != *b)) {
      e.forbidden(std::string(f), fmt::format("updates to {} are forbidden.", f));
    }
  }
}

void validateIngressBackend(Errs& e, const json::object& b, const std::string& f) {
  const json::object* svc = obj(b, "service");
  bool resource = has(b, "resource");
  if (svc && resource) {
    e.invalidRaw(f, "\"\"", "cannot set both resource and service backends");
    return;
  }
  if (!svc && !resource) {
    e.required(f, "one of `service` or `resource` must be specified");
    return;
  }
  if (!svc) return;
  std::string name = str(*svc, "name");
  if (name.empty()) e.required(f + ".service.name");
  else e.name(f + ".service.name", name, isDns1035Label);
  const json::object* port = obj(*svc, "port");
  bool byName = port && has(*port, "name");
  bool byNumber = port && has(*port, "number");
  if (byName && byNumber) {
    e.invalidRaw(f + ".service.port", render(*port), "cannot set both port name & port number");
  } else if (!byName && !byNumber) {
    e.invalidRaw(f + ".service.port", port ? render(*port) : "null", "port name or number is required");
  } else if (byNumber) {
    e.port(f + ".service.port", *port, "number", true);
  } else {
    e.name(f + ".service.port.name", str(*port, "name"), isDns1123Label);
  }
}

void validateIngressPath(Errs& e, const json::object& p, const std::string& f) {
  std::string path = str(p, "path");
  if (!has(p, "pathType")) {
    e.required(f + ".pathType", "pathType must be specified");
  } else {
    std::string type = str(p, "pathType");
    e.oneOf(f + ".pathType", type, {"Exact", "ImplementationSpecific", "Prefix"});
    if (type == "Exact" || type == "Prefix") {
      if (!path.starts_with('/')) {
        e.invalid(f + ".path", path, "must be an absolute path");
      } else {
        for (std::string_view bad : {"//", "/./", "/../", "%2f", "%2F"}) {
          if (path.find(bad) != std::string::npos) e.invalid(f + ".path", path, fmt::format("must not contain '{}'", bad));
        }
        for (std::string_view bad : {"/..", "/."}) {
          if (path.ends_with(bad)) e.invalid(f + ".path", path, fmt::format("cannot end with '{}'", bad));
        }
      }
    } else if (!path.empty() && !path.starts_with('/')) {
      e.invalid(f + ".path", path, "must be an absolute path");
    }
  }
  if (const json::object* b = obj(p, "backend")) validateIngressBackend(e, *b, f + ".backend");
  else e.required(f + ".backend");
}

void validateIngress(Errs& e, const json::object& o) {
  const json::object* spec = obj(o, "spec");
  const json::array* rules = spec ? arr(*spec, "rules") : nullptr;
  const json::object* defaultBackend = spec ? obj(*spec, "defaultBackend") : nullptr;
  if ((!rules || rules->empty()) && !defaultBackend) {
    e.invalidRaw("spec", spec ? render(*spec) : "null", "either `defaultBackend` or `rules` must be specified");
  }
  if (defaultBackend) validateIngressBackend(e, *defaultBackend, "spec.defaultBackend");
  if (spec && has(*spec, "ingressClassName")) e.name("spec.ingressClassName", str(*spec, "ingressClassName"), isDns1123Subdomain);
  for (size_t i = 0; rules && i < rules->size(); ++i) {
    if (!(*rules)[i].is_object()) continue;
    const json::object& rule = (*rules)[i].get_object();
    std::string ri = idx("spec.rules", i);
    std::string host = str(rule, "host");
    if (!host.empty()) {
      if (looksLikeIp(host)) e.invalid(ri + ".host", host, "must be a DNS name, not an IP address");
      else e.name(ri + ".host", host, isWildcardOrSubdomain);
    }
    const json::object* http = obj(rule, "http");
    if (!http) continue;
    const json::array* paths = arr(*http, "paths");
    if (!paths || paths->empty()) {
      e.required(ri + ".http.paths");
      continue;
    }
    for (size_t p = 0; p < paths->size(); ++p) {
      if ((*paths)[p].is_object()) validateIngressPath(e, (*paths)[p].get_object(), idx(ri + ".http.paths", p));
    }
  }
  const json::array* tls = spec ? arr(*spec, "tls") : nullptr;
  for (size_t i = 0; tls && i < tls->size(); ++i) {
    if (!(*tls)[i].is_object()) continue;
    const json::array* hosts = arr((*tls)[i].get_object(), "hosts");
    for (size_t h = 0; hosts && h < hosts->size(); ++h) {
      if ((*hosts)[h].is_string()) {
        e.name(idx(idx("spec.tls", i) + ".hosts", h), std::string((*hosts)[h].get_string()), isWildcardOrSubdomain);
      }
    }
  }
}

void validateDataMap(Errs& e, const json::object& o, std::string_view key, bool base64) {
  const json::object* data = obj(o, key);
  if (!data) return;
  for (const auto& [k, v] : *data) {
    std::string f = fmt::format("{}[{}]", key, std::string_view(k));
    e.name(f, std::string(k), isConfigKey);
    if (!v.is_string()) {
      e.invalidRaw(f, render(v), "must be a string");
    } else if (base64 && !base::base64Decode(v.get_string())) {
      e.invalid(f, "<secret contents redacted>", "illegal base64 data");
    }
  }
}

// ConfigMap and Secret: `immutable: true` freezes data and itself.
void validateImmutableData(Errs& e, const json::object& o, const json::object* old, bool secret) {
  if (!old) return;
  const json::value* wasImmutable = get(*old, "immutable");
  if (!wasImmutable || *wasImmutable != json::value(true)) return;
  const json::value* now = get(o, "immutable");
  if (!now || *now != json::value(true)) e.forbidden("immutable", "field is immutable when `immutable` is set");
  for (std::string_view key : {"data", "binaryData"}) {
    if (secret && key == "binaryData") continue;
    const json::value* a = get(o, key);
    const json::value* b = get(*old, key);
    if ((a == nullptr) != (b == nullptr) || (a && *a != *b)) {
      e.forbidden(std::string(key), "field is immutable when `immutable` is set");
    }
  }
}

void validateRules(Errs& e, const json::object& o, bool namespaced) {
  const json::array* rules = arr(o, "rules");
  for (size_t i = 0; rules && i < rules->size(); ++i) {
    if (!(*rules)[i].is_object()) continue;
    const json::object& r = (*rules)[i].get_object();
    std::string f = idx("rules", i);
    const json::array* verbs = arr(r, "verbs");
    if (!verbs || verbs->empty()) e.required(f + ".verbs", "verbs must contain at least one value");
    const json::array* urls = arr(r, "nonResourceURLs");
    bool hasUrls = urls && !urls->empty();
    if (hasUrls && namespaced) {
      e.invalidRaw(f + ".nonResourceURLs", render(*urls), "namespaced rules cannot apply to non-resource URLs");
    }
    const json::array* resources = arr(r, "resources");
    bool hasResources = resources && !resources->empty();
    if (hasUrls && hasResources) {
      e.invalidRaw(f + ".nonResourceURLs", render(*urls), "rules cannot apply to both regular resources and non-resource URLs");
    }
    if (!hasUrls) {
      const json::array* groups = arr(r, "apiGroups");
      if (!groups || groups->empty()) e.required(f + ".apiGroups", "resource rules must supply at least one api group");
      if (!hasResources) e.required(f + ".resources", "resource rules must supply at least one resource");
    }
  }
}

void validateBinding(Errs& e, const json::object& o, const json::object* old, bool cluster) {
  const json::object* ref = obj(o, "roleRef");
  if (!ref) {
    e.required("roleRef");
  } else {
    if (str(*ref, "name").empty()) e.required("roleRef.name");
    if (cluster) e.oneOf("roleRef.kind", str(*ref, "kind"), {"ClusterRole"});
    else e.oneOf("roleRef.kind", str(*ref, "kind"), {"ClusterRole", "Role"});
    e.oneOf("roleRef.apiGroup", str(*ref, "apiGroup"), {"rbac.authorization.k8s.io"});
  }
  const json::array* subjects = arr(o, "subjects");
  for (size_t i = 0; subjects && i < subjects->size(); ++i) {
    if (!(*subjects)[i].is_object()) continue;
    const json::object& s = (*subjects)[i].get_object();
    std::string f = idx("subjects", i);
    std::string kind = str(s, "kind");
    e.oneOf(f + ".kind", kind, {"Group", "ServiceAccount", "User"});
    if (str(s, "name").empty()) e.required(f + ".name");
    if (kind == "ServiceAccount" && cluster && str(s, "namespace").empty()) e.required(f + ".namespace");
  }
  if (old && ref) {
    const json::value* oldRef = get(*old, "roleRef");
    if (oldRef && *oldRef != json::value(*ref)) e.invalidRaw("roleRef", render(*ref), "cannot change roleRef");
  }
}


void validatePodUpdate(Errs& e, const json::object& o, const json::object& old) {
  const json::object* spec = obj(o, "spec");
  const json::object* oldSpec = obj(old, "spec");
  if (!spec || !oldSpec) return;
  json::object a = *spec, b = *oldSpec;
  for (json::object* s : {&a, &b}) {
    for (std::string_view key : {"containers", "initContainers"}) {
      eachObject(*s, key, [](json::object& c) { c.erase("image"); });
    }
    s->erase("activeDeadlineSeconds");
    s->erase("tolerations");
    s->erase("terminationGracePeriodSeconds");
  }
  if (str(b, "nodeName").empty()) a.erase("nodeName");  // set once, as a binding does
  if (a != b) {
    e.forbidden("spec",
                "pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                "previously negative)");
  }
}

// Top-level fields besides apiVersion, kind and metadata.
std::vector<std::string_view> topLevelFields(const ResourceInfo& r) {
  const std::string& k = r.kind;
  if (k == "ConfigMap") return {"data", "binaryData", "immutable"};
  if (k == "Secret") return {"data", "stringData", "type", "immutable"};
  if (k == "ServiceAccount") return {"secrets", "imagePullSecrets", "automountServiceAccountToken"};
  if (k == "Endpoints") return {"subsets"};
  if (k == "EndpointSlice") return {"addressType", "endpoints", "ports"};
  if (k == "Event" && r.group.empty()) {
    return {"involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type",
            "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"};
  }
  if (k == "Event") {
    return {"eventTime", "series", "reportingController", "reportingInstance", "action", "reason", "regarding",
            "related", "note", "type", "deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp",
            "deprecatedCount"};
  }
  if (k == "StorageClass") {
    return {"provisioner", "parameters", "reclaimPolicy", "mountOptions", "allowVolumeExpansion", "volumeBindingMode",
            "allowedTopologies"};
  }
  if (k == "VolumeSnapshotClass" || k == "VolumeGroupSnapshotClass") return {"driver", "parameters", "deletionPolicy"};
  if (k == "CSIStorageCapacity") return {"nodeTopology", "storageClassName", "capacity", "maximumVolumeSize"};
  if (k == "ControllerRevision") return {"data", "revision"};
  if (k == "Role") return {"rules"};
  if (k == "ClusterRole") return {"rules", "aggregationRule"};
  if (k == "RoleBinding" || k == "ClusterRoleBinding") return {"subjects", "roleRef"};
  if (k == "SelfSubjectAccessReview" || k == "SelfSubjectRulesReview") return {"spec", "status"};
  return {"spec", "status"};
}

}  // namespace

std::vector<std::string> unknownFields(const ResourceInfo& r, const json::object& o) {
  std::vector<std::string> out;
  auto fields = topLevelFields(r);
  for (const auto& [k, v] : o) {
    std::string_view key = k;
    if (key == "apiVersion" || key == "kind" || key == "metadata") continue;
    if (std::find(fields.begin(), fields.end(), key) == fields.end()) out.emplace_back(key);
  }
  if (const json::object* meta = obj(o, "metadata")) {
    static constexpr std::string_view kMeta[] = {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
        "managedFields"};
    for (const auto& [k, v] : *meta) {
      std::string_view key = k;
      if (std::find(std::begin(kMeta), std::end(kMeta), key) == std::end(kMeta)) out.push_back("metadata." + std::string(key));
    }
  }
  return out;
}

namespace {

// Checks (and rewrites JSON numbers of) one quantity; the error's message.
std::optional<std::string> checkQuantity(json::value& v) {
  if (v.is_null()) return std::nullopt;
  if (v.is_int64() || v.is_uint64() || v.is_double()) v = json::string(render(v));  // what the decoder reads
  if (!v.is_string()) return std::string(kQuantityFormatError);
  std::string_view text = v.get_string();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  auto q = parseQuantity(text);
  if (!q) return q.error().message();
  return std::nullopt;
}

// Walks `v`; under a key of `maps` every member is a quantity, under a key
// of `scalars` the value is one (an object there is a map of them).
std::optional<std::string> walkQuantities(json::value& v, std::initializer_list<std::string_view> maps,
                                          std::initializer_list<std::string_view> scalars, int depth = 0) {
  if (depth > 64) return std::nullopt;  // deeper than any kind's quantities
  auto in = [](std::initializer_list<std::string_view> l, std::string_view k) {
    return std::find(l.begin(), l.end(), k) != l.end();
  };
  if (v.is_array()) {
    for (json::value& e : v.get_array()) {
      if (auto err = walkQuantities(e, maps, scalars, depth + 1)) return err;
    }
  } else if (v.is_object()) {
    for (auto& [k, child] : v.get_object()) {
      if (depth == 0 && k == "metadata") continue;
      bool map = in(maps, k), scalar = in(scalars, k);
      if ((map || scalar) && child.is_object()) {
        for (auto& [name, q] : child.get_object()) {
          if (auto err = checkQuantity(q)) return err;
        }
      } else if (scalar || (map && !child.is_array() && !child.is_null())) {
        if (auto err = checkQuantity(child)) return err;
      } else if (auto err = walkQuantities(child, maps, scalars, depth + 1)) {
        return err;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> malformedQuantity(const ResourceInfo& r, json::object& o) {
  static constexpr std::string_view kWithPods[] = {"Pod", "PodTemplate", "ReplicationController", "Deployment",
                                                   "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
                                                   "PersistentVolumeClaim", "PersistentVolume", "Node", "ResourceQuota"};
  std::optional<std::string> err;
  json::value v(std::move(o));
  if (r.kind == "LimitRange") {
    err = walkQuantities(v, {"max", "min", "default", "defaultRequest", "maxLimitRequestRatio"}, {});
  } else if (r.kind == "CSIStorageCapacity") {
    err = walkQuantities(v, {}, {"capacity", "maximumVolumeSize"});
  } else if (std::find(std::begin(kWithPods), std::end(kWithPods), r.kind) != std::end(kWithPods)) {
    err = walkQuantities(v, {"requests", "limits", "capacity", "allocatable", "hard", "used", "overhead",
                             "allocatedResources"},
                         {"sizeLimit"});
  }
  o = std::move(v.get_object());
  if (!err) return std::nullopt;
  return fmt::format("{} in version {:?} cannot be handled as a {}: {}", r.kind, r.version, r.kind, *err);
}

bool pvcRequestGrew(const json::object& o, const json::object& old) {
  auto storage = [](const json::object& x) -> std::optional<long double> {
    const json::object* spec = obj(x, "spec");
    const json::object* res = spec ? obj(*spec, "resources") : nullptr;
    const json::object* req = res ? obj(*res, "requests") : nullptr;
    auto q = parseQuantity(req ? str(*req, "storage") : "");
    return q ? std::optional<long double>(*q) : std::nullopt;
  };
  auto a = storage(o), b = storage(old);
  return a && b && *a > *b;
}

void applyDefaults(const ResourceInfo& r, json::object& o, bool create) {
  const std::string& k = r.kind;
  bool hasStatus = std::find(r.subresources.begin(), r.subresources.end(), "status") != r.subresources.end();
  if (create && hasStatus && k != "Node") o.erase("status");
  if (!r.group.empty() && r.group != "apps" && r.group != "storage.k8s.io" && r.group != "networking.k8s.io" &&
      r.group != "discovery.k8s.io" && r.group != "batch" && r.group != "policy") {
    return;
  }
  if (k == "Pod") {
    json::object& spec = ensure(o, "spec");
    podSpecDefaults(spec);
    if (create) o["status"] = json::object{{"phase", "Pending"}, {"qosClass", qosClass(spec)}};
  } else if (k == "Service") {
    json::object& spec = ensure(o, "spec");
    def(spec, "type", "ClusterIP");
    std::string type = str(spec, "type");
    eachObject(spec, "ports", [](json::object& p) {
      def(p, "protocol", "TCP");
      if (const json::value* port = get(p, "port")) def(p, "targetPort", *port);
    });
    if (type != "ExternalName") {
      def(spec, "sessionAffinity", "None");
      def(spec, "internalTrafficPolicy", "Cluster");
      def(spec, "ipFamilies", json::array{"IPv4"});
      def(spec, "ipFamilyPolicy", "SingleStack");
    }
    if (type == "NodePort" || type == "LoadBalancer") def(spec, "externalTrafficPolicy", "Cluster");
    if (type == "LoadBalancer") def(spec, "allocateLoadBalancerNodePorts", true);
    if (create) o["status"] = json::object{{"loadBalancer", json::object{}}};
  } else if (k == "PersistentVolumeClaim") {
    def(ensure(o, "spec"), "volumeMode", "Filesystem");
    if (create) {
      o["status"] = json::object{{"phase", "Pending"}};
      addFinalizer(o, "kubernetes.io/pvc-protection");
    }
  } else if (k == "PersistentVolume") {
    json::object& spec = ensure(o, "spec");
    def(spec, "persistentVolumeReclaimPolicy", "Retain");
    def(spec, "volumeMode", "Filesystem");
    if (create) {
      o["status"] = json::object{{"phase", "Pending"}};
      addFinalizer(o, "kubernetes.io/pv-protection");
    }
  } else if (k == "StorageClass") {
    def(o, "reclaimPolicy", "Delete");
    def(o, "volumeBindingMode", "Immediate");
  } else if (k == "Deployment") {
    json::object& spec = ensure(o, "spec");
    def(spec, "replicas", 1);
    def(spec, "strategy", json::object{});
    json::object& strategy = ensure(spec, "strategy");
    def(strategy, "type", "RollingUpdate");
    if (str(strategy, "type") == "RollingUpdate") {
      json::object& ru = ensure(strategy, "rollingUpdate");
      def(ru, "maxUnavailable", "25%");
      def(ru, "maxSurge", "25%");
    }
    def(spec, "revisionHistoryLimit", 10);
    def(spec, "progressDeadlineSeconds", 600);
    templateDefaults(o);
    if (create) o["status"] = json::object{};
  } else if (k == "ReplicaSet") {
    def(ensure(o, "spec"), "replicas", 1);
    templateDefaults(o);
    if (create) o["status"] = json::object{{"replicas", 0}};
  } else if (k == "DaemonSet") {
    json::object& spec = ensure(o, "spec");
    json::object& strategy = ensure(spec, "updateStrategy");
    def(strategy, "type", "RollingUpdate");
    if (str(strategy, "type") == "RollingUpdate") {
      json::object& ru = ensure(strategy, "rollingUpdate");
      def(ru, "maxUnavailable", 1);
      def(ru, "maxSurge", 0);
    }
    def(spec, "revisionHistoryLimit", 10);
    templateDefaults(o);
    if (create) {
      o["status"] = json::object{{"currentNumberScheduled", 0}, {"numberMisscheduled", 0},
                                 {"desiredNumberScheduled", 0}, {"numberReady", 0}};
    }
  } else if (k == "StatefulSet") {
    json::object& spec = ensure(o, "spec");
    def(spec, "replicas", 1);
    def(spec, "podManagementPolicy", "OrderedReady");
    def(spec, "revisionHistoryLimit", 10);
    json::object& strategy = ensure(spec, "updateStrategy");
    def(strategy, "type", "RollingUpdate");
    if (str(strategy, "type") == "RollingUpdate") def(ensure(strategy, "rollingUpdate"), "partition", 0);
    json::object& retention = ensure(spec, "persistentVolumeClaimRetentionPolicy");
    def(retention, "whenDeleted", "Retain");
    def(retention, "whenScaled", "Retain");
    eachObject(spec, "volumeClaimTemplates", [](json::object& t) {
      def(ensure(t, "spec"), "volumeMode", "Filesystem");
      def(t, "apiVersion", "v1");
      def(t, "kind", "PersistentVolumeClaim");
    });
    templateDefaults(o);
    if (create) o["status"] = json::object{{"replicas", 0}, {"availableReplicas", 0}};
  } else if (k == "Job") {
    jobSpecDefaults(ensure(o, "spec"));
    if (create) generateJobSelector(o);
    templateDefaults(o);
    if (create) o["status"] = json::object{};
  } else if (k == "CronJob") {
    json::object& spec = ensure(o, "spec");
    def(spec, "concurrencyPolicy", "Allow");
    def(spec, "suspend", false);
    def(spec, "successfulJobsHistoryLimit", 3);
    def(spec, "failedJobsHistoryLimit", 1);
    if (json::object* jt = mobj(spec, "jobTemplate")) templateDefaults(*jt);
    if (create) o["status"] = json::object{};
  } else if (k == "PodDisruptionBudget") {
    if (create) {
      o["status"] = json::object{{"disruptionsAllowed", 0}, {"currentHealthy", 0}, {"desiredHealthy", 0},
                                 {"expectedPods", 0}};
    }
  } else if (k == "Secret") {
    def(o, "type", "Opaque");
    // stringData is write-only: merged into data (base64), never stored.
    if (const json::object* found = obj(o, "stringData")) {
      json::object sd = *found;  // a copy: adding "data" may move o's members
      json::object& data = ensure(o, "data");
      for (const auto& [key, v] : sd) {
        if (v.is_string()) data[key] = base::base64Encode(v.get_string());
      }
    }
    o.erase("stringData");
  } else if (k == "Endpoints") {
    eachObject(o, "subsets", [](json::object& s) { eachObject(s, "ports", [](json::object& p) { def(p, "protocol", "TCP"); }); });
  } else if (k == "EndpointSlice") {
    eachObject(o, "ports", [](json::object& p) { def(p, "protocol", "TCP"); });
  } else if (k == "CSIDriver") {
    json::object& spec = ensure(o, "spec");
    def(spec, "attachRequired", true);
    def(spec, "podInfoOnMount", false);
    def(spec, "requiresRepublish", false);
    def(spec, "storageCapacity", false);
    def(spec, "seLinuxMount", false);
    def(spec, "fsGroupPolicy", "ReadWriteOnceWithFSType");
    def(spec, "volumeLifecycleModes", json::array{"Persistent"});
  } else if (k == "Namespace" && create) {
    def(ensure(o, "spec"), "finalizers", json::array{"kubernetes"});
    o["status"] = json::object{{"phase", "Active"}};
  } else if (k == "Ingress" && create) {
    o["status"] = json::object{{"loadBalancer", json::object{}}};
  }
}

FieldErrors validateKind(const ResourceInfo& r, const json::object& o, const json::object* old) {
  Errs e;
  const std::string& k = r.kind;
  const std::string& g = r.group;
  if (g.empty() && k == "Pod") {
    if (const json::object* spec = obj(o, "spec")) validatePodSpec(e, *spec, "spec", false);
    else e.required("spec.containers");
    if (old) validatePodUpdate(e, o, *old);
  } else if (g.empty() && k == "Service") {
    validateService(e, o);
  } else if (g.empty() && k == "PersistentVolumeClaim") {
    validatePvc(e, o, old);
  } else if (g.empty() && k == "PersistentVolume") {
    validatePv(e, o, old);
  } else if (g.empty() && k == "ConfigMap") {
    validateDataMap(e, o, "data", false);
    validateDataMap(e, o, "binaryData", true);
    if (const json::object* data = obj(o, "data"); data && obj(o, "binaryData")) {
      for (const auto& [key, v] : *data) {
        if (has(*obj(o, "binaryData"), key)) {
          e.invalid(fmt::format("data[{}]", std::string_view(key)), std::string(key),
                    "duplicate of key present in binaryData");
        }
      }
    }
    validateImmutableData(e, o, old, false);
  } else if (g.empty() && k == "Secret") {
    validateDataMap(e, o, "data", true);
    std::string type = str(o, "type");
    if (type == "kubernetes.io/tls") {
      const json::object* data = obj(o, "data");
      for (const char* key : {"tls.crt", "tls.key"}) {
        if (!data || !has(*data, key)) e.required(fmt::format("data[{}]", key));
      }
    }
    if (old && str(*old, "type") != type) e.invalid("type", type, "field is immutable");
    validateImmutableData(e, o, old, true);
  } else if (g.empty() && k == "Node" && old) {
    const json::object* spec = obj(o, "spec");
    const json::object* oldSpec = obj(*old, "spec");
    for (std::string_view f : {"podCIDR", "podCIDRs"}) {
      const json::value* was = oldSpec ? get(*oldSpec, f) : nullptr;
      const json::value* now = spec ? get(*spec, f) : nullptr;
      if (was && (!now || *now != *was)) {
        e.forbidden("spec." + std::string(f), "node updates may not change podCIDR except from \"\" to valid");
      }
    }
  } else if (g == "apps" && k == "StatefulSet") {
    validateStatefulSet(e, o, old);
  } else if (g == "apps" && k == "ControllerRevision") {
    if (const json::value* rev = get(o, "revision"); !rev || !rev->is_int64() || rev->get_int64() < 0) {
      e.invalidRaw("revision", rev ? render(*rev) : "0", "must be greater than or equal to 0");
    }
    if (old && get(*old, "data") && get(o, "data") && *get(*old, "data") != *get(o, "data")) {
      e.invalidRaw("data", render(*get(o, "data")), "field is immutable");
    }
  } else if (g == "apps") {
    validateWorkload(e, o, old, k);
  } else if (g == "batch" && k == "Job") {
    validateJob(e, o, old);
  } else if (g == "batch" && k == "CronJob") {
    validateCronJob(e, o);
  } else if (g == "policy" && k == "PodDisruptionBudget") {
    validatePdb(e, o);
  } else if (g == "networking.k8s.io" && k == "Ingress") {
    validateIngress(e, o);
  } else if (g == "networking.k8s.io" && k == "IngressClass") {
    const json::object* spec = obj(o, "spec");
    if (!spec || str(*spec, "controller").empty()) e.required("spec.controller");
    specImmutable(e, o, old, "controller");
  } else if (g == "storage.k8s.io" && k == "StorageClass") {
    validateStorageClass(e, o, old);
  } else if (g == "storage.k8s.io" && k == "VolumeAttachment") {
    const json::object* spec = obj(o, "spec");
    if (!spec || str(*spec, "attacher").empty()) e.required("spec.attacher");
    if (!spec || str(*spec, "nodeName").empty()) e.required("spec.nodeName");
    const json::object* source = spec ? obj(*spec, "source") : nullptr;
    if (!source || (has(*source, "persistentVolumeName") == has(*source, "inlineVolumeSpec"))) {
      e.required("spec.source", "must specify exactly one of inlineVolumeSpec and persistentVolumeName");
    }
    if (old && obj(*old, "spec") && spec && *obj(*old, "spec") != *spec) {
      e.invalidRaw("spec", render(*spec), "field is immutable");
    }
  } else if (g == "storage.k8s.io" && k == "CSIDriver") {
    for (std::string_view f : {"attachRequired", "podInfoOnMount", "volumeLifecycleModes", "fsGroupPolicy"}) {
      specImmutable(e, o, old, f);
    }
  } else if (g == "storage.k8s.io" && k == "CSINode") {
    const json::object* spec = obj(o, "spec");
    const json::array* drivers = spec ? arr(*spec, "drivers") : nullptr;
    for (size_t i = 0; drivers && i < drivers->size(); ++i) {
      if (!(*drivers)[i].is_object()) continue;
      std::string f = idx("spec.drivers", i);
      if (str((*drivers)[i].get_object(), "name").empty()) e.required(f + ".name");
      if (str((*drivers)[i].get_object(), "nodeID").empty()) e.required(f + ".nodeID");
    }
  } else if (g == "groupsnapshot.storage.k8s.io" && k == "VolumeGroupSnapshotClass") {
    if (str(o, "driver").empty()) e.required("driver");
    e.oneOf("deletionPolicy", str(o, "deletionPolicy"), {"Delete", "Retain"});
  } else if (g == "groupsnapshot.storage.k8s.io" && k == "VolumeGroupSnapshot") {
    const json::object* spec = obj(o, "spec");
    const json::object* source = spec ? obj(*spec, "source") : nullptr;
    if (!source || (!obj(*source, "selector") == str(*source, "volumeGroupSnapshotContentName").empty())) {
      e.required("spec.source", "exactly one of selector and volumeGroupSnapshotContentName must be set");
    }
    if (old && obj(*old, "spec") && spec && obj(*obj(*old, "spec"), "source") && source &&
        *obj(*obj(*old, "spec"), "source") != *source) {
      e.invalidRaw("spec.source", render(*source), "spec.source is immutable");
    }
  } else if (g == "groupsnapshot.storage.k8s.io" && k == "VolumeGroupSnapshotContent") {
    const json::object* spec = obj(o, "spec");
    if (!spec || str(*spec, "driver").empty()) e.required("spec.driver");
    e.oneOf("spec.deletionPolicy", spec ? str(*spec, "deletionPolicy") : "", {"Delete", "Retain"});
    const json::object* ref = spec ? obj(*spec, "volumeGroupSnapshotRef") : nullptr;
    if (!ref || str(*ref, "name").empty() || str(*ref, "namespace").empty()) {
      e.required("spec.volumeGroupSnapshotRef", "both name and namespace must be set");
    }
  } else if (g == "snapshot.storage.k8s.io" && k == "VolumeSnapshotClass") {
    if (str(o, "driver").empty()) e.required("driver");
    e.oneOf("deletionPolicy", str(o, "deletionPolicy"), {"Delete", "Retain"});
  } else if (g == "snapshot.storage.k8s.io" && k == "VolumeSnapshot") {
    const json::object* spec = obj(o, "spec");
    const json::object* source = spec ? obj(*spec, "source") : nullptr;
    if (!source || (str(*source, "persistentVolumeClaimName").empty() == str(*source, "volumeSnapshotContentName").empty())) {
      e.required("spec.source", "exactly one of persistentVolumeClaimName and volumeSnapshotContentName must be set");
    }
    if (old && obj(*old, "spec") && spec && obj(*obj(*old, "spec"), "source") && source &&
        *obj(*obj(*old, "spec"), "source") != *source) {
      e.invalidRaw("spec.source", render(*source), "spec.source is immutable");
    }
  } else if (g == "snapshot.storage.k8s.io" && k == "VolumeSnapshotContent") {
    const json::object* spec = obj(o, "spec");
    if (!spec || str(*spec, "driver").empty()) e.required("spec.driver");
    e.oneOf("spec.deletionPolicy", spec ? str(*spec, "deletionPolicy") : "", {"Delete", "Retain"});
    const json::object* ref = spec ? obj(*spec, "volumeSnapshotRef") : nullptr;
    if (!ref || str(*ref, "name").empty() || str(*ref, "namespace").empty()) {
      e.required("spec.volumeSnapshotRef", "both name and namespace must be set");
    }
    const json::object* source = spec ? obj(*spec, "source") : nullptr;
    if (!source || (str(*source, "volumeHandle").empty() == str(*source, "snapshotHandle").empty())) {
      e.required("spec.source", "exactly one of volumeHandle and snapshotHandle must be set");
    }
  } else if (g == "storage.k8s.io" && k == "CSIStorageCapacity") {
    if (str(o, "storageClassName").empty()) e.required("storageClassName");
    if (old && str(*old, "storageClassName") != str(o, "storageClassName")) {
      e.invalid("storageClassName", str(o, "storageClassName"), "field is immutable");
    }
    if (old && obj(*old, "nodeTopology") && obj(o, "nodeTopology") && *obj(*old, "nodeTopology") != *obj(o, "nodeTopology")) {
      e.invalidRaw("nodeTopology", render(*obj(o, "nodeTopology")), "field is immutable");
    }
  } else if (g == "discovery.k8s.io" && k == "EndpointSlice") {
    e.oneOf("addressType", str(o, "addressType"), {"FQDN", "IPv4", "IPv6"});
    if (old && str(*old, "addressType") != str(o, "addressType")) {
      e.invalid("addressType", str(o, "addressType"), "field is immutable");
    }
  } else if (g == "rbac.authorization.k8s.io") {
    if (k == "Role" || k == "ClusterRole") validateRules(e, o, k == "Role");
    else validateBinding(e, o, old, k == "ClusterRoleBinding");
  } else if (g == "coordination.k8s.io" && k == "Lease") {
    const json::object* spec = obj(o, "spec");
    if (const json::value* d = spec ? get(*spec, "leaseDurationSeconds") : nullptr;
        d && (!d->is_int64() || d->get_int64() <= 0)) {
      e.invalidRaw("spec.leaseDurationSeconds", render(*d), "must be greater than 0");
    }
  }
  return std::move(e.list);
}

}  // namespace trellis::apiserver::registry
