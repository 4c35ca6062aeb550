// scheduler: binds pending pods to nodes, filtering as kube-scheduler's
// default plugins do (in their order: unschedulable nodes, taints and
// tolerations, node selector and affinity, host ports, resource requests
// against allocatable, volume topology and binding, inter-pod affinity and
// anti-affinity) and choosing the least allocated feasible node.
//
// Volumes: a bound claim's PV node affinity must hold; an unbound
// WaitForFirstConsumer claim gets volume.kubernetes.io/selected-node (the
// provisioner then makes a volume there) and the pod is bound once every
// claim is; an unbound Immediate claim keeps the pod pending. A pod nothing
// fits gets PodScheduled=False and a FailedScheduling event worded as
// kube-scheduler words them ("0/3 nodes are available: ...").
//
// One worker decides, so no two decisions share capacity; a decided pod is
// "assumed" on its node at once and bound by one of kBinders threads,
// until the cache shows it bound (or the binding fails and it is retried).
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "common/kube/quantity.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"
#include "controllers/workloads.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kCSIDrivers;
using kube::resources::kCSIStorageCapacities;
using kube::resources::kNodes;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;
using kube::resources::kPods;
using kube::resources::kStorageClasses;

// Bindings in flight at once: the API server commits concurrent writes
// together, so more of them cost little more than one.
constexpr int kBinders = 16;

const base::Logger& log() {
  static base::Logger l("scheduler");
  return l;
}

struct Requests {
  long double cpu = 0, memory = 0, storage = 0;  // cores, bytes, bytes
  std::vector<std::string> hostPorts;            // "TCP/0.0.0.0/80"
};

long double quantity(const json::object* list, std::string_view name) {
  if (!list) return 0;
  const json::value* v = list->if_contains(name);
  if (!v || !v->is_string()) return 0;
  auto q = kube::parseQuantity(v->get_string());
  return q ? *q : 0;
}

// Effective requests: the sum over containers, or the largest init
// container when that is more, plus the pod overhead.
Requests requestsOf(const json::object& pod) {
  Requests r;
  auto add = [](const json::array* containers, Requests& into, bool max) {
    if (!containers) return;
    for (const json::value& c : *containers) {
      if (!c.is_object()) continue;
      const json::object* req = kube::child(c.get_object(), {"resources", "requests"});
      long double cpu = quantity(req, "cpu"), mem = quantity(req, "memory"), st = quantity(req, "ephemeral-storage");
      if (max) {
        into.cpu = std::max(into.cpu, cpu), into.memory = std::max(into.memory, mem), into.storage = std::max(into.storage, st);
      } else {
        into.cpu += cpu, into.memory += mem, into.storage += st;
      }
    }
  };
  add(kube::array(pod, {"spec", "containers"}), r, false);
  Requests init;
  add(kube::array(pod, {"spec", "initContainers"}), init, true);
  r.cpu = std::max(r.cpu, init.cpu), r.memory = std::max(r.memory, init.memory), r.storage = std::max(r.storage, init.storage);
  const json::object* overhead = kube::child(pod, {"spec", "overhead"});
  r.cpu += quantity(overhead, "cpu"), r.memory += quantity(overhead, "memory");
  if (const json::array* containers = kube::array(pod, {"spec", "containers"})) {
    for (const json::value& c : *containers) {
      const json::array* ports = c.is_object() ? kube::array(c.get_object(), {"ports"}) : nullptr;
      if (!ports) continue;
      for (const json::value& p : *ports) {
        if (!p.is_object() || kube::integer(p.get_object(), {"hostPort"}) == 0) continue;
        std::string_view proto = kube::str(p.get_object(), {"protocol"}), ip = kube::str(p.get_object(), {"hostIP"});
        r.hostPorts.push_back(fmt::format("{}/{}/{}", proto.empty() ? "TCP" : proto, ip.empty() ? "0.0.0.0" : ip,
                                          kube::integer(p.get_object(), {"hostPort"})));
      }
    }
  }
  return r;
}

