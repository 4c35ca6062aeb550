// cronjob: creates a Job from each CronJob's jobTemplate at the times its
// schedule names (common/kube/cron.h: five fields or a macro) in its
// timeZone (UTC without one). The Job is named "<cronjob>-<minutes since the
// epoch of its scheduled time>", so a restart never creates a time's Job
// twice. Of the times missed since lastScheduleTime (or creation) only the
// latest runs, and not when startingDeadlineSeconds has passed since it.
// concurrencyPolicy Forbid skips a time while a Job is active; Replace
// deletes the active Jobs first. Finished Jobs beyond
// successfulJobsHistoryLimit / failedJobsHistoryLimit are deleted oldest
// first. Status: active (references), lastScheduleTime,
// lastSuccessfulTime. `suspend` stops new Jobs.
//
// The clock is injectable: with --cronjob-clock-file the current time is the
// RFC 3339 time in that file (read at every sync, and every CronJob is
// looked at five times a second), so tests move time forward in minutes
// without waiting for them.
#include <algorithm>
#include <fstream>
#include <thread>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/cron.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kCronJobs;
using kube::resources::kJobs;

const base::Logger& log() {
  static base::Logger l("cronjob");
  return l;
}

const json::object* finishedCondition(const json::object& job) {
  for (const char* type : {"Complete", "Failed"}) {
    const json::object* c = condition(job, type);
    if (c && kube::str(*c, {"status"}) == "True") return c;
  }
  return nullptr;
}

class CronJobs : public Reconciler {
 public:
  explicit CronJobs(Context& ctx)
      : Reconciler(ctx, "cronjob", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("cronjob-controller")),
        cronJobs_(ctx.informers.get(kCronJobs)),
        jobs_(ctx.informers.get(kJobs)) {
    indexByNamespace(*jobs_);
    controller_.watch(*cronJobs_);
    controller_.watch(*jobs_, [](const json::object& job) {
      auto ref = kube::controllerOf(job);
      if (!ref || ref->kind != "CronJob") return std::vector<std::string>{};
      return std::vector<std::string>{std::string(kube::objectNamespace(job)) + "/" + ref->name};
    });
  }

