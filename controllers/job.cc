// job: runs each Job's pods to completion as kube-controller-manager does.
//
// Pods are made from the template with the Job as controller and the
// batch.kubernetes.io/job-tracking finalizer, so a terminated pod is counted
// exactly once even across crashes: its uid first goes into
// status.uncountedTerminatedPods (one status write), then the finalizer is
// removed, then a later sync moves it into succeeded/failed. Up to
// `parallelism` pods run at once until `completions` succeed (without
// completions, until one succeeds and the rest end); Indexed Jobs run one
// pod per index with JOB_COMPLETION_INDEX set and track completedIndexes.
// A failed pod is replaced after an exponential back-off; more failures than
// backoffLimit, activeDeadlineSeconds passing, or a podFailurePolicy FailJob
// rule fail the Job (Ignore rules do not count the failure). `suspend`
// deletes the active pods. Conditions: SuccessCriteriaMet and Complete, or
// FailureTarget and Failed; Suspended.
//
// ttl-after-finished (also here): deletes a finished Job (foreground, so its
// pods go first) ttlSecondsAfterFinished after it finished.
#include <algorithm>
#include <set>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kJobs;
using kube::resources::kPods;

constexpr std::string_view kTracking = "batch.kubernetes.io/job-tracking";
constexpr std::string_view kIndexKey = "batch.kubernetes.io/job-completion-index";

const base::Logger& log() {
  static base::Logger l("job");
  return l;
}

bool conditionTrue(const json::object& obj, std::string_view type) {
  const json::object* c = condition(obj, type);
  return c && kube::str(*c, {"status"}) == "True";
}

bool finished(const json::object& job) { return conditionTrue(job, "Complete") || conditionTrue(job, "Failed"); }

int64_t indexOf(const json::object& pod) {
  std::string_view v = kube::annotation(pod, kIndexKey);
  if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos || v.size() > 9) return -1;
  return std::atoll(std::string(v).c_str());
}

// "1,3-5,7" from a set of indexes, and back.
std::string formatIndexes(const std::set<int64_t>& s) {
  std::string out;
  for (auto it = s.begin(); it != s.end();) {
    int64_t first = *it, last = first;
    auto next = std::next(it);
    while (next != s.end() && *next == last + 1) last = *next++;
    if (!out.empty()) out += ',';
    out += last == first ? std::to_string(first) : last == first + 1 ? fmt::format("{},{}", first, last) : fmt::format("{}-{}", first, last);
    it = next;
  }
  return out;
}
std::set<int64_t> parseIndexes(std::string_view text) {
  std::set<int64_t> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view part = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    size_t dash = part.find('-');
    int64_t a = std::atoll(std::string(part.substr(0, dash)).c_str());
    int64_t b = dash == std::string_view::npos ? a : std::atoll(std::string(part.substr(dash + 1)).c_str());
    for (int64_t i = a; i <= b && i - a < 1'000'000; ++i) out.insert(i);
  }
  return out;
}

std::set<std::string> stringSet(const json::object& obj, kube::Path path) {
  std::set<std::string> out;
  if (const json::array* a = kube::array(obj, path)) {
    for (const json::value& v : *a) {
      if (v.is_string()) out.emplace(v.get_string());
    }
  }
  return out;
}

