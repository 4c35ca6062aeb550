// trellis-bench-kube: common/kube against a running API server.
//
//   trellis-bench-kube sync KUBECONFIG NS           informer sync time of NS's ConfigMaps (3 runs)
//   trellis-bench-kube latency KUBECONFIG NS N      update -> another client's informer handler, N updates
//   trellis-bench-kube watches KUBECONFIG NS W      W concurrent watches: one connection? all see an event?
//   trellis-bench-kube memory KUBECONFIG NS         RSS with 5 informers synced (NS's ConfigMaps + 4 small kinds)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/kube/client.h"
#include "common/kube/config.h"
#include "common/kube/informer.h"

using namespace trellis;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

namespace {

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

long rssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

std::unique_ptr<kube::Client> connect(const std::string& kubeconfig) {
  auto cfg = kube::loadKubeconfig({kubeconfig});
  if (!cfg) {
    fmt::print(stderr, "{}\n", cfg.error().message());
    std::exit(1);
  }
  auto c = kube::Client::create(*cfg, {.qps = 0});
  if (!c) std::exit(1);
  return std::move(*c);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fmt::print(stderr, "usage: {} sync|latency|watches|memory KUBECONFIG NS [N]\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1], kubeconfig = argv[2], ns = argv[3];
  int n = argc > 4 ? std::stoi(argv[4]) : 0;
  auto client = connect(kubeconfig);

  if (mode == "sync") {
    std::vector<double> times;
    size_t objects = 0;
    for (int run = 0; run < 3; ++run) {
      auto start = Clock::now();
      kube::Informer inf(*client, kube::resources::kConfigMaps, {.ns = ns});
      inf.start();
      if (!inf.waitForSync(std::chrono::seconds(60))) return 1;
      times.push_back(ms(Clock::now() - start));
      objects = inf.size();
    }
    fmt::print("informer_sync objects={} median_ms={:.1f} runs_ms={:.1f},{:.1f},{:.1f}\n", objects, pct(times, 0.5),
               times[0], times[1], times[2]);
    return 0;
  }

  if (mode == "latency") {
    auto other = connect(kubeconfig);  // the writer: another client, its own connection
    json::object cm{{"metadata", json::object{{"name", "latency"}, {"namespace", ns}}}, {"data", json::object{{"v", "0"}}}};
    static_cast<void>(client->remove(kube::resources::kConfigMaps, ns, "latency"));
    if (!other->create(kube::resources::kConfigMaps, ns, cm)) return 1;
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::string, Clock::time_point> seen;  // value -> handler time
    kube::Informer inf(*client, kube::resources::kConfigMaps, {.ns = ns, .fieldSelector = "metadata.name=latency"});
    inf.addHandler({.onUpdate = [&](const kube::ObjectPtr&, const kube::ObjectPtr& o) {
      auto now = Clock::now();
      const json::value* d = o->if_contains("data");
      const json::value* v = d && d->is_object() ? d->get_object().if_contains("v") : nullptr;
      if (!v || !v->is_string()) return;
      std::lock_guard g(mu);
      seen.emplace(std::string(v->get_string()), now);
      cv.notify_all();
    }});
    inf.start();
    if (!inf.waitForSync(std::chrono::seconds(10))) return 1;
    std::vector<double> afterResponse, afterSend;
    for (int i = 1; i <= n; ++i) {
      std::string v = std::to_string(i);
      auto sent = Clock::now();
      auto r = other->patch(kube::resources::kConfigMaps, ns, "latency", kube::PatchType::kMerge,
                            R"({"data":{"v":")" + v + "\"}}");
      auto answered = Clock::now();
      if (!r) return 1;
      std::unique_lock g(mu);
      if (!cv.wait_for(g, std::chrono::seconds(5), [&] { return seen.count(v) > 0; })) {
        fmt::print(stderr, "update {} never reached the handler\n", i);
        return 1;
      }
      afterResponse.push_back(std::max(0.0, ms(seen[v] - answered)));
      afterSend.push_back(ms(seen[v] - sent));
    }
    fmt::print("update_to_handler n={} after_response_p50_ms={:.3f} p99_ms={:.3f} after_send_p50_ms={:.3f} p99_ms={:.3f}\n",
               n, pct(afterResponse, 0.5), pct(afterResponse, 0.99), pct(afterSend, 0.5), pct(afterSend, 0.99));
    return 0;
  }

  if (mode == "watches") {
    std::atomic<int> got{0};
    std::vector<std::unique_ptr<kube::Client::Watch>> watches;
    auto list = client->list(kube::resources::kConfigMaps, ns, {.limit = 1});
    if (!list) return 1;
    for (int i = 0; i < n; ++i) {
      kube::ListOptions lo{.resourceVersion = list->resourceVersion};
      watches.push_back(client->watch(
          kube::resources::kConfigMaps, ns, lo,
          [&](kube::WatchEvent ev) {
            if (ev.type == kube::WatchEvent::Type::kAdded && kube::objectName(ev.object) == "ping") ++got;
          },
          [](base::Status) {}));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    static_cast<void>(client->remove(kube::resources::kConfigMaps, ns, "ping"));
    auto start = Clock::now();
    json::object cm{{"metadata", json::object{{"name", "ping"}, {"namespace", ns}}}};
    if (!client->create(kube::resources::kConfigMaps, ns, cm)) return 1;
    while (got.load() < n && Clock::now() - start < std::chrono::seconds(10)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    fmt::print("watches open={} saw_event={} connections={} all_within_ms={:.1f} rss_mib={:.1f}\n", n, got.load(),
               client->openConnections(), ms(Clock::now() - start), static_cast<double>(rssKb()) / 1024);
    for (auto& w : watches) w->stop();
    return got.load() == n ? 0 : 1;
  }

  if (mode == "memory") {
    std::vector<std::unique_ptr<kube::Informer>> infs;
    infs.push_back(std::make_unique<kube::Informer>(*client, kube::resources::kConfigMaps, kube::InformerOptions{.ns = ns}));
    for (const kube::Resource* r : {&kube::resources::kNamespaces, &kube::resources::kNodes, &kube::resources::kServices,
                                    &kube::resources::kLeases}) {
      infs.push_back(std::make_unique<kube::Informer>(*client, *r));
    }
    for (auto& i : infs) i->start();
    for (auto& i : infs) {
      if (!i->waitForSync(std::chrono::seconds(60))) return 1;
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));  // idle
    size_t cached = 0;
    for (auto& i : infs) cached += i->size();
    fmt::print("memory informers={} cached_objects={} rss_mib={:.1f}\n", infs.size(), cached,
               static_cast<double>(rssKb()) / 1024);
    return 0;
  }
  fmt::print(stderr, "unknown mode {}\n", mode);
  return 2;
}