  void run(std::stop_token stop) override {
    std::jthread ticker;
    if (!ctx_.options.clockFile.empty()) {
      ticker = std::jthread([this](std::stop_token s) {
        while (!s.stop_requested()) {
          for (const kube::ObjectPtr& cj : cronJobs_->list()) controller_.enqueue(kube::objectKey(*cj));
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
      });
    }
    controller_.run(stop);
  }

 private:
  int64_t now() const {
    if (ctx_.options.clockFile.empty()) return unixNow();
    std::ifstream in(ctx_.options.clockFile);
    std::string text;
    std::getline(in, text);
    auto t = kube::parseRfc3339(text);
    return t ? *t : 0;
  }

  base::Status reconcile(const std::string& key) {
    kube::ObjectPtr cj = cronJobs_->get(key);
    if (!cj || kube::beingDeleted(*cj)) return {};
    int64_t clock = now();
    if (clock <= 0) return {};  // an unreadable test clock: do nothing rather than act at 1970
    std::string ns(kube::objectNamespace(*cj));
    base::Status result;
    auto keep = [&](base::Status st) {
      if (!st && result) result = st;
    };
    std::vector<kube::ObjectPtr> active, succeeded, failed;
    for (const kube::ObjectPtr& job : jobs_->byIndex(kByNamespace, ns)) {
      auto ref = kube::controllerOf(*job);
      if (!ref || ref->uid != kube::uid(*cj)) continue;
      const json::object* done = finishedCondition(*job);
      if (!done) active.push_back(job);
      else if (kube::str(*done, {"type"}) == "Complete") succeeded.push_back(job);
      else failed.push_back(job);
    }
    json::object st = kube::child(*cj, {"status"}) ? *kube::child(*cj, {"status"}) : json::object{};
    json::object before = st;
    for (const kube::ObjectPtr& job : succeeded) {
      std::string_view done = kube::str(*job, {"status", "completionTime"});
      if (!done.empty() && kube::str(st, {"lastSuccessfulTime"}) < done) st["lastSuccessfulTime"] = done;
    }
    keep(prune(succeeded, kube::integer(*cj, {"spec", "successfulJobsHistoryLimit"}, 3)));
    keep(prune(failed, kube::integer(*cj, {"spec", "failedJobsHistoryLimit"}, 1)));

    auto tz = kube::TimeZone::load(kube::str(*cj, {"spec", "timeZone"}));
    auto schedule = kube::CronSchedule::parse(kube::str(*cj, {"spec", "schedule"}));
    if (!tz || !schedule) {
      events_.record(*cj, "Warning", !schedule ? "UnparseableSchedule" : "UnknownTimeZone",
                     !schedule ? schedule.error().message() : tz.error().message());
      return finish(*cj, key, st, before, active, result);
    }
    if (!kube::boolean(*cj, {"spec", "suspend"})) {
      // The latest time due since the last run (or creation), within the deadline.
      int64_t since = kube::parseRfc3339(std::string(kube::str(st, {"lastScheduleTime"})))
                          .value_or(kube::parseRfc3339(std::string(kube::str(*cj, {"metadata", "creationTimestamp"}))).value_or(clock));
      const json::value* deadline = kube::field(*cj, {"spec", "startingDeadlineSeconds"});
      if (deadline && deadline->is_int64()) since = std::max(since, clock - deadline->get_int64());
      int64_t due = -1, missed = 0;
      for (int64_t t = schedule->next(since, *tz); t >= 0 && t <= clock && missed < 100'000; t = schedule->next(t, *tz)) {
        due = t;
        ++missed;
      }
      if (missed > 100) {
        events_.record(*cj, "Warning", "TooManyMissedTimes",
                       fmt::format("too many missed start times: {}. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                                   missed));
      }
      if (due >= 0) keep(start(*cj, due, active, st));
    }
    int64_t next = schedule->next(clock, *tz);
    if (next > clock && ctx_.options.clockFile.empty()) controller_.queue().addAfter(key, std::chrono::seconds(next - clock));
    return finish(*cj, key, st, before, active, result);
  }

  // Runs the Job of scheduled time `due` unless concurrencyPolicy says not now.
  base::Status start(const json::object& cj, int64_t due, std::vector<kube::ObjectPtr>& active, json::object& st) {
    std::string ns(kube::objectNamespace(cj));
    std::string name = fmt::format("{}-{}", kube::objectName(cj), due / 60);
    for (const kube::ObjectPtr& job : active) {
      if (kube::objectName(*job) == name) return {};  // made already (a restart, or the cache lagging)
    }
    std::string_view policy = kube::str(cj, {"spec", "concurrencyPolicy"});
    if (policy == "Forbid" && !active.empty()) return {};  // tried again while still within the deadline
    if (policy == "Replace") {
      for (const kube::ObjectPtr& job : active) {
        auto gone = ctx_.client.remove(kJobs, ns, kube::objectName(*job), kube::DeleteOptions{.propagationPolicy = "Background", .uid = {}, .resourceVersion = {}});
        if (!gone && gone.error().code() != base::ErrorCode::kNotFound) return gone;
        events_.record(cj, "Normal", "SuccessfulDelete", fmt::format("Deleted job {}", kube::objectName(*job)));
      }
      active.clear();
    }
    json::object meta{{"name", name}, {"namespace", ns}};
    if (const json::object* m = kube::child(cj, {"spec", "jobTemplate", "metadata"})) {
      for (const char* f : {"labels", "annotations"}) {
        if (const json::value* v = m->if_contains(f)) meta[f] = *v;
      }
    }
    kube::ensureObject(meta, {"annotations"})["batch.kubernetes.io/cronjob-scheduled-timestamp"] = kube::formatRfc3339(due);
    meta["ownerReferences"] = json::array{kube::toJson(controllerRef("batch/v1", "CronJob", cj))};
    json::object job{{"apiVersion", "batch/v1"}, {"kind", "Job"}, {"metadata", std::move(meta)}};
    if (const json::value* spec = kube::field(cj, {"spec", "jobTemplate", "spec"})) job["spec"] = *spec;
    auto res = ctx_.client.create(kJobs, ns, std::move(job));
    if (!res && res.error().code() == base::ErrorCode::kAlreadyExists) {
      res = ctx_.client.get(kJobs, ns, name);  // ours, made before a restart
      if (!res) return res.error();
      auto ref = kube::controllerOf(*res);
      if (!ref || ref->uid != kube::uid(cj)) return base::Error(base::ErrorCode::kAlreadyExists, "job " + name + " is not this CronJob's");
    } else if (!res) {
      events_.record(cj, "Warning", "FailedCreate", fmt::format("Error creating job: {}", res.error().message()));
      return res.error();
    } else {
      events_.record(cj, "Normal", "SuccessfulCreate", fmt::format("Created job {}", name));
      log().info("created job", {{"cronjob", kube::objectKey(cj)}, {"job", name}});
    }
    active.push_back(std::make_shared<const json::object>(*res));
    st["lastScheduleTime"] = kube::formatRfc3339(due);
    return {};
  }

  // Deletes the oldest finished Jobs beyond `limit`.
  base::Status prune(std::vector<kube::ObjectPtr> jobs, int64_t limit) {
    if (static_cast<int64_t>(jobs.size()) <= limit) return {};
    std::sort(jobs.begin(), jobs.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
      return kube::str(*a, {"metadata", "creationTimestamp"}) < kube::str(*b, {"metadata", "creationTimestamp"}) ||
             (kube::str(*a, {"metadata", "creationTimestamp"}) == kube::str(*b, {"metadata", "creationTimestamp"}) &&
              kube::objectName(*a) < kube::objectName(*b));
    });
    base::Status result;
    for (size_t i = 0; i < jobs.size() - static_cast<size_t>(std::max<int64_t>(limit, 0)); ++i) {
      if (kube::beingDeleted(*jobs[i])) continue;
      auto st = ctx_.client.remove(kJobs, kube::objectNamespace(*jobs[i]), kube::objectName(*jobs[i]),
                                   kube::DeleteOptions{.propagationPolicy = "Background", .uid = {}, .resourceVersion = {}});
      if (!st && st.error().code() != base::ErrorCode::kNotFound && result) result = st;
    }
    return result;
  }

  base::Status finish(const json::object& cj, const std::string& key, json::object& st, const json::object& before,
                      const std::vector<kube::ObjectPtr>& active, base::Status result) {
    json::array refs;
    for (const kube::ObjectPtr& job : active) {
      refs.push_back(json::object{{"apiVersion", "batch/v1"},
                                  {"kind", "Job"},
                                  {"name", kube::objectName(*job)},
                                  {"namespace", kube::objectNamespace(*job)},
                                  {"uid", kube::uid(*job)},
                                  {"resourceVersion", kube::objectResourceVersion(*job)}});
    }
    std::sort(refs.begin(), refs.end(), [](const json::value& a, const json::value& b) {
      return kube::str(a.get_object(), {"name"}) < kube::str(b.get_object(), {"name"});
    });
    // Compare by names: a reference's resourceVersion changes with every Job update.
    auto names = [](const json::value* v) {
      std::vector<std::string> out;
      if (v && v->is_array()) {
        for (const json::value& r : v->get_array()) {
          if (r.is_object()) out.emplace_back(kube::str(r.get_object(), {"name"}));
        }
      }
      std::sort(out.begin(), out.end());
      return out;
    };
    json::value refsValue = std::move(refs);
    bool sameActive = names(&refsValue) == names(before.if_contains("active"));
    if (refsValue.get_array().empty()) st.erase("active");
    else if (!sameActive) st["active"] = refsValue;
    if (sameActive && before.contains("active")) st["active"] = before.at("active");
    if (st == before) return result;
    json::object copy = cj;
    copy["status"] = st;
    auto res = ctx_.client.update(kCronJobs, std::move(copy), "status");
    if (!res && res.error().code() == base::ErrorCode::kConflict) controller_.enqueue(key);
    else if (!res && res.error().code() != base::ErrorCode::kNotFound && result) result = res.error();
    return result;
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> cronJobs_, jobs_;
};

}  // namespace

std::unique_ptr<Runnable> makeCronJobs(Context& ctx) { return std::make_unique<CronJobs>(ctx); }

}  // namespace trellis::controllers