bool portsConflict(const std::string& a, const std::string& b) {
  // proto/ip/port: the same proto and port, and the same ip or either wildcard.
  auto split = [](const std::string& s) {
    size_t i = s.find('/'), j = s.rfind('/');
    return std::tuple(s.substr(0, i), s.substr(i + 1, j - i - 1), s.substr(j + 1));
  };
  auto [pa, ia, na] = split(a);
  auto [pb, ib, nb] = split(b);
  return pa == pb && na == nb && (ia == ib || ia == "0.0.0.0" || ib == "0.0.0.0");
}


class Scheduler : public Reconciler {
 public:
  explicit Scheduler(Context& ctx)
      : Reconciler(ctx, "scheduler", [this](const std::string& key) { return reconcile(key); }, 1),
        events_(ctx.recorders.get("default-scheduler")),
        pods_(ctx.informers.get(kPods)),
        nodes_(ctx.informers.get(kNodes)),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pvs_(ctx.informers.get(kPersistentVolumes)),
        classes_(ctx.informers.get(kStorageClasses)),
        drivers_(ctx.informers.get(kCSIDrivers)),
        capacities_(ctx.informers.get(kCSIStorageCapacities)) {
    indexPodsByNode(*pods_);
    indexPodsByClaim(*pods_);
    pods_->addHandler({.onAdd = [this](const kube::ObjectPtr& p) { podChanged(*p, false); },
                       .onUpdate = [this](const kube::ObjectPtr&, const kube::ObjectPtr& p) { podChanged(*p, false); },
                       .onDelete = [this](const kube::ObjectPtr& p) { podChanged(*p, true); }});
    auto retryPending = [this](const kube::ObjectPtr&) { enqueuePending(); };
    nodes_->addHandler({.onAdd = retryPending,
                        .onUpdate = [this](const kube::ObjectPtr& o, const kube::ObjectPtr& n) {
                          if (o != n) enqueuePending();
                        },
                        .onDelete = retryPending});
    capacities_->addHandler({.onAdd = retryPending,
                             .onUpdate = [this](const kube::ObjectPtr& o, const kube::ObjectPtr& n) {
                               if (o != n) enqueuePending();
                             },
                             .onDelete = retryPending});
    auto claimChanged = [this](const kube::ObjectPtr& c) {
      for (const kube::ObjectPtr& p : pods_->byIndex(kPodsByClaim, kube::objectKey(*c))) {
        if (kube::str(*p, {"spec", "nodeName"}).empty()) controller_.enqueue(kube::objectKey(*p));
      }
    };
    pvcs_->addHandler({.onAdd = claimChanged,
                       .onUpdate = [claimChanged](const kube::ObjectPtr&, const kube::ObjectPtr& n) { claimChanged(n); },
                       .onDelete = claimChanged});
  }

 private:
  static bool ours(const json::object& pod) {
    std::string_view s = kube::str(pod, {"spec", "schedulerName"});
    return s.empty() || s == "default-scheduler";
  }

  void podChanged(const json::object& pod, bool deleted) {
    if (deleted || !kube::str(pod, {"spec", "nodeName"}).empty()) {
      std::lock_guard g(assumedMu_);
      assumed_.erase(kube::objectKey(pod));  // the cache has caught up with the binding
    }
    if (kube::str(pod, {"spec", "nodeName"}).empty()) {
      if (!deleted && ours(pod)) controller_.enqueue(kube::objectKey(pod));
    } else if (deleted || podTerminal(pod)) {
      enqueuePending();  // room was freed
    }
  }

  void enqueuePending() {
    for (const kube::ObjectPtr& p : pods_->byIndex(kPodsByNode, "")) {
      if (ours(*p)) controller_.enqueue(kube::objectKey(*p));
    }
  }

  const Requests& requests(const kube::ObjectPtr& pod) {
    auto& slot = reqCache_[kube::objectKey(*pod)];
    if (slot.first != pod) slot = {pod, requestsOf(*pod)};
    return slot.second;
  }

