// trellis-kubectl-lite: a small debugging client built on common/kube, so the
// library is exercised by a real binary (and handy where kubectl is not).
//
//   trellis-kubectl-lite [--kubeconfig F] [--context C] get RESOURCE [NAME] [-n NS]
//   trellis-kubectl-lite watch RESOURCE [-n NS]        (an informer: prints ADDED/MODIFIED/DELETED)
//   trellis-kubectl-lite lead LEASE --identity ID [-n NS]  (leader election; prints when it leads)
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <iostream>
#include <thread>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/flags.h"
#include "common/base/signals.h"
#include "common/kube/client.h"
#include "common/kube/config.h"
#include "common/kube/informer.h"
#include "common/kube/leader.h"

using namespace trellis;

namespace {

const kube::Resource* findResource(std::string_view name) {
  using namespace kube::resources;
  static const kube::Resource* all[] = {&kNamespaces, &kNodes, &kPods, &kServices, &kEndpoints, &kConfigMaps,
                                        &kSecrets, &kEvents, &kPersistentVolumes, &kPersistentVolumeClaims,
                                        &kEndpointSlices, &kStorageClasses, &kVolumeAttachments, &kCSINodes,
                                        &kIngresses, &kIngressClasses, &kLeases};
  static const std::pair<std::string_view, const kube::Resource*> shortNames[] = {
      {"ns", &kNamespaces}, {"no", &kNodes},  {"po", &kPods},   {"svc", &kServices}, {"ep", &kEndpoints},
      {"cm", &kConfigMaps}, {"ev", &kEvents}, {"pv", &kPersistentVolumes}, {"pvc", &kPersistentVolumeClaims},
      {"sc", &kStorageClasses}, {"ing", &kIngresses}};
  for (const auto& [s, r] : shortNames) {
    if (name == s) return r;
  }
  for (const kube::Resource* r : all) {
    std::string singular = r->kind;
    for (char& c : singular) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == r->plural || name == singular) return r;
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-kubectl-lite: get, watch and lead, on common/kube"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string kubeconfig, context, ns;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)");
  app.add_option("--context", context, "kubeconfig context (default: current-context)");
  app.add_option("-n,--namespace", ns, "namespace (default: the context's; all for watch)");
  app.require_subcommand(1);
  app.fallthrough();  // -n and --kubeconfig also after the subcommand
  std::string resource, name, identity;
  auto* get = app.add_subcommand("get", "print one object or a list as JSON lines");
  get->add_option("resource", resource, "resource (plural or singular)")->required();
  get->add_option("name", name, "object name");
  auto* watch = app.add_subcommand("watch", "print changes as an informer sees them");
  watch->add_option("resource", resource, "resource")->required();
  auto* lead = app.add_subcommand("lead", "campaign for a Lease; print while leading");
  lead->add_option("lease", name, "Lease name")->required();
  lead->add_option("--identity", identity, "this candidate's identity")->required();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  // Before any thread starts, so that every thread leaves SIGINT/SIGTERM to it.
  std::atomic<bool> stop{false};
  base::SignalWatcher signals([&] { stop = true; });

  auto cfg = kubeconfig.empty() ? kube::loadDefaultConfig(context) : kube::loadKubeconfig({kubeconfig}, context);
  if (!cfg) {
    fmt::print(stderr, "error: {}\n", cfg.error().message());
    return 1;
  }
  auto client = kube::Client::create(*cfg);
  if (!client) {
    fmt::print(stderr, "error: {}\n", client.error().message());
    return 1;
  }
  kube::Client& c = **client;

  if (*get) {
    const kube::Resource* r = findResource(resource);
    if (!r) {
      fmt::print(stderr, "error: unknown resource {:?}\n", resource);
      return 1;
    }
    std::string where = r->namespaced ? (ns.empty() ? cfg->ns : ns) : "";
    if (!name.empty()) {
      auto obj = c.get(*r, where, name);
      if (!obj) {
        fmt::print(stderr, "error: {}\n", obj.error().message());
        return 1;
      }
      fmt::print("{}\n", boost::json::serialize(*obj));
      return 0;
    }
    auto list = c.listAll(*r, where, {});
    if (!list) {
      fmt::print(stderr, "error: {}\n", list.error().message());
      return 1;
    }
    for (const auto& o : list->items) fmt::print("{}\n", boost::json::serialize(o));
    return 0;
  }

  if (*watch) {
    const kube::Resource* r = findResource(resource);
    if (!r) {
      fmt::print(stderr, "error: unknown resource {:?}\n", resource);
      return 1;
    }
    kube::Informer inf(c, *r, {.ns = r->namespaced ? ns : ""});
    auto line = [](std::string_view type, const kube::ObjectPtr& o) {
      fmt::print("{} {} {}\n", type, kube::objectKey(*o), kube::objectResourceVersion(*o));
      std::fflush(stdout);
    };
    inf.addHandler({.onAdd = [&](const kube::ObjectPtr& o) { line("ADDED", o); },
                    .onUpdate = [&](const kube::ObjectPtr&, const kube::ObjectPtr& n) { line("MODIFIED", n); },
                    .onDelete = [&](const kube::ObjectPtr& o) { line("DELETED", o); }});
    inf.start();
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return 0;
  }

  kube::LeaderElector le(c, {.ns = ns.empty() ? cfg->ns : ns, .name = name, .identity = identity});
  std::thread stopper([&] {
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    le.stop();
  });
  le.run([&](std::stop_token st) {
    fmt::print("leading as {}\n", identity);
    std::fflush(stdout);
    while (!st.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    fmt::print("stopped leading\n");
    std::fflush(stdout);
  });
  stop = true;
  stopper.join();
  return 0;
}
