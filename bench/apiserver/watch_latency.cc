// trellis-bench-watch-latency: how long after a write's response its watch
// event reaches another client. One client watches ConfigMaps in a namespace
// (HTTP/2 stream); another creates COUNT ConfigMaps one after the other and
// notes when each response arrived; the watcher notes when each ADDED event
// arrived. Prints p50/p99/max of (event - response), an event that beats the
// response counting as 0, and of (event - request sent); fails if any event
// is missing.
//
//   trellis-bench-watch-latency SERVER CA_FILE TOKEN NAMESPACE COUNT
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "common/http/client.h"

using namespace trellis;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 6) {
    fmt::print(stderr, "usage: {} SERVER CA_FILE TOKEN NAMESPACE COUNT\n", argv[0]);
    return 2;
  }
  std::string server = argv[1], ca = argv[2], token = argv[3], ns = argv[4];
  int count = std::stoi(argv[5]);
  auto tls = http::TlsClientConfig::create({.caFile = ca});
  if (!tls) {
    fmt::print(stderr, "tls: {}\n", tls.error().message());
    return 1;
  }
  auto origin = http::Origin::parse(server);
  if (!origin) return 1;
  http::Client watcher({.tls = *tls});
  http::Client writer({.tls = *tls});
  auto request = [&](std::string method, std::string target, std::string body = "") {
    http::Request r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.headers.add("authorization", "Bearer " + token);
    r.headers.add("accept", "application/json");
    if (!body.empty()) r.headers.add("content-type", "application/json");
    r.body = std::move(body);
    return r;
  };
  auto list = writer.fetch(*origin, request("GET", "/api/v1/namespaces/" + ns + "/configmaps?limit=1"));
  if (!list || list->status != 200) {
    fmt::print(stderr, "list failed\n");
    return 1;
  }
  std::string rv(boost::json::parse(list->body).at("metadata").at("resourceVersion").as_string());

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Clock::time_point> events;
  std::string pending;
  watcher.start(*origin,
                request("GET", "/api/v1/namespaces/" + ns + "/configmaps?watch=true&resourceVersion=" + rv),
                {.onData =
                     [&](std::string_view data) {
                       auto now = Clock::now();
                       pending.append(data);
                       size_t nl;
                       while ((nl = pending.find('\n')) != std::string::npos) {
                         auto ev = boost::json::parse(pending.substr(0, nl));
                         pending.erase(0, nl + 1);
                         if (ev.at("type").as_string() != "ADDED") continue;
                         std::string name(ev.at("object").at("metadata").at("name").as_string());
                         std::lock_guard g(mu);
                         events.emplace(name, now);
                         cv.notify_all();
                       }
                     },
                 .onComplete = [](base::Result<http::Response>) {}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the watch is established

  std::map<std::string, Clock::time_point> responses, sent;
  for (int i = 0; i < count; ++i) {
    std::string name = fmt::format("wl-{}", i);
    sent.emplace(name, Clock::now());
    auto r = writer.fetch(*origin, request("POST", "/api/v1/namespaces/" + ns + "/configmaps",
                                           R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":")" + name +
                                               R"("},"data":{"k":"v"}})"));
    auto at = Clock::now();
    if (!r || r->status != 201) {
      fmt::print(stderr, "create {} failed\n", name);
      return 1;
    }
    responses.emplace(name, at);
  }
  std::unique_lock lk(mu);
  cv.wait_for(lk, std::chrono::seconds(5), [&] { return events.size() >= static_cast<size_t>(count); });
  std::vector<double> lat, fromSend;
  for (const auto& [name, at] : responses) {
    auto it = events.find(name);
    if (it == events.end()) {
      fmt::print(stderr, "event for {} never arrived\n", name);
      return 1;
    }
    lat.push_back(std::max(0.0, std::chrono::duration<double, std::milli>(it->second - at).count()));
    fromSend.push_back(std::chrono::duration<double, std::milli>(it->second - sent[name]).count());
  }
  auto pct = [](std::vector<double>& v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
  };
  fmt::print("watch_latency_ms p50={:.3f} p99={:.3f} max={:.3f} n={}\n", pct(lat, 0.5), pct(lat, 0.99), lat.back(),
             lat.size());
  fmt::print("event_after_request_sent_ms p50={:.3f} p99={:.3f}\n", pct(fromSend, 0.5), pct(fromSend, 0.99));
  return 0;
}