  // What each node runs — the cache's pods and those assumed there — and
  // which of them carry required anti-affinity, taken once per decision.
  void takeSnapshot(const std::vector<kube::ObjectPtr>& nodes) {
    placed_.clear();
    withAntiAffinity_.clear();
    std::set<std::string> seen;
    for (const kube::ObjectPtr& n : nodes) {
      auto& list = placed_[std::string(kube::objectName(*n))];
      for (kube::ObjectPtr& p : pods_->byIndex(kPodsByNode, std::string(kube::objectName(*n)))) {
        if (podTerminal(*p)) continue;
        seen.insert(kube::objectKey(*p));
        list.push_back(std::move(p));
      }
    }
    {
      std::lock_guard g(assumedMu_);
      for (const auto& [key, a] : assumed_) {
        if (!seen.count(key)) placed_[a.first].push_back(a.second);
      }
    }
    for (const kube::ObjectPtr& n : nodes) {
      for (const kube::ObjectPtr& p : placed_[std::string(kube::objectName(*n))]) {
        if (!requiredTerms(*p, "podAntiAffinity").empty()) withAntiAffinity_.emplace_back(n, p);
      }
    }
  }
  const std::vector<kube::ObjectPtr>& podsOn(const std::string& node) { return placed_[node]; }

  struct VolumeConstraints {
    std::vector<const json::array*> nodeTerms;      // bound volumes' node affinity
    std::vector<kube::ObjectPtr> delayed;           // unbound WaitForFirstConsumer claims
    std::string selectedNode;                       // chosen earlier for one of them
    std::vector<const json::array*> allowed;        // their classes' allowedTopologies
    std::vector<std::pair<kube::ObjectPtr, long double>> needCapacity;  // (class, bytes) where capacity is tracked
    std::string podLevelFailure;
  };

  VolumeConstraints volumes(const json::object& pod) {
    VolumeConstraints v;
    for (const std::string& key : claimKeysOf(pod)) {
      std::string name = key.substr(key.find('/') + 1);
      kube::ObjectPtr pvc = pvcs_->get(key);
      if (!pvc) {
        v.podLevelFailure = fmt::format("persistentvolumeclaim \"{}\" not found", name);
        return v;
      }
      if (kube::beingDeleted(*pvc)) {
        v.podLevelFailure = fmt::format("persistentvolumeclaim \"{}\" is being deleted", name);
        return v;
      }
      std::string_view volume = kube::str(*pvc, {"spec", "volumeName"});
      if (!volume.empty() && !kube::annotation(*pvc, kAnnBindCompleted).empty()) {
        kube::ObjectPtr pv = pvs_->get(std::string(volume));
        if (!pv) {
          v.podLevelFailure = fmt::format("persistentvolume \"{}\" not found", volume);
          return v;
        }
        if (const json::array* terms = kube::array(*pv, {"spec", "nodeAffinity", "required", "nodeSelectorTerms"})) {
          pinned_.push_back(pv);
          v.nodeTerms.push_back(terms);
        }
        continue;
      }
      kube::ObjectPtr sc = classes_->get(std::string(claimClass(*pvc)));
      if (!sc || !waitsForFirstConsumer(*sc)) {
        v.podLevelFailure = "pod has unbound immediate PersistentVolumeClaims";
        return v;
      }
      v.delayed.push_back(pvc);
      pinned_.push_back(sc);
      kube::ObjectPtr driver = drivers_->get(std::string(kube::str(*sc, {"provisioner"})));
      if (driver && kube::boolean(*driver, {"spec", "storageCapacity"}) && kube::annotation(*pvc, kAnnSelectedNode).empty()) {
        v.needCapacity.emplace_back(sc, claimRequest(*pvc).value_or(0));
      }
      if (const json::array* at = kube::array(*sc, {"allowedTopologies"})) v.allowed.push_back(at);
      if (auto sel = kube::annotation(*pvc, kAnnSelectedNode); !sel.empty()) v.selectedNode = sel;
    }
    return v;
  }

  static bool topologyAllows(const json::array& terms, const json::object& node) {
    auto l = kube::labels(node);
    for (const json::value& t : terms) {
      const json::array* exprs = t.is_object() ? kube::array(t.get_object(), {"matchLabelExpressions"}) : nullptr;
      if (!exprs) continue;
      bool ok = true;
      for (const json::value& e : *exprs) {
        if (!e.is_object()) continue;
        auto it = l.find(std::string(kube::str(e.get_object(), {"key"})));
        bool in = false;
        if (const json::array* vals = kube::array(e.get_object(), {"values"}); vals && it != l.end()) {
          for (const json::value& val : *vals) in = in || (val.is_string() && val.get_string() == it->second);
        }
        ok = ok && in;
      }
      if (ok) return true;
    }
    return false;
  }