// The podFailurePolicy rule a failed pod matches: its action ("Count" when
// none) and the message kube gives a FailJob.
std::pair<std::string, std::string> policyAction(const json::object& job, const json::object& pod) {
  const json::array* rules = kube::array(job, {"spec", "podFailurePolicy", "rules"});
  std::string podName = std::string(kube::objectNamespace(pod)) + "/" + std::string(kube::objectName(pod));
  for (size_t i = 0; rules && i < rules->size(); ++i) {
    if (!(*rules)[i].is_object()) continue;
    const json::object& rule = (*rules)[i].get_object();
    std::string action(kube::str(rule, {"action"}));
    if (const json::object* codes = kube::child(rule, {"onExitCodes"})) {
      std::string_view only = kube::str(*codes, {"containerName"});
      bool in = kube::str(*codes, {"operator"}) == "In";
      std::set<int64_t> values;
      if (const json::array* vs = kube::array(*codes, {"values"})) {
        for (const json::value& v : *vs) {
          if (v.is_int64()) values.insert(v.get_int64());
        }
      }
      for (const char* list : {"initContainerStatuses", "containerStatuses"}) {
        const json::array* statuses = kube::array(pod, {"status", list});
        for (size_t c = 0; statuses && c < statuses->size(); ++c) {
          if (!(*statuses)[c].is_object()) continue;
          const json::object& cs = (*statuses)[c].get_object();
          const json::value* code = kube::field(cs, {"state", "terminated", "exitCode"});
          if (!code || !code->is_int64() || code->get_int64() == 0) continue;
          if (!only.empty() && kube::str(cs, {"name"}) != only) continue;
          if (values.count(code->get_int64()) == static_cast<size_t>(in)) {
            return {action, fmt::format("Container {} for pod {} failed with exit code {} matching {} rule at index {}",
                                        kube::str(cs, {"name"}), podName, code->get_int64(), action, i)};
          }
        }
      }
    }
    if (const json::array* patterns = kube::array(rule, {"onPodConditions"})) {
      for (const json::value& p : *patterns) {
        if (!p.is_object()) continue;
        std::string_view type = kube::str(p.get_object(), {"type"});
        std::string_view want = kube::str(p.get_object(), {"status"});
        const json::object* c = condition(pod, type);
        if (c && kube::str(*c, {"status"}) == (want.empty() ? "True" : want)) {
          return {action, fmt::format("Pod {} has condition {} matching {} rule at index {}", podName, type, action, i)};
        }
      }
    }
  }
  return {"Count", ""};
}

class Jobs : public Reconciler {
 public:
  explicit Jobs(Context& ctx)
      : Reconciler(ctx, "job", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("job-controller")),
        jobs_(ctx.informers.get(kJobs)),
        pods_(ctx.informers.get(kPods)) {
    indexByNamespace(*pods_);
    controller_.watch(*jobs_);
    observeOwnedPods(*pods_, "Job", expectations_, controller_);
  }

 private:
  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr job = jobs_->get(key);
    if (!job) {
      expectations_.forget(key);
      std::lock_guard g(mu_);
      backoffUntil_.erase(key);
      return {};
    }
    std::string ns(kube::objectNamespace(*job));
    auto sel = kube::LabelSelector::fromJson(kube::field(*job, {"spec", "selector"}));
    if (!sel || sel->empty()) return {};
    base::Status result;
    auto ref = controllerRef("batch/v1", "Job", *job);
    auto pods = claim(ctx_.client, kPods, *job, ref, *sel, pods_->byIndex(kByNamespace, ns), result);
    bool indexed = kube::str(*job, {"spec", "completionMode"}) == "Indexed";
    const json::value* completionsValue = kube::field(*job, {"spec", "completions"});
    bool hasCompletions = completionsValue && completionsValue->is_int64();
    int64_t completions = hasCompletions ? completionsValue->get_int64() : 0;
    int64_t parallelism = kube::integer(*job, {"spec", "parallelism"}, 1);
    int64_t now = unixNow();

    // Accounting: what was uncounted and has lost its finalizer is counted now.
    json::object st = kube::child(*job, {"status"}) ? *kube::child(*job, {"status"}) : json::object{};
    json::object before = st;
    int64_t succeeded = kube::integer(st, {"succeeded"}), failed = kube::integer(st, {"failed"});
    std::set<std::string> uncSucceeded = stringSet(st, {"uncountedTerminatedPods", "succeeded"});
    std::set<std::string> uncFailed = stringSet(st, {"uncountedTerminatedPods", "failed"});
    std::set<int64_t> completed = parseIndexes(kube::str(st, {"completedIndexes"}));
    std::map<std::string, kube::ObjectPtr> byUid;
    for (const kube::ObjectPtr& p : pods) byUid[std::string(kube::uid(*p))] = p;
    auto settle = [&](std::set<std::string>& uncounted, int64_t& counter) {
      for (auto it = uncounted.begin(); it != uncounted.end();) {
        auto p = byUid.find(*it);
        if (p == byUid.end() || !kube::hasFinalizer(*p->second, kTracking)) {
          ++counter;
          it = uncounted.erase(it);
        } else {
          ++it;
        }
      }
    };
    settle(uncSucceeded, succeeded);
    settle(uncFailed, failed);
    std::vector<kube::ObjectPtr> unfinalize, active, newlyFailed;
    for (const kube::ObjectPtr& p : pods) {
      std::string uid(kube::uid(*p));
      std::string_view phase = kube::str(*p, {"status", "phase"});
      bool tracked = kube::hasFinalizer(*p, kTracking);
      if (tracked && (uncSucceeded.count(uid) || uncFailed.count(uid))) {
        unfinalize.push_back(p);
      } else if (phase == "Succeeded") {
        if (tracked) {
          uncSucceeded.insert(uid);
          unfinalize.push_back(p);
        }
        if (indexed && indexOf(*p) >= 0 && indexOf(*p) < completions) completed.insert(indexOf(*p));
      } else if (phase == "Failed" || kube::beingDeleted(*p)) {
        if (tracked) {
          uncFailed.insert(uid);
          newlyFailed.push_back(p);
          unfinalize.push_back(p);
        }
      } else {
        active.push_back(p);
      }
    }
    if (indexed) succeeded = static_cast<int64_t>(completed.size());

