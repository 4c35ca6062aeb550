// Drives a running apiserver + trellis-controllers (+ trellis-csi) for
// bench/controllers/run.sh; each mode prints one line of figures.
//   pvcs KUBECONFIG FILE N        kubectl apply -f FILE (N claims), time until all are Bound
//   pods KUBECONFIG NODES N       NODES nodes, then N pods created 8 at a time; time until all are bound
//   slices KUBECONFIG ROUNDS      a Service with 100 ready pods; ROUNDS readiness flips of one pod,
//                                 each timed until the EndpointSlice shows it (p50, p99)
//   objects KUBECONFIG N          N ConfigMaps (what the controllers cache besides the rest)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/kube/client.h"
#include "common/kube/informer.h"
#include "common/kube/object.h"
#include "common/testing/kubelet_stand_in.h"

using namespace trellis;
namespace json = boost::json;
namespace res = kube::resources;
using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::unique_ptr<kube::Client> connect(const std::string& kubeconfig) {
  auto cfg = kube::loadKubeconfig({kubeconfig});
  if (!cfg) {
    fmt::print(stderr, "{}\n", cfg.error().message());
    std::exit(1);
  }
  auto c = kube::Client::create(*cfg, {.qps = 0, .userAgent = "trellis-bench-controllers"});
  if (!c) std::exit(1);
  return std::move(*c);
}

// Waits (up to 120 s) until `done` holds over the informer's objects.
bool waitUntil(kube::Informer& inf, const std::function<bool(const std::vector<kube::ObjectPtr>&)>& done) {
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    if (done(inf.list())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

void parallel(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (int i; (i = next++) < n;) fn(i);
    });
  }
  for (auto& t : ts) t.join();
}

int pvcs(const std::string& kubeconfig, const std::string& file, int n) {
  auto client = connect(kubeconfig);
  kube::Informer claims(*client, res::kPersistentVolumeClaims);
  claims.start();
  claims.waitForSync(std::chrono::seconds(10));
  auto start = Clock::now();
  if (std::system(fmt::format("kubectl --kubeconfig {} apply -f {} >/dev/null", kubeconfig, file).c_str()) != 0) return 1;
  auto applied = Clock::now();
  bool ok = waitUntil(claims, [&](const std::vector<kube::ObjectPtr>& all) {
    int bound = 0;
    for (auto& c : all) bound += kube::str(*c, {"status", "phase"}) == "Bound";
    return bound >= n;
  });
  auto end = Clock::now();
  fmt::print("pvcs={} applied_ms={:.0f} all_bound_ms={:.0f} ok={}\n", n, ms(applied - start), ms(end - start), ok);
  return ok ? 0 : 1;
}