  // Required pod (anti-)affinity terms of `pod` against pods on nodes in the
  // same topology domain as `node`.
  bool affinityTermMatches(const json::object& term, const json::object& owner, const json::object& node,
                           const std::vector<kube::ObjectPtr>& nodes, const json::object* candidate) {
    std::string topologyKey(kube::str(term, {"topologyKey"}));
    auto domain = kube::labels(node);
    auto it = domain.find(topologyKey);
    if (it == domain.end()) return false;
    auto sel = kube::LabelSelector::fromJson(kube::field(term, {"labelSelector"}));
    if (!sel) return false;
    std::set<std::string> namespaces;
    if (const json::array* nss = kube::array(term, {"namespaces"})) {
      for (const json::value& n : *nss) {
        if (n.is_string()) namespaces.emplace(n.get_string());
      }
    }
    if (namespaces.empty()) namespaces.emplace(kube::objectNamespace(owner));
    auto matchesPod = [&](const json::object& p) {
      return namespaces.count(std::string(kube::objectNamespace(p))) && sel->matches(kube::labels(p));
    };
    if (candidate) return matchesPod(*candidate);
    for (const kube::ObjectPtr& n : nodes) {
      auto nl = kube::labels(*n);
      auto nit = nl.find(topologyKey);
      if (nit == nl.end() || nit->second != it->second) continue;
      for (const kube::ObjectPtr& p : podsOn(std::string(kube::objectName(*n)))) {
        if (matchesPod(*p)) return true;
      }
    }
    return false;
  }

  static std::vector<const json::object*> requiredTerms(const json::object& pod, std::string_view kind) {
    std::vector<const json::object*> out;
    if (const json::array* terms = kube::array(pod, {"spec", "affinity", kind, "requiredDuringSchedulingIgnoredDuringExecution"})) {
      for (const json::value& t : *terms) {
        if (t.is_object()) out.push_back(&t.get_object());
      }
    }
    return out;
  }

