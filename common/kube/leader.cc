#include "common/kube/leader.h"

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/log.h"
#include "common/kube/object.h"

namespace trellis::kube {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

const base::Logger& log() {
  static base::Logger l("leader");
  return l;
}


std::string specString(const json::object& lease, std::string_view key) {
  const json::value* spec = lease.if_contains("spec");
  const json::value* v = spec && spec->is_object() ? spec->get_object().if_contains(key) : nullptr;
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

struct LeaderElector::Impl {
  Client& client;
  LeaderElectionOptions o;
  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool leading = false;
  std::string holder;
  // What this candidate last saw of the Lease and when it saw it change.
  std::string observedRecord;
  Clock::time_point observedAt{};

  Impl(Client& c, LeaderElectionOptions opts) : client(c), o(std::move(opts)) {}

  bool sleep(std::chrono::milliseconds d) {
    std::unique_lock g(mu);
    return !cv.wait_for(g, d, [&] { return stopping; });
  }

  json::object spec(int transitions, const std::string& acquireTime) {
    return json::object{{"holderIdentity", o.identity},
                        {"leaseDurationSeconds", std::max<int64_t>(1, o.leaseDuration.count() / 1000)},
                        {"acquireTime", acquireTime},
                        {"renewTime", microTimeNow()},
                        {"leaseTransitions", transitions}};
  }

  // One attempt to take or renew the Lease; true when this candidate holds it.
  bool tryAcquireOrRenew() {
    auto lease = client.get(resources::kLeases, o.ns, o.name);
    if (!lease) {
      if (lease.error().code() != base::ErrorCode::kNotFound) return false;
      json::object obj{{"metadata", json::object{{"name", o.name}, {"namespace", o.ns}}},
                       {"spec", spec(0, microTimeNow())}};
      auto created = client.create(resources::kLeases, o.ns, std::move(obj));
      if (!created) return false;
      observe(*created);
      return true;
    }
    observe(*lease);
    std::string current = specString(*lease, "holderIdentity");
    bool mine = current == o.identity;
    {
      std::lock_guard g(mu);
      if (!mine && !current.empty() && Clock::now() - observedAt < o.leaseDuration) return false;  // held, fresh
    }
    const json::value* specV = lease->if_contains("spec");
    int transitions = 0;
    std::string acquire = microTimeNow();
    if (specV && specV->is_object()) {
      if (const json::value* t = specV->get_object().if_contains("leaseTransitions"); t && t->is_int64()) {
        transitions = static_cast<int>(t->get_int64());
      }
      if (mine) acquire = specString(*lease, "acquireTime");
    }
    json::object updated = *lease;
    updated["spec"] = spec(mine ? transitions : transitions + 1, acquire);
    auto written = client.update(resources::kLeases, std::move(updated));  // resourceVersion: the precondition
    if (!written) return false;
    observe(*written);
    return true;
  }

  void observe(const json::object& lease) {
    std::string record = boost::json::serialize(lease.contains("spec") ? lease.at("spec") : json::value());
    std::lock_guard g(mu);
    holder = specString(lease, "holderIdentity");
    if (record != observedRecord) {
      observedRecord = record;
      observedAt = Clock::now();
    }
  }

  void release() {
    auto lease = client.get(resources::kLeases, o.ns, o.name);
    if (!lease || specString(*lease, "holderIdentity") != o.identity) return;
    json::object updated = *lease;
    json::object& s = updated["spec"].as_object();
    s["holderIdentity"] = "";
    s["leaseDurationSeconds"] = 1;
    s["renewTime"] = microTimeNow();
    static_cast<void>(client.update(resources::kLeases, std::move(updated)));  // best effort: expiry covers a failure
  }
};

LeaderElector::LeaderElector(Client& client, LeaderElectionOptions options)
    : impl_(std::make_unique<Impl>(client, std::move(options))) {}

LeaderElector::~LeaderElector() { stop(); }

void LeaderElector::stop() {
  {
    std::lock_guard g(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
}

bool LeaderElector::isLeader() const {
  std::lock_guard g(impl_->mu);
  return impl_->leading;
}

std::string LeaderElector::leader() const {
  std::lock_guard g(impl_->mu);
  return impl_->holder;
}

void LeaderElector::run(std::function<void(std::stop_token)> lead) {
  Impl& im = *impl_;
  while (true) {
    // Campaign.
    while (!im.tryAcquireOrRenew()) {
      if (!im.sleep(im.o.retryPeriod)) return;
    }
    log().info("became leader", {{"lease", im.o.ns + "/" + im.o.name}, {"identity", im.o.identity}});
    {
      std::lock_guard g(im.mu);
      im.leading = true;
    }
    std::jthread worker([&lead](std::stop_token st) { lead(st); });
    // Renew until a renewal has failed for renewDeadline, or stop().
    auto lastRenew = Clock::now();
    bool stopped = false;
    while (true) {
      if (!im.sleep(im.o.retryPeriod)) {
        stopped = true;
        break;
      }
      if (im.tryAcquireOrRenew()) {
        lastRenew = Clock::now();
      } else if (Clock::now() - lastRenew >= im.o.renewDeadline) {
        log().warn("lost the lease", {{"lease", im.o.ns + "/" + im.o.name}});
        break;
      }
    }
    worker.request_stop();
    worker.join();
    {
      std::lock_guard g(im.mu);
      im.leading = false;
    }
    if (stopped) {
      if (im.o.releaseOnCancel) im.release();
      return;
    }
  }
}

}  // namespace trellis::kube
