#include "controllers/workloads.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

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

void observeOwnedPods(kube::Informer& pods, std::string kind, Expectations& expectations, kube::Controller& controller) {
  auto seen = [kind = std::move(kind), &expectations, &controller](const json::object& pod, bool deleted) {
    auto ref = kube::controllerOf(pod);
    if (!ref || ref->kind != kind) return;
    std::string key = std::string(kube::objectNamespace(pod)) + "/" + ref->name;
    expectations.observed(key, std::string(kube::objectName(pod)), deleted);
    controller.enqueue(key);
  };
  pods.addHandler({.onAdd = [seen](const kube::ObjectPtr& p) { seen(*p, false); },
                   .onUpdate = [seen](const kube::ObjectPtr&, const kube::ObjectPtr& p) { seen(*p, kube::beingDeleted(*p)); },
                   .onDelete = [seen](const kube::ObjectPtr& p) { seen(*p, true); }});
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
  // Each batch's creates run in parallel (up to 16 at once), as kube's
  // goroutines do; the callbacks are serialized.
  BatchResult out;
  std::mutex mu;
  for (int batch = 1, next = 0; next < count && out.error; batch *= 2) {
    int end = std::min(count, next + batch);
    std::atomic<int> cursor{next};
    auto worker = [&] {
      for (int i = cursor++; i < end; i = cursor++) {
        auto res = client.create(resource, ns, make(i));
        std::lock_guard g(mu);
        if (!res) {
          if (res.error().code() != base::ErrorCode::kAlreadyExists && out.error) out.error = res.error();  // someone else made it: fine
          continue;
        }
        ++out.created;
        if (created) created(*res);
      }
    };
    int threads = std::min(end - next, 16);
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();
    next = end;
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

bool tolerates(const json::object& pod, const json::object& taint) {
  std::string_view key = kube::str(taint, {"key"}), value = kube::str(taint, {"value"}), effect = kube::str(taint, {"effect"});
  const json::array* tols = kube::array(pod, {"spec", "tolerations"});
  if (!tols) return false;
  for (const json::value& tv : *tols) {
    if (!tv.is_object()) continue;
    const json::object& t = tv.get_object();
    std::string_view te = kube::str(t, {"effect"});
    if (!te.empty() && te != effect) continue;
    std::string_view tk = kube::str(t, {"key"}), op = kube::str(t, {"operator"});
    if (op == "Exists") {
      if (tk.empty() || tk == key) return true;
    } else if (tk == key && kube::str(t, {"value"}) == value) {
      return true;
    }
  }
  return false;
}

std::vector<kube::ObjectPtr> revisionsOf(kube::Informer& revisions, const json::object& owner) {
  std::vector<kube::ObjectPtr> out;
  for (const kube::ObjectPtr& r : revisions.byIndex(kByNamespace, std::string(kube::objectNamespace(owner)))) {
    auto ref = kube::controllerOf(*r);
    if (ref && ref->uid == kube::uid(owner)) out.push_back(r);
  }
  std::sort(out.begin(), out.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
    return kube::integer(*a, {"revision"}) < kube::integer(*b, {"revision"});
  });
  return out;
}

base::Result<Revision> ensureRevision(kube::Client& client, kube::Informer& revisions, const json::object& owner,
                                      std::string_view apiVersion, std::string_view kind) {
  const json::object* tmpl = kube::child(owner, {"spec", "template"});
  if (!tmpl) return base::Error(base::ErrorCode::kInvalidArgument, "no template");
  json::object replaced = *tmpl;
  replaced["$patch"] = "replace";
  json::object data{{"spec", json::object{{"template", std::move(replaced)}}}};
  int64_t collisions = kube::integer(owner, {"status", "collisionCount"});
  std::string hash = templateHash(data, collisions);
  std::string name = std::string(kube::objectName(owner)) + "-" + hash;
  auto history = revisionsOf(revisions, owner);
  int64_t max = history.empty() ? 0 : kube::integer(*history.back(), {"revision"});
  for (const kube::ObjectPtr& r : history) {
    if (kube::objectName(*r) != name) continue;
    Revision rev{name, hash, kube::integer(*r, {"revision"})};
    if (rev.number < max) {  // a rollback: the old revision is the newest again
      json::object copy = *r;
      copy["revision"] = max + 1;
      auto res = client.update(kube::resources::kControllerRevisions, std::move(copy));
      if (!res) return res.error();
      rev.number = max + 1;
    }
    return rev;
  }
  json::object labels;
  if (const json::object* l = kube::child(*tmpl, {"metadata", "labels"})) labels = *l;
  labels["controller-revision-hash"] = hash;
  json::object cr{{"apiVersion", "apps/v1"},
                  {"kind", "ControllerRevision"},
                  {"metadata", json::object{{"name", name},
                                            {"namespace", kube::objectNamespace(owner)},
                                            {"labels", std::move(labels)},
                                            {"ownerReferences", json::array{kube::toJson(controllerRef(apiVersion, kind, owner))}}}},
                  {"data", std::move(data)},
                  {"revision", max + 1}};
  auto res = client.create(kube::resources::kControllerRevisions, kube::objectNamespace(owner), std::move(cr));
  if (!res && res.error().code() == base::ErrorCode::kAlreadyExists) {
    // Made by an earlier sync the cache has not shown yet, or by another owner.
    auto existing = client.get(kube::resources::kControllerRevisions, kube::objectNamespace(owner), name);
    auto ref = existing ? kube::controllerOf(*existing) : std::nullopt;
    if (ref && ref->uid == kube::uid(owner)) return Revision{name, hash, kube::integer(*existing, {"revision"})};
    return base::Error(base::ErrorCode::kAlreadyExists, "controller revision name collision: " + name);
  }
  if (!res) return res.error();
  return Revision{name, hash, max + 1};
}

base::Status pruneRevisions(kube::Client& client, const std::vector<kube::ObjectPtr>& history,
                            const std::set<std::string>& keep, int64_t limit) {
  std::vector<kube::ObjectPtr> idle;
  for (const kube::ObjectPtr& r : history) {
    if (!keep.count(std::string(kube::objectName(*r)))) idle.push_back(r);
  }
  base::Status result;
  for (size_t i = 0; static_cast<int64_t>(idle.size() - i) > limit; ++i) {
    auto st = client.remove(kube::resources::kControllerRevisions, kube::objectNamespace(*idle[i]), kube::objectName(*idle[i]));
    if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
  }
  return result;
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