  // Why `node` cannot run `pod` (empty when it can), as kube-scheduler words it.
  std::vector<std::string> filter(const json::object& pod, const Requests& want, const json::object& node,
                                  const VolumeConstraints& vols, const std::vector<kube::ObjectPtr>& nodes,
                                  const std::vector<kube::ObjectPtr>& podsHere) {
    std::string name(kube::objectName(node));
    if (kube::boolean(node, {"spec", "unschedulable"}) &&
        !tolerates(pod, json::object{{"key", "node.kubernetes.io/unschedulable"}, {"effect", "NoSchedule"}})) {
      return {"node(s) were unschedulable"};
    }
    if (const json::array* taints = kube::array(node, {"spec", "taints"})) {
      for (const json::value& t : *taints) {
        if (!t.is_object()) continue;
        std::string_view effect = kube::str(t.get_object(), {"effect"});
        if (effect != "NoSchedule" && effect != "NoExecute") continue;
        if (!tolerates(pod, t.get_object())) {
          std::string_view v = kube::str(t.get_object(), {"value"});
          return {fmt::format("node(s) had untolerated taint {{{}: {}}}", kube::str(t.get_object(), {"key"}), v)};
        }
      }
    }
    auto nodeLabels = kube::labels(node);
    bool selectorOk = true;
    if (const json::object* ns = kube::child(pod, {"spec", "nodeSelector"})) {
      for (const auto& [k, v] : *ns) {
        auto it = nodeLabels.find(std::string(k));
        if (!v.is_string() || it == nodeLabels.end() || it->second != v.get_string()) selectorOk = false;
      }
    }
    if (const json::array* terms = kube::array(
            pod, {"spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"})) {
      if (!kube::nodeSelectorTermsMatch(*terms, node)) selectorOk = false;
    }
    if (!selectorOk) return {"node(s) didn't match Pod's node affinity/selector"};
    for (const kube::ObjectPtr& p : podsHere) {
      for (const std::string& used : requests(p).hostPorts) {
        for (const std::string& mine : want.hostPorts) {
          if (portsConflict(used, mine)) return {"node(s) didn't have free ports for the requested pod ports"};
        }
      }
    }
    const json::object* alloc = kube::child(node, {"status", "allocatable"});
    if (!alloc) alloc = kube::child(node, {"status", "capacity"});
    Requests used;
    for (const kube::ObjectPtr& p : podsHere) {
      const Requests& r = requests(p);
      used.cpu += r.cpu, used.memory += r.memory, used.storage += r.storage;
    }
    std::vector<std::string> fit;
    long double maxPods = quantity(alloc, "pods");
    if (alloc && alloc->contains("pods") && podsHere.size() + 1 > maxPods) fit.push_back("Too many pods");
    if (want.cpu > 0 && used.cpu + want.cpu > quantity(alloc, "cpu")) fit.push_back("Insufficient cpu");
    if (want.memory > 0 && used.memory + want.memory > quantity(alloc, "memory")) fit.push_back("Insufficient memory");
    if (want.storage > 0 && used.storage + want.storage > quantity(alloc, "ephemeral-storage")) {
      fit.push_back("Insufficient ephemeral-storage");
    }
    if (!fit.empty()) return fit;
    for (const json::array* terms : vols.nodeTerms) {
      if (!kube::nodeSelectorTermsMatch(*terms, node)) return {"node(s) had volume node affinity conflict"};
    }
    if (!vols.selectedNode.empty() && vols.selectedNode != name) {
      return {"node(s) didn't find available persistent volumes to bind"};
    }
    for (const json::array* allowed : vols.allowed) {
      if (!topologyAllows(*allowed, node)) return {"node(s) didn't find available persistent volumes to bind"};
    }
    for (const auto& [sc, bytes] : vols.needCapacity) {
      if (!hasCapacity(*sc, bytes, node)) return {"node(s) did not have enough free storage"};
    }
    for (const json::object* term : requiredTerms(pod, "podAffinity")) {
      if (!affinityTermMatches(*term, pod, node, nodes, nullptr)) return {"node(s) didn't match pod affinity rules"};
    }
    for (const json::object* term : requiredTerms(pod, "podAntiAffinity")) {
      if (affinityTermMatches(*term, pod, node, nodes, nullptr)) return {"node(s) didn't match pod anti-affinity rules"};
    }
    // Pods already placed whose anti-affinity this pod would break.
    for (const auto& [n, other] : withAntiAffinity_) {
      for (const json::object* term : requiredTerms(*other, "podAntiAffinity")) {
        auto here = kube::labels(node);
        auto there = kube::labels(*n);
        std::string key(kube::str(*term, {"topologyKey"}));
        if (!here.count(key) || !there.count(key) || here[key] != there[key]) continue;
        if (affinityTermMatches(*term, *other, *n, nodes, &pod)) return {"node(s) didn't satisfy existing pods anti-affinity rules"};
      }
    }
    return {};
  }

  // Whether a CSIStorageCapacity of the class, for a segment the node is in,
  // can hold `bytes` (maximumVolumeSize when given, else capacity).
  bool hasCapacity(const json::object& sc, long double bytes, const json::object& node) {
    auto nodeLabels = kube::labels(node);
    for (const kube::ObjectPtr& c : capacities_->list()) {
      if (kube::str(*c, {"storageClassName"}) != kube::objectName(sc)) continue;
      auto sel = kube::LabelSelector::fromJson(kube::field(*c, {"nodeTopology"}));
      if (!sel || !sel->matches(nodeLabels)) continue;
      std::string_view q = kube::str(*c, {"maximumVolumeSize"});
      if (q.empty()) q = kube::str(*c, {"capacity"});
      auto have = kube::parseQuantity(q);
      if (have && *have >= bytes) return true;
    }
    return false;
  }

  // Least allocated: the mean free fraction of cpu and memory after placing.
  double score(const json::object& node, const Requests& want, const std::vector<kube::ObjectPtr>& podsHere) {
    const json::object* alloc = kube::child(node, {"status", "allocatable"});
    if (!alloc) alloc = kube::child(node, {"status", "capacity"});
    long double cpu = quantity(alloc, "cpu"), mem = quantity(alloc, "memory");
    long double usedCpu = want.cpu, usedMem = want.memory;
    for (const kube::ObjectPtr& p : podsHere) {
      // Pods without requests count as kube-scheduler's defaults (0.1 core, 200 MiB).
      const Requests& r = requests(p);
      usedCpu += r.cpu > 0 ? r.cpu : 0.1L;
      usedMem += r.memory > 0 ? r.memory : 200.0L * 1024 * 1024;
    }
    double c = cpu > 0 ? static_cast<double>((cpu - usedCpu) / cpu) : 0;
    double m = mem > 0 ? static_cast<double>((mem - usedMem) / mem) : 0;
    return (c + m) / 2;
  }

