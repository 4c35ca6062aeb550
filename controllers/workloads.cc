#include "controllers/workloads.h"

#include <algorithm>
#include <cmath>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/log.h"
#include "controllers/indexes.h"

namespace trellis::controllers {

namespace json = boost::json;

int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const json::object* condition(const json::object& obj, std::string_view type) {
  if (const json::array* conds = kube::array(obj, {"status", "conditions"})) {
    for (const json::value& c : *conds) {
      if (c.is_object() && kube::str(c.get_object(), {"type"}) == type) return &c.get_object();
    }
  }
  return nullptr;
}

bool podReady(const json::object& pod) {
  const json::object* c = condition(pod, "Ready");
  return c && kube::str(*c, {"status"}) == "True";
}

bool podAvailable(const json::object& pod, int64_t minReadySeconds, int64_t now) {
  const json::object* c = condition(pod, "Ready");
  if (!c || kube::str(*c, {"status"}) != "True") return false;
  if (minReadySeconds <= 0) return true;
  auto since = kube::parseRfc3339(std::string(kube::str(*c, {"lastTransitionTime"})));
  return since && *since + minReadySeconds <= now;
}

bool podActive(const json::object& pod) { return !podTerminal(pod) && !kube::beingDeleted(pod); }

void setCondition(json::object& status, std::string_view type, std::string_view value, std::string_view reason,
                  std::string_view message, bool withUpdateTime) {
  json::value& list = status["conditions"];
  if (!list.is_array()) list = json::array{};
  std::string now = kube::rfc3339Now();
  for (json::value& c : list.get_array()) {
    if (!c.is_object() || kube::str(c.get_object(), {"type"}) != type) continue;
    json::object& o = c.get_object();
    if (kube::str(o, {"status"}) != value) o["lastTransitionTime"] = now;
    o["status"] = value;
    o["reason"] = reason;
    o["message"] = message;
    if (withUpdateTime) o["lastUpdateTime"] = now;
    return;
  }
  json::object c{{"type", type}, {"status", value}, {"lastTransitionTime", now}, {"reason", reason}, {"message", message}};
  if (withUpdateTime) c["lastUpdateTime"] = now;
  list.get_array().push_back(std::move(c));
}

void removeCondition(json::object& status, std::string_view type) {
  json::value* list = status.if_contains("conditions");
  if (!list || !list->is_array()) return;
  json::array& a = list->get_array();
  a.erase(std::remove_if(a.begin(), a.end(), [&](const json::value& c) {
            return c.is_object() && kube::str(c.get_object(), {"type"}) == type;
          }),
          a.end());
}

// ---- expectations -------------------------------------------------------------

void Expectations::start(const std::string& key) {
  std::lock_guard g(mu_);
  rounds_[key] = Round{{}, {}, std::chrono::steady_clock::now()};
}

void Expectations::expectAdd(const std::string& key, const std::string& name, const std::function<bool()>& seen) {
  std::lock_guard g(mu_);
  if (seen && seen()) return;
  rounds_[key].adds.insert(name);
}

void Expectations::expectDelete(const std::string& key, const std::string& name) {
  std::lock_guard g(mu_);
  rounds_[key].deletes.insert(name);
}

void Expectations::observed(const std::string& key, const std::string& name, bool deleted) {
  std::lock_guard g(mu_);
  auto it = rounds_.find(key);
  if (it == rounds_.end()) return;
  if (deleted) it->second.deletes.erase(name);
  else it->second.adds.erase(name);
}

bool Expectations::satisfied(const std::string& key) {
  std::lock_guard g(mu_);
  auto it = rounds_.find(key);
  if (it == rounds_.end()) return true;
  if ((it->second.adds.empty() && it->second.deletes.empty()) ||
      std::chrono::steady_clock::now() - it->second.since > std::chrono::minutes(5)) {
    rounds_.erase(it);
    return true;
  }
  return false;
}

void Expectations::forget(const std::string& key) {
  std::lock_guard g(mu_);
  rounds_.erase(key);
}

// ---- ownership -------------------------------------------------------------------

kube::OwnerReference controllerRef(std::string_view apiVersion, std::string_view kind, const json::object& owner) {
  return kube::OwnerReference{std::string(apiVersion), std::string(kind), std::string(kube::objectName(owner)),
                              std::string(kube::uid(owner)), true, true};
}

base::Status setControllerRef(kube::Client& client, const kube::Resource& resource, const json::object& obj,
                              const kube::OwnerReference* owner) {
  json::array refs;
  for (const kube::OwnerReference& r : kube::ownerReferences(obj)) {
    if (!r.controller) refs.push_back(kube::toJson(r));
  }
  if (owner) refs.push_back(kube::toJson(*owner));
  json::object patch{{"metadata", json::object{{"ownerReferences", std::move(refs)},
                                               {"resourceVersion", kube::objectResourceVersion(obj)}}}};
  auto res = client.patch(resource, kube::objectNamespace(obj), kube::objectName(obj), kube::PatchType::kMerge,
                          json::serialize(patch));
  if (!res && res.error().code() != base::ErrorCode::kNotFound) return res.error();
  static base::Logger log("ownership");
  log.info(owner ? "adopted" : "released", {{"object", resource.plural + "/" + kube::objectKey(obj)}});
  return {};
}

std::vector<kube::ObjectPtr> claim(kube::Client& client, const kube::Resource& resource, const json::object& owner,
                                   const kube::OwnerReference& ref, const kube::LabelSelector& selector,
                                   const std::vector<kube::ObjectPtr>& candidates, base::Status& firstError,
                                   const std::function<bool(const json::object&)>& skip) {
  std::vector<kube::ObjectPtr> mine;
  bool ownerDeleting = kube::beingDeleted(owner);
  for (const kube::ObjectPtr& obj : candidates) {
    auto current = kube::controllerOf(*obj);
    bool matches = selector.matches(kube::labels(*obj));
    bool skipped = skip && skip(*obj);
    if (current && current->uid == ref.uid) {
      if (!matches && !ownerDeleting) {
        if (auto st = setControllerRef(client, resource, *obj, nullptr); !st && firstError) firstError = st;
        continue;
      }
      if (!skipped) mine.push_back(obj);
    } else if (!current && matches && !ownerDeleting && !skipped && !kube::beingDeleted(*obj)) {
      if (auto st = setControllerRef(client, resource, *obj, &ref); st) mine.push_back(obj);
      else if (firstError) firstError = st;
    }
  }
  return mine;
}

json::object podFromTemplate(const json::object& tmpl, std::string_view ns, std::string_view name,
                             const kube::OwnerReference& ref) {
  json::object meta;
  if (const json::object* m = kube::child(tmpl, {"metadata"})) {
    for (const char* f : {"labels", "annotations", "finalizers"}) {
      if (const json::value* v = m->if_contains(f)) meta[f] = *v;
    }
  }
  if (name.ends_with('-')) meta["generateName"] = name;
  else meta["name"] = name;
  meta["namespace"] = ns;
  meta["ownerReferences"] = json::array{kube::toJson(ref)};
  json::object pod{{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", std::move(meta)}};
  if (const json::value* spec = tmpl.if_contains("spec")) pod["spec"] = *spec;
  return pod;
}

BatchResult slowStartCreate(kube::Client& client, const kube::Resource& resource, std::string_view ns, int count,
                            const std::function<json::object(int)>& make,
                            const std::function<void(const json::object&)>& created) {
  BatchResult out;
  for (int batch = 1, next = 0; next < count && out.error; batch *= 2) {
    int end = std::min(count, next + batch);
    for (; next < end; ++next) {
      auto res = client.create(resource, ns, make(next));
      if (!res) {
        if (res.error().code() == base::ErrorCode::kAlreadyExists) continue;  // someone else made it: fine
        if (out.error) out.error = res.error();
        continue;
      }
      ++out.created;
      if (created) created(*res);
    }
  }
  return out;
}

namespace {

int phaseRank(std::string_view phase) {
  if (phase == "Pending") return 0;
  if (phase == "Unknown") return 1;
  if (phase == "Running") return 2;
  return 3;
}

int64_t restarts(const json::object& pod) {
  int64_t n = 0;
  if (const json::array* cs = kube::array(pod, {"status", "containerStatuses"})) {
    for (const json::value& c : *cs) {
      if (c.is_object()) n = std::max(n, kube::integer(c.get_object(), {"restartCount"}));
    }
  }
  return n;
}

}  // namespace

void sortForDeletion(std::vector<kube::ObjectPtr>& pods) {
  std::stable_sort(pods.begin(), pods.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
    bool sa = !kube::str(*a, {"spec", "nodeName"}).empty(), sb = !kube::str(*b, {"spec", "nodeName"}).empty();
    if (sa != sb) return !sa;
    int pa = phaseRank(kube::str(*a, {"status", "phase"})), pb = phaseRank(kube::str(*b, {"status", "phase"}));
    if (pa != pb) return pa < pb;
    bool ra = podReady(*a), rb = podReady(*b);
    if (ra != rb) return !ra;
    if (ra) {
      std::string_view ta = kube::str(*condition(*a, "Ready"), {"lastTransitionTime"});
      std::string_view tb = kube::str(*condition(*b, "Ready"), {"lastTransitionTime"});
      if (ta != tb) return ta > tb;  // ready for less time first
    }
    int64_t xa = restarts(*a), xb = restarts(*b);
    if (xa != xb) return xa > xb;
    return kube::str(*a, {"metadata", "creationTimestamp"}) > kube::str(*b, {"metadata", "creationTimestamp"});
  });
}

int64_t scaledValue(const json::value* v, int64_t total, bool roundUp, int64_t otherwise) {
  if (!v || v->is_null()) return otherwise;
  if (v->is_int64()) return v->get_int64();
  if (!v->is_string()) return otherwise;
  std::string_view s = v->get_string();
  if (!s.ends_with('%')) return otherwise;
  int64_t pct = std::atoll(std::string(s.substr(0, s.size() - 1)).c_str());
  long double scaled = static_cast<long double>(pct) * static_cast<long double>(total) / 100.0L;
  return static_cast<int64_t>(roundUp ? std::ceil(scaled) : std::floor(scaled));
}

std::string templateHash(const json::value& tmpl, int64_t collisionCount) {
  std::string text = json::serialize(tmpl);
  if (collisionCount) text += std::to_string(collisionCount);
  uint32_t h = 2166136261u;
  for (unsigned char c : text) {
    h ^= c;
    h *= 16777619u;
  }
  static constexpr std::string_view kAlphabet = "bcdfghjklmnpqrstvwxz2456789";
  std::string digits = std::to_string(h), out;
  for (unsigned char c : digits) out += kAlphabet[c % kAlphabet.size()];
  return out;
}

}  // namespace trellis::controllers