int pods(const std::string& kubeconfig, int nodes, int n) {
  auto client = connect(kubeconfig);
  for (int i = 0; i < nodes; ++i) {
    json::object node{{"metadata", json::object{{"name", fmt::format("bench-node-{}", i)}}},
                      {"status", json::object{{"allocatable", json::object{{"cpu", "64"}, {"memory", "256Gi"}, {"pods", "500"}}}}}};
    (void)client->create(res::kNodes, "", node);
  }
  kube::Informer podInf(*client, res::kPods, {.ns = "default"});
  podInf.start();
  podInf.waitForSync(std::chrono::seconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the scheduler's caches see the nodes
  auto start = Clock::now();
  parallel(n, 8, [&](int i) {
    json::object pod{{"metadata", json::object{{"name", fmt::format("bench-pod-{}", i)}}},
                     {"spec", json::object{{"containers", json::array{json::object{
                                                              {"name", "c"}, {"image", "x"},
                                                              {"resources", json::object{{"requests", json::object{{"cpu", "10m"}}}}}}}}}}};
    (void)client->create(res::kPods, "default", pod);
  });
  auto created = Clock::now();
  bool ok = waitUntil(podInf, [&](const std::vector<kube::ObjectPtr>& all) {
    int bound = 0;
    for (auto& p : all) bound += !kube::str(*p, {"spec", "nodeName"}).empty();
    return bound >= n;
  });
  auto end = Clock::now();
  std::map<std::string, int> perNode;
  for (auto& p : podInf.list()) perNode[std::string(kube::str(*p, {"spec", "nodeName"}))]++;
  int lo = n, hi = 0;
  for (auto& [k, v] : perNode) lo = std::min(lo, v), hi = std::max(hi, v);
  fmt::print("pods={} nodes={} created_ms={:.0f} all_bound_ms={:.0f} bound_after_created_ms={:.0f} per_node_min={} max={} ok={}\n", n,
             nodes, ms(created - start), ms(end - start), ms(end - created), lo, hi, ok);
  return ok ? 0 : 1;
}

int slices(const std::string& kubeconfig, int rounds) {
  auto client = connect(kubeconfig);
  (void)client->create(res::kServices, "default",
                       json::object{{"metadata", json::object{{"name", "bench-web"}}},
                                    {"spec", json::object{{"selector", json::object{{"app", "bench-web"}}},
                                                          {"ports", json::array{json::object{{"port", 80}}}}}}});
  constexpr int kPods = 100;
  parallel(kPods, 8, [&](int i) {
    auto created = client->create(res::kPods, "default",
                                  json::object{{"metadata", json::object{{"name", fmt::format("bench-web-{}", i)},
                                                                         {"labels", json::object{{"app", "bench-web"}}}}},
                                               {"spec", json::object{{"nodeName", "bench-node-0"},
                                                                     {"containers", json::array{json::object{{"name", "c"}, {"image", "x"}}}}}}});
    if (!created) return;
    std::string ip = fmt::format("10.250.{}.{}", i / 250, i % 250 + 1);
    kube::ensureObject(*created, {"status"})["podIP"] = ip;
    kube::ensureObject(*created, {"status"})["podIPs"] = json::array{json::object{{"ip", ip}}};
    kube::ensureObject(*created, {"status"})["conditions"] = json::array{json::object{{"type", "Ready"}, {"status", "True"}}};
    (void)client->update(res::kPods, *created, "status");
  });
  kube::Informer sliceInf(*client, res::kEndpointSlices, {.ns = "default", .labelSelector = "kubernetes.io/service-name=bench-web"});
  std::mutex mu;
  std::condition_variable cv;
  auto readyOf = [&](const std::string& ip) -> int {  // 1 ready, 0 not, -1 absent
    for (auto& s : sliceInf.list()) {
      if (const json::array* eps = kube::array(*s, {"endpoints"})) {
        for (auto& e : *eps) {
          const json::array* addrs = kube::array(e.as_object(), {"addresses"});
          if (addrs && !addrs->empty() && (*addrs)[0].as_string() == ip) return kube::boolean(e.as_object(), {"conditions", "ready"});
        }
      }
    }
    return -1;
  };
  sliceInf.addHandler({.onAdd = [&](const kube::ObjectPtr&) { cv.notify_all(); },
                       .onUpdate = [&](const kube::ObjectPtr&, const kube::ObjectPtr&) { cv.notify_all(); },
                       .onDelete = [&](const kube::ObjectPtr&) { cv.notify_all(); }});
  sliceInf.start();
  sliceInf.waitForSync(std::chrono::seconds(10));
  const std::string ip = "10.250.0.1";
  {
    std::unique_lock g(mu);
    cv.wait_for(g, std::chrono::seconds(30), [&] { return readyOf(ip) == 1; });
  }
  std::vector<double> lat;
  for (int r = 0; r < rounds; ++r) {
    bool ready = r % 2 == 1;
    auto pod = client->get(res::kPods, "default", "bench-web-0");
    if (!pod) return 1;
    kube::ensureObject(*pod, {"status"})["conditions"] =
        json::array{json::object{{"type", "Ready"}, {"status", ready ? "True" : "False"}}};
    auto t0 = Clock::now();
    if (!client->update(res::kPods, *pod, "status")) return 1;
    std::unique_lock g(mu);
    if (!cv.wait_for(g, std::chrono::seconds(10), [&] { return readyOf(ip) == (ready ? 1 : 0); })) return 1;
    lat.push_back(ms(Clock::now() - t0));
  }
  std::sort(lat.begin(), lat.end());
  fmt::print("slice_updates={} p50_ms={:.2f} p99_ms={:.2f} max_ms={:.2f}\n", lat.size(), lat[lat.size() / 2],
             lat[std::min(lat.size() - 1, lat.size() * 99 / 100)], lat.back());
  return 0;
}

json::object deployment(const std::string& name, int replicas, const std::string& image) {
  json::object labels{{"app", name}};
  json::object container{{"name", "c"}, {"image", image}};
  json::object tmpl{{"metadata", json::object{{"labels", labels}}},
                    {"spec", json::object{{"containers", json::array{container}}}}};
  json::object spec{{"replicas", replicas}, {"selector", json::object{{"matchLabels", labels}}}, {"template", tmpl}};
  return json::object{{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"metadata", json::object{{"name", name}}},
                      {"spec", spec}};
}

// A Deployment of n replicas: from its create to n pods existing.
int deploy(const std::string& kubeconfig, int n) {
  auto client = connect(kubeconfig);
  kube::Informer podInf(*client, res::kPods, {.ns = "default", .labelSelector = "app=bench-deploy"});
  podInf.start();
  podInf.waitForSync(std::chrono::seconds(10));
  auto start = Clock::now();
  auto made = client->create(res::kDeployments, "default", deployment("bench-deploy", n, "x"));
  if (!made) {
    fmt::print("{}\n", made.error().message());
    return 1;
  }
  bool ok = waitUntil(podInf, [&](const std::vector<kube::ObjectPtr>& all) { return static_cast<int>(all.size()) >= n; });
  auto end = Clock::now();
  fmt::print("deployment_replicas={} all_pods_created_ms={:.0f} pods={} ok={}\n", n, ms(end - start), podInf.size(), ok);
  return ok ? 0 : 1;
}

// A rollout of n replicas whose pods the kubelet stand-in makes ready at
// once: from the template change to the Deployment complete.
int rollout(const std::string& kubeconfig, int n) {
  auto client = connect(kubeconfig);
  testing::KubeletStandIn kubelet(*client, 8);
  kubelet.waitForSync(std::chrono::seconds(10));
  kube::Informer deps(*client, res::kDeployments, {.ns = "default"});
  deps.start();
  deps.waitForSync(std::chrono::seconds(10));
  auto complete = [&](const std::string& image) {
    return [&, image](const std::vector<kube::ObjectPtr>& all) {
      for (auto& d : all) {
        if (kube::objectName(*d) != "bench-roll") continue;
        const json::value* c = kube::field(*d, {"spec", "template", "spec", "containers"});
        bool current = c && json::serialize(*c).find(image) != std::string::npos;
        return current && kube::integer(*d, {"status", "observedGeneration"}) >= kube::integer(*d, {"metadata", "generation"}) &&
               kube::integer(*d, {"status", "updatedReplicas"}) == n && kube::integer(*d, {"status", "replicas"}) == n &&
               kube::integer(*d, {"status", "availableReplicas"}) == n;
      }
      return false;
    };
  };
  auto made = client->create(res::kDeployments, "default", deployment("bench-roll", n, "img:v1"));
  if (!made || !waitUntil(deps, complete("img:v1"))) {
    fmt::print("first rollout did not complete\n");
    return 1;
  }
  auto start = Clock::now();
  auto patched = client->patch(res::kDeployments, "default", "bench-roll", kube::PatchType::kStrategic,
                               R"({"spec":{"template":{"spec":{"containers":[{"name":"c","image":"img:v2"}]}}}})");
  if (!patched) {
    fmt::print("{}\n", patched.error().message());
    return 1;
  }
  bool ok = waitUntil(deps, complete("img:v2"));
  auto end = Clock::now();
  fmt::print("rollout_replicas={} rollout_ms={:.0f} ok={}\n", n, ms(end - start), ok);
  return ok ? 0 : 1;
}

// n pods bound to the benchmark's nodes (so the informers hold them).
int podObjects(const std::string& kubeconfig, int nodes, int n) {
  auto client = connect(kubeconfig);
  parallel(n, 8, [&](int i) {
    json::object pod{{"metadata", json::object{{"name", fmt::format("bench-cached-{}", i)}, {"labels", json::object{{"app", "cached"}}}}},
                     {"spec", json::object{{"nodeName", fmt::format("bench-node-{}", i % nodes)},
                                           {"containers", json::array{json::object{{"name", "c"}, {"image", "x"}}}}}}};
    (void)client->create(res::kPods, "default", pod);
  });
  fmt::print("pods={}\n", n);
  return 0;
}

int objects(const std::string& kubeconfig, int n) {
  auto client = connect(kubeconfig);
  parallel(n, 8, [&](int i) {
    (void)client->create(res::kConfigMaps, "default",
                         json::object{{"metadata", json::object{{"name", fmt::format("bench-cm-{}", i)}}},
                                      {"data", json::object{{"k", std::string(200, 'x')}}}});
  });
  fmt::print("configmaps={}\n", n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: trellis-bench-controllers pvcs|pods|slices|objects|deploy|rollout|podobjects KUBECONFIG ...\n");
    return 2;
  }
  std::string mode = argv[1], kc = argv[2];
  if (mode == "pvcs" && argc == 5) return pvcs(kc, argv[3], std::atoi(argv[4]));
  if (mode == "pods" && argc == 5) return pods(kc, std::atoi(argv[3]), std::atoi(argv[4]));
  if (mode == "slices" && argc == 4) return slices(kc, std::atoi(argv[3]));
  if (mode == "objects" && argc == 4) return objects(kc, std::atoi(argv[3]));
  if (mode == "deploy" && argc == 4) return deploy(kc, std::atoi(argv[3]));
  if (mode == "rollout" && argc == 4) return rollout(kc, std::atoi(argv[3]));
  if (mode == "podobjects" && argc == 5) return podObjects(kc, std::atoi(argv[3]), std::atoi(argv[4]));
  fmt::print(stderr, "bad arguments\n");
  return 2;
}