  base::Status reconcile(const std::string& key) {
    pinned_.clear();
    kube::ObjectPtr pod = pods_->get(key);
    if (!pod) {
      reqCache_.erase(key);
      return {};
    }
    if (!kube::str(*pod, {"spec", "nodeName"}).empty() || kube::beingDeleted(*pod) || podTerminal(*pod) || !ours(*pod)) {
      return {};
    }
    {
      std::lock_guard g(assumedMu_);
      if (assumed_.count(key)) return {};  // a binding is on its way
    }
    std::vector<kube::ObjectPtr> nodes = nodes_->list();
    std::sort(nodes.begin(), nodes.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
      return kube::objectName(*a) < kube::objectName(*b);
    });
    if (nodes.empty()) return unschedulable(*pod, "no nodes available to schedule pods");
    VolumeConstraints vols = volumes(*pod);
    if (!vols.podLevelFailure.empty()) {
      return unschedulable(*pod, fmt::format("0/{} nodes are available: {}.", nodes.size(), vols.podLevelFailure));
    }
    const Requests& want = requests(pod);
    std::map<std::string, int> reasons;
    kube::ObjectPtr best;
    double bestScore = -1e9;
    takeSnapshot(nodes);
    for (const kube::ObjectPtr& node : nodes) {
      const auto& here = podsOn(std::string(kube::objectName(*node)));
      auto why = filter(*pod, want, *node, vols, nodes, here);
      if (!why.empty()) {
        for (const std::string& w : why) reasons[w]++;
        continue;
      }
      double s = score(*node, want, here);
      if (!best || s > bestScore) best = node, bestScore = s;
    }
    if (!best) {
      std::vector<std::string> parts;
      for (const auto& [why, n] : reasons) parts.push_back(fmt::format("{} {}", n, why));
      std::sort(parts.begin(), parts.end());  // as kube-scheduler sorts them, counts included
      return unschedulable(*pod, fmt::format("0/{} nodes are available: {}. preemption: 0/{} nodes are available: {} "
                                             "Preemption is not helpful for scheduling.",
                                             nodes.size(), fmt::join(parts, ", "), nodes.size(), nodes.size()));
    }
    std::string node(kube::objectName(*best));
    // Claims that wait for this pod: provision them on the chosen node first.
    bool waiting = false;
    for (const kube::ObjectPtr& pvc : vols.delayed) {
      waiting = true;
      if (!kube::annotation(*pvc, kAnnSelectedNode).empty()) continue;
      json::object patch{{"metadata", json::object{{"annotations", json::object{{kAnnSelectedNode, node}}},
                                                   {"resourceVersion", kube::str(*pvc, {"metadata", "resourceVersion"})}}}};
      auto res = ctx_.client.patch(kPersistentVolumeClaims, kube::objectNamespace(*pvc), kube::objectName(*pvc),
                                   kube::PatchType::kMerge, json::serialize(patch));
      if (!res) return res.error();
    }
    if (waiting) return {};  // bound once the claims are (their updates requeue the pod)
    // Assumed on the node at once (the next decision counts it), bound in
    // the background: decisions never wait for the API server.
    {
      std::lock_guard g(assumedMu_);
      assumed_[key] = {node, pod};
    }
    {
      std::lock_guard g(bindMu_);
      bindQueue_.emplace_back(pod, node);
    }
    bindCv_.notify_one();
    return {};
  }

  void run(std::stop_token stop) override {
    std::vector<std::jthread> binders;
    for (int i = 0; i < kBinders; ++i) binders.emplace_back([this](std::stop_token st) { bindLoop(st); });
    Reconciler::run(stop);
    for (auto& b : binders) b.request_stop();
    bindCv_.notify_all();
  }

  void bindLoop(std::stop_token stop) {
    for (;;) {
      std::pair<kube::ObjectPtr, std::string> job;
      {
        std::unique_lock g(bindMu_);
        bindCv_.wait(g, [&] { return stop.stop_requested() || !bindQueue_.empty(); });
        if (bindQueue_.empty()) return;
        job = std::move(bindQueue_.front());
        bindQueue_.pop_front();
      }
      bind(*job.first, job.second);
    }
  }

  void bind(const json::object& pod, const std::string& node) {
    std::string ns(kube::objectNamespace(pod)), name(kube::objectName(pod)), key = kube::objectKey(pod);
    json::object binding{{"apiVersion", "v1"}, {"kind", "Binding"},
                         {"metadata", json::object{{"name", name}, {"namespace", ns}, {"uid", kube::uid(pod)}}},
                         {"target", json::object{{"apiVersion", "v1"}, {"kind", "Node"}, {"name", node}}}};
    auto res = ctx_.client.post(kPods.path(ns, name, "binding"), binding);
    if (!res) {
      {
        std::lock_guard g(assumedMu_);
        assumed_.erase(key);
      }
      if (res.error().code() == base::ErrorCode::kConflict || res.error().code() == base::ErrorCode::kNotFound) return;
      log().warn("binding failed", {{"pod", key}, {"node", node}, {"error", res.error().message()}});
      controller_.queue().addRateLimited(key);
      return;
    }
    log().debug("bound", {{"pod", key}, {"node", node}});
    events_.record(pod, "Normal", "Scheduled", fmt::format("Successfully assigned {}/{} to {}", ns, name, node));
  }

  base::Status unschedulable(const json::object& podIn, const std::string& message) {
    if (const json::array* conds = kube::array(podIn, {"status", "conditions"})) {
      for (const json::value& c : *conds) {
        if (c.is_object() && kube::str(c.get_object(), {"type"}) == "PodScheduled" &&
            kube::str(c.get_object(), {"status"}) == "False" && kube::str(c.get_object(), {"message"}) == message) {
          return {};
        }
      }
    }
    events_.record(podIn, "Warning", "FailedScheduling", message);
    json::object pod = podIn;
    json::object& st = kube::ensureObject(pod, {"status"});
    json::array conds;
    if (const json::value* c = st.if_contains("conditions"); c && c->is_array()) {
      for (const json::value& x : c->get_array()) {
        if (!(x.is_object() && kube::str(x.get_object(), {"type"}) == "PodScheduled")) conds.push_back(x);
      }
    }
    conds.push_back(json::object{{"type", "PodScheduled"}, {"status", "False"}, {"reason", "Unschedulable"},
                                 {"message", message}, {"lastProbeTime", nullptr},
                                 {"lastTransitionTime", kube::rfc3339Now()}});
    st["conditions"] = std::move(conds);
    if (!st.contains("phase")) st["phase"] = "Pending";
    auto res = ctx_.client.update(kPods, std::move(pod), "status");
    if (!res && res.error().code() != base::ErrorCode::kNotFound && res.error().code() != base::ErrorCode::kConflict) {
      return res.error();
    }
    return {};
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> pods_, nodes_, pvcs_, pvs_, classes_, drivers_, capacities_;
  std::mutex assumedMu_;
  std::map<std::string, std::pair<std::string, kube::ObjectPtr>> assumed_;        // pod -> (node, pod)
  std::mutex bindMu_;
  std::condition_variable bindCv_;
  std::deque<std::pair<kube::ObjectPtr, std::string>> bindQueue_;                // (pod, node)
  std::map<std::string, std::pair<kube::ObjectPtr, Requests>> reqCache_;          // pod -> requests of that version
  std::vector<kube::ObjectPtr> pinned_;  // keeps objects alive that VolumeConstraints points into
  std::map<std::string, std::vector<kube::ObjectPtr>> placed_;                   // node -> pods (this decision)
  std::vector<std::pair<kube::ObjectPtr, kube::ObjectPtr>> withAntiAffinity_;   // (node, pod)
};

}  // namespace

std::unique_ptr<Runnable> makeScheduler(Context& ctx) { return std::make_unique<Scheduler>(ctx); }

}  // namespace trellis::controllers