    std::string failReason, failMessage;
    for (const kube::ObjectPtr& p : newlyFailed) {
      auto [action, message] = policyAction(*job, *p);
      if (action == "Ignore") uncFailed.erase(std::string(kube::uid(*p)));  // never counted
      if (action == "FailJob" && failReason.empty()) {
        failReason = "PodFailurePolicy";
        failMessage = message;
      }
    }
    int64_t failedTotal = failed + static_cast<int64_t>(uncFailed.size());
    int64_t succeededTotal = indexed ? succeeded : succeeded + static_cast<int64_t>(uncSucceeded.size());
    if (!newlyFailed.empty()) {
      // A new failure (ignored ones too): the next pod waits base * 2^(counted failures - 1), at most 6 minutes.
      auto delay = ctx_.options.jobBackoff * (int64_t{1} << std::clamp<int64_t>(failedTotal - 1, 0, 10));
      delay = std::min<std::chrono::milliseconds>(delay, std::chrono::minutes(6));
      std::lock_guard g(mu_);
      backoffUntil_[key] = std::chrono::steady_clock::now() + delay;
    }

    bool done = finished(*job);
    bool complete = false;
    if (!done && failReason.empty()) {
      if (failedTotal > kube::integer(*job, {"spec", "backoffLimit"}, 6)) {
        failReason = "BackoffLimitExceeded";
        failMessage = "Job has reached the specified backoff limit";
      } else if (const json::value* ads = kube::field(*job, {"spec", "activeDeadlineSeconds"}); ads && ads->is_int64()) {
        auto start = kube::parseRfc3339(std::string(kube::str(st, {"startTime"})));
        if (start && *start + ads->get_int64() <= now) {
          failReason = "DeadlineExceeded";
          failMessage = "Job was active longer than specified deadline";
        } else if (start) {
          controller_.queue().addAfter(key, std::chrono::seconds(*start + ads->get_int64() - now));
        }
      }
      complete = indexed ? static_cast<int64_t>(completed.size()) >= completions
                 : hasCompletions ? succeededTotal >= completions
                                  : succeededTotal >= 1 && active.empty();
    }
    bool suspended = kube::boolean(*job, {"spec", "suspend"});
    if (done || !failReason.empty() || complete || suspended) {
      if (auto err = deleteAll(active, key); !err && result) result = err;
      // Pods deleted here are counted as failed only when the Job fails.
      for (const kube::ObjectPtr& p : active) {
        if (!kube::hasFinalizer(*p, kTracking)) continue;
        if (!failReason.empty()) uncFailed.insert(std::string(kube::uid(*p)));
        unfinalize.push_back(p);
      }
      active.clear();
    } else {
      if (const json::object* c = condition(*job, "Suspended"); c && kube::str(*c, {"status"}) == "True") {
        setCondition(st, "Suspended", "False", "JobResumed", "Job resumed");
        st.erase("startTime");
        events_.record(*job, "Normal", "Resumed", "Job resumed");
      }
      if (!st.contains("startTime")) st["startTime"] = kube::rfc3339Now();
      if (auto err = manage(*job, key, active, completed, succeededTotal, parallelism, hasCompletions, completions, indexed);
          !err && result) {
        result = err;
      }
    }
    // Status.
    int64_t ready = 0;
    for (const kube::ObjectPtr& p : active) ready += podReady(*p);
    st["active"] = static_cast<int64_t>(active.size());
    st["ready"] = ready;
    st["succeeded"] = succeeded;
    st["failed"] = failed;
    st["terminating"] = 0;
    json::array us, uf;
    for (const std::string& u : uncSucceeded) us.emplace_back(u);
    for (const std::string& u : uncFailed) uf.emplace_back(u);
    st["uncountedTerminatedPods"] = json::object{};
    if (!us.empty()) st["uncountedTerminatedPods"].get_object()["succeeded"] = std::move(us);
    if (!uf.empty()) st["uncountedTerminatedPods"].get_object()["failed"] = std::move(uf);
    if (indexed) st["completedIndexes"] = formatIndexes(completed);
    for (const char* f : {"active", "ready", "succeeded", "failed", "terminating"}) {
      if (st[f] == 0 && f != std::string_view("ready") && f != std::string_view("terminating")) st.erase(f);
    }
    if (suspended && !done) {
      if (!conditionTrue(*job, "Suspended")) {
        setCondition(st, "Suspended", "True", "JobSuspended", "Job suspended");
        events_.record(*job, "Normal", "Suspended", "Job suspended");
      }
      st.erase("startTime");
    }
    if (!done && !failReason.empty()) {
      setCondition(st, "FailureTarget", "True", failReason, failMessage);
      setCondition(st, "Failed", "True", failReason, failMessage);
      events_.record(*job, "Warning", failReason, failMessage);
    } else if (!done && complete) {
      setCondition(st, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods");
      setCondition(st, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods");
      st["completionTime"] = kube::rfc3339Now();
      events_.record(*job, "Normal", "Completed", "Job completed");
    }
    if (st != before) {
      json::object copy = *job;
      copy["status"] = std::move(st);
      auto res = ctx_.client.update(kJobs, std::move(copy), "status");
      if (!res) {
        if (res.error().code() == base::ErrorCode::kNotFound) return {};
        return res.error();  // the finalizers stay until the uids are recorded
      }
    }
    for (const kube::ObjectPtr& p : unfinalize) {
      if (auto err = setFinalizer(ctx_.client, kPods, *p, kTracking, false); !err && result) result = err;
    }
    return result;
  }

  base::Status deleteAll(const std::vector<kube::ObjectPtr>& pods, const std::string& key) {
    base::Status result;
    for (const kube::ObjectPtr& p : pods) {
      auto st = ctx_.client.remove(kPods, kube::objectNamespace(*p), kube::objectName(*p));
      if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
    }
    if (!pods.empty()) controller_.enqueue(key);
    return result;
  }

  base::Status manage(const json::object& job, const std::string& key, std::vector<kube::ObjectPtr>& active,
                      const std::set<int64_t>& completed, int64_t succeeded, int64_t parallelism, bool hasCompletions,
                      int64_t completions, bool indexed) {
    if (!expectations_.satisfied(key)) return {};
    {
      std::lock_guard g(mu_);
      auto it = backoffUntil_.find(key);
      if (it != backoffUntil_.end() && it->second > std::chrono::steady_clock::now()) {
        controller_.queue().addAfter(
            key, std::chrono::duration_cast<std::chrono::milliseconds>(it->second - std::chrono::steady_clock::now()) +
                     std::chrono::milliseconds(10));
        return {};
      }
    }
    std::vector<int64_t> toCreate;  // indexes (-1 for a NonIndexed pod)
    std::vector<kube::ObjectPtr> surplus;
    if (indexed) {
      std::set<int64_t> running;
      std::vector<kube::ObjectPtr> keep;
      for (const kube::ObjectPtr& p : active) {
        int64_t i = indexOf(*p);
        if (i < 0 || i >= completions || completed.count(i) || !running.insert(i).second) surplus.push_back(p);
        else keep.push_back(p);
      }
      int64_t room = parallelism - static_cast<int64_t>(keep.size());
      for (int64_t i = 0; i < completions && room > 0; ++i) {
        if (!completed.count(i) && !running.count(i)) {
          toCreate.push_back(i);
          --room;
        }
      }
    } else {
      int64_t want = hasCompletions ? std::min(parallelism, completions - succeeded) : (succeeded > 0 ? 0 : parallelism);
      want = std::max<int64_t>(want, 0);
      int64_t have = static_cast<int64_t>(active.size());
      for (int64_t i = have; i < want; ++i) toCreate.push_back(-1);
      if (have > want) {
        sortForDeletion(active);
        surplus.assign(active.begin(), active.begin() + (have - want));
      }
    }
    base::Status result;
    if (!surplus.empty()) {
      expectations_.start(key);
      for (const kube::ObjectPtr& p : surplus) expectations_.expectDelete(key, std::string(kube::objectName(*p)));
      result = deleteAll(surplus, key);
    }
    if (toCreate.empty()) return result;
    const json::object* tmpl = kube::child(job, {"spec", "template"});
    if (!tmpl) return result;
    expectations_.start(key);
    std::string ns(kube::objectNamespace(job));
    std::string name(kube::objectName(job));
    auto ref = controllerRef("batch/v1", "Job", job);
    auto made = slowStartCreate(
        ctx_.client, kPods, ns, static_cast<int>(toCreate.size()),
        [&](int n) {
          int64_t index = toCreate[static_cast<size_t>(n)];
          json::object pod = podFromTemplate(*tmpl, ns, index < 0 ? name + "-" : fmt::format("{}-{}-", name, index), ref);
          json::value& fins = kube::ensureObject(pod, {"metadata"})["finalizers"];
          if (!fins.is_array()) fins = json::array{};
          fins.get_array().emplace_back(kTracking);
          if (index >= 0) withIndex(pod, name, index);
          return pod;
        },
        [&](const json::object& pod) {
          std::string podKey = kube::objectKey(pod);
          expectations_.expectAdd(key, std::string(kube::objectName(pod)), [&] { return pods_->get(podKey) != nullptr; });
          events_.record(job, "Normal", "SuccessfulCreate", fmt::format("Created pod: {}", kube::objectName(pod)));
        });
    if (!made.error) {
      events_.record(job, "Warning", "FailedCreate", fmt::format("Error creating: {}", made.error.error().message()));
      if (result) result = made.error;
    }
    return result;
  }

  // An Indexed Job's pod: the index as annotation, label, hostname and
  // JOB_COMPLETION_INDEX in every container.
  static void withIndex(json::object& pod, const std::string& job, int64_t index) {
    std::string i = std::to_string(index);
    kube::ensureObject(pod, {"metadata", "annotations"})[kIndexKey] = i;
    kube::ensureObject(pod, {"metadata", "labels"})[kIndexKey] = i;
    json::object& spec = kube::ensureObject(pod, {"spec"});
    if (kube::str(spec, {"hostname"}).empty()) spec["hostname"] = fmt::format("{}-{}", job, index);
    for (const char* list : {"containers", "initContainers"}) {
      json::value* cs = spec.if_contains(list);
      if (!cs || !cs->is_array()) continue;
      for (json::value& c : cs->get_array()) {
        if (!c.is_object()) continue;
        json::value& env = c.get_object()["env"];
        if (!env.is_array()) env = json::array{};
        env.get_array().push_back(json::object{
            {"name", "JOB_COMPLETION_INDEX"},
            {"valueFrom", json::object{{"fieldRef", json::object{{"apiVersion", "v1"},
                                                                 {"fieldPath", fmt::format("metadata.labels['{}']", kIndexKey)}}}}}});
      }
    }
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> jobs_, pods_;
  Expectations expectations_;
  std::mutex mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> backoffUntil_;
};

class TtlAfterFinished : public Reconciler {
 public:
  explicit TtlAfterFinished(Context& ctx)
      : Reconciler(ctx, "ttl-after-finished", [this](const std::string& key) { return reconcile(key); }),
        jobs_(ctx.informers.get(kJobs)) {
    controller_.watch(*jobs_);
  }

 private:
  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr job = jobs_->get(key);
    if (!job || kube::beingDeleted(*job) || !finished(*job)) return {};
    const json::value* ttl = kube::field(*job, {"spec", "ttlSecondsAfterFinished"});
    if (!ttl || !ttl->is_int64()) return {};
    const json::object* c = conditionTrue(*job, "Complete") ? condition(*job, "Complete") : condition(*job, "Failed");
    auto at = kube::parseRfc3339(std::string(kube::str(*c, {"lastTransitionTime"})));
    int64_t left = (at ? *at : 0) + ttl->get_int64() - unixNow();
    if (left > 0) {
      controller_.queue().addAfter(key, std::chrono::seconds(left));
      return {};
    }
    kube::DeleteOptions opts{.propagationPolicy = "Foreground", .uid = std::string(kube::uid(*job)), .resourceVersion = {}};
    auto st = ctx_.client.remove(kJobs, kube::objectNamespace(*job), kube::objectName(*job), opts);
    if (!st && st.error().code() != base::ErrorCode::kNotFound && st.error().code() != base::ErrorCode::kConflict) return st;
    log().info("deleted finished job", {{"job", key}});
    return {};
  }

  std::shared_ptr<kube::Informer> jobs_;
};

}  // namespace

std::unique_ptr<Runnable> makeJobs(Context& ctx) { return std::make_unique<Jobs>(ctx); }
std::unique_ptr<Runnable> makeTtlAfterFinished(Context& ctx) { return std::make_unique<TtlAfterFinished>(ctx); }

}  // namespace trellis::controllers
