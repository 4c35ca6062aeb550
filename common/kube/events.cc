#include "common/kube/events.h"

#include <condition_variable>
#include <ctime>
#include <deque>
#include <map>
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
  static base::Logger l("events");
  return l;
}

std::string field(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

struct EventRecorder::Impl {
  Client& client;
  EventSource source;
  struct Pending {
    json::object involved;  // the ObjectReference
    std::string type, reason, message;
  };
  struct Seen {
    std::string ns, name;  // of the Event
    int64_t count = 0;
    Clock::time_point last;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> queue;
  size_t inFlight = 0;
  bool stopping = false;
  std::map<std::string, Seen> seen;  // aggregation key -> the Event written
  std::thread thread;

  Impl(Client& c, EventSource s) : client(c), source(std::move(s)), thread([this] { run(); }) {}

  void write(const Pending& p) {
    // As client-go's correlator: the object (not its resourceVersion), type, reason, message.
    std::string key;
    for (const char* f : {"kind", "apiVersion", "namespace", "name", "uid"}) key += field(p.involved, f) + "\x1f";
    key += p.type + "\x1f" + p.reason + "\x1f" + p.message;
    std::string ns = field(p.involved, "namespace");
    if (ns.empty()) ns = "default";  // events about cluster-scoped objects live in default
    std::string now = rfc3339Now();
    auto it = seen.find(key);
    if (it != seen.end() && Clock::now() - it->second.last < std::chrono::minutes(10)) {
      int64_t count = it->second.count + 1;
      auto patched = client.patch(resources::kEvents, it->second.ns, it->second.name, PatchType::kMerge,
                                  json::serialize(json::object{{"count", count}, {"lastTimestamp", now}}));
      if (patched) {
        it->second.count = count;
        it->second.last = Clock::now();
        return;
      }
      seen.erase(it);  // gone (TTL, deleted): write a new one
    }
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    std::string name = fmt::format("{}.{:x}", field(p.involved, "name"),
                                   static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec));
    json::object ev{{"metadata", json::object{{"name", name}, {"namespace", ns}}},
                    {"involvedObject", p.involved},
                    {"reason", p.reason},
                    {"message", p.message},
                    {"type", p.type},
                    {"source", source.host.empty() ? json::object{{"component", source.component}}
                                                   : json::object{{"component", source.component}, {"host", source.host}}},
                    {"reportingComponent", source.component},
                    {"reportingInstance", source.host},
                    {"firstTimestamp", now},
                    {"lastTimestamp", now},
                    {"count", 1}};
    auto created = client.create(resources::kEvents, ns, std::move(ev));
    if (!created) {
      log().warn("writing an event failed", {{"reason", p.reason}, {"error", created.error().message()}});
      return;
    }
    seen[key] = Seen{ns, name, 1, Clock::now()};
  }

  void run() {
    std::unique_lock g(mu);
    while (true) {
      cv.wait(g, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping, nothing left
      Pending p = std::move(queue.front());
      queue.pop_front();
      ++inFlight;
      g.unlock();
      write(p);
      g.lock();
      --inFlight;
      cv.notify_all();
    }
  }
};

EventRecorder::EventRecorder(Client& client, EventSource source)
    : impl_(std::make_unique<Impl>(client, std::move(source))) {}

EventRecorder::~EventRecorder() {
  {
    std::lock_guard g(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
}

void EventRecorder::record(const json::object& involved, std::string_view type, std::string_view reason,
                           std::string message) {
  const json::value* m = involved.if_contains("metadata");
  const json::object meta = m && m->is_object() ? m->get_object() : json::object{};
  json::object ref{{"kind", field(involved, "kind")},
                   {"apiVersion", field(involved, "apiVersion")},
                   {"name", field(meta, "name")},
                   {"uid", field(meta, "uid")},
                   {"resourceVersion", field(meta, "resourceVersion")}};
  if (std::string ns = field(meta, "namespace"); !ns.empty()) ref["namespace"] = ns;
  {
    std::lock_guard g(impl_->mu);
    impl_->queue.push_back({std::move(ref), std::string(type), std::string(reason), std::move(message)});
  }
  impl_->cv.notify_all();
}

void EventRecorder::flush() {
  std::unique_lock g(impl_->mu);
  impl_->cv.wait(g, [&] { return impl_->queue.empty() && impl_->inFlight == 0; });
}

}  // namespace trellis::kube
