// endpointslice and endpoints: the pods a Service selects, as
// discovery.k8s.io/v1 EndpointSlices (at most 100 endpoints each, one set
// per address family and port mapping, ready/serving/terminating
// conditions, node and zone) and as the legacy core/v1 Endpoints object.
// Services without a selector are left to whoever manages them.
#include <charconv>
#include <map>
#include <mutex>

#include <boost/json/serialize.hpp>

#include "common/base/ip.h"
#include "common/kube/object.h"
#include "controllers/indexes.h"
#include "controllers/manager.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kEndpointSlices;
using kube::resources::kEndpoints;
using kube::resources::kNodes;
using kube::resources::kPods;
using kube::resources::kServices;

constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";
constexpr const char* kManagedByLabel = "endpointslice.kubernetes.io/managed-by";
constexpr const char* kManagedBy = "endpointslice-controller.k8s.io";
constexpr size_t kMaxEndpointsPerSlice = 100;

// One pod behind a service, in one address family.
struct Backend {
  kube::ObjectPtr pod;
  std::string ip;
  json::array ports;  // the service's ports, resolved for this pod
  bool ready = false, serving = false, terminating = false;
};

bool podReady(const json::object& pod) {
  if (const json::array* conds = kube::array(pod, {"status", "conditions"})) {
    for (const json::value& c : *conds) {
      if (c.is_object() && kube::str(c.get_object(), {"type"}) == "Ready") return kube::str(c.get_object(), {"status"}) == "True";
    }
  }
  return false;
}

std::vector<std::string> podIps(const json::object& pod) {
  std::vector<std::string> out;
  if (const json::array* ips = kube::array(pod, {"status", "podIPs"})) {
    for (const json::value& v : *ips) {
      if (v.is_object() && !kube::str(v.get_object(), {"ip"}).empty()) out.emplace_back(kube::str(v.get_object(), {"ip"}));
    }
  }
  if (out.empty() && !kube::str(pod, {"status", "podIP"}).empty()) out.emplace_back(kube::str(pod, {"status", "podIP"}));
  return out;
}

// targetPort: a number, or a container port's name (the pod must have it).
std::optional<int64_t> resolvePort(const json::object& svcPort, const json::object& pod) {
  const json::value* target = svcPort.if_contains("targetPort");
  if (!target || target->is_null()) return kube::integer(svcPort, {"port"});
  if (target->is_int64() || target->is_uint64()) return kube::integer(svcPort, {"targetPort"});
  if (!target->is_string()) return std::nullopt;
  std::string_view name = target->get_string();
  std::string_view proto = kube::str(svcPort, {"protocol"});
  if (proto.empty()) proto = "TCP";
  if (const json::array* containers = kube::array(pod, {"spec", "containers"})) {
    for (const json::value& c : *containers) {
      const json::array* ports = c.is_object() ? kube::array(c.get_object(), {"ports"}) : nullptr;
      if (!ports) continue;
      for (const json::value& p : *ports) {
        if (!p.is_object()) continue;
        std::string_view pp = kube::str(p.get_object(), {"protocol"});
        if (kube::str(p.get_object(), {"name"}) == name && (pp.empty() ? "TCP" : pp) == proto) {
          return kube::integer(p.get_object(), {"containerPort"});
        }
      }
    }
  }
  return std::nullopt;
}

// The backends of `svc` among `pods`, per family ("IPv4", "IPv6"), ordered
// by pod name; nullopt when the service has no selector.
std::optional<std::map<std::string, std::vector<Backend>>> backendsOf(const json::object& svc,
                                                                      const std::vector<kube::ObjectPtr>& pods) {
  const json::object* sel = kube::child(svc, {"spec", "selector"});
  if (!sel || sel->empty() || kube::str(svc, {"spec", "type"}) == "ExternalName") return std::nullopt;
  auto selector = kube::LabelSelector::fromMap(kube::field(svc, {"spec", "selector"}));
  bool publishNotReady = kube::boolean(svc, {"spec", "publishNotReadyAddresses"});
  std::vector<std::string> families;
  if (const json::array* f = kube::array(svc, {"spec", "ipFamilies"})) {
    for (const json::value& v : *f) {
      if (v.is_string()) families.emplace_back(v.get_string());
    }
  }
  if (families.empty()) families.push_back("IPv4");
  std::map<std::string, std::vector<Backend>> out;
  for (const std::string& fam : families) out[fam];
  for (const kube::ObjectPtr& pod : pods) {
    if (podTerminal(*pod) || !selector.matches(kube::labels(*pod))) continue;
    bool terminating = kube::beingDeleted(*pod);
    bool ready = podReady(*pod);
    json::array ports;
    if (const json::array* svcPorts = kube::array(svc, {"spec", "ports"})) {
      for (const json::value& sp : *svcPorts) {
        if (!sp.is_object()) continue;
        auto port = resolvePort(sp.get_object(), *pod);
        if (!port) continue;
        std::string_view proto = kube::str(sp.get_object(), {"protocol"});
        json::object p{{"name", kube::str(sp.get_object(), {"name"})}, {"port", *port},
                       {"protocol", proto.empty() ? "TCP" : proto}};
        if (auto ap = kube::str(sp.get_object(), {"appProtocol"}); !ap.empty()) p["appProtocol"] = ap;
        ports.push_back(std::move(p));
      }
    }
    for (const std::string& ip : podIps(*pod)) {
      auto addr = base::parseIp(ip);
      if (!addr) continue;
      std::string fam = addr->v6 ? "IPv6" : "IPv4";
      auto it = out.find(fam);
      if (it == out.end()) continue;
      it->second.push_back(Backend{pod, base::formatIp(*addr), ports, publishNotReady || (ready && !terminating),
                                   publishNotReady || ready, terminating});
    }
  }
  for (auto& [fam, list] : out) {
    std::sort(list.begin(), list.end(), [](const Backend& a, const Backend& b) {
      return kube::objectName(*a.pod) < kube::objectName(*b.pod);
    });
  }
  return out;
}

json::object targetRef(const json::object& pod) {
  return json::object{{"kind", "Pod"}, {"namespace", kube::objectNamespace(pod)}, {"name", kube::objectName(pod)},
                      {"uid", kube::uid(pod)}};
}

// Pods in a namespace map to the services there that select them (before
// and after a change), so a pod whose labels change leaves the old one.
void watchPodsForServices(kube::Controller& controller, kube::Informer& pods, kube::Informer& services) {
  auto keys = [&services](const json::object& pod, std::vector<std::string>& out) {
    auto l = kube::labels(pod);
    for (const kube::ObjectPtr& svc : services.byIndex(kByNamespace, std::string(kube::objectNamespace(pod)))) {
      if (kube::LabelSelector::fromMap(kube::field(*svc, {"spec", "selector"})).matches(l)) out.push_back(kube::objectKey(*svc));
    }
  };
  pods.addHandler({.onAdd = [&controller, keys](const kube::ObjectPtr& p) {
                     std::vector<std::string> k;
                     keys(*p, k);
                     for (const std::string& s : k) controller.enqueue(s);
                   },
                   .onUpdate = [&controller, keys](const kube::ObjectPtr& o, const kube::ObjectPtr& n) {
                     std::vector<std::string> k;
                     keys(*n, k);
                     if (o != n) keys(*o, k);
                     for (const std::string& s : k) controller.enqueue(s);
                   },
                   .onDelete = [&controller, keys](const kube::ObjectPtr& p) {
                     std::vector<std::string> k;
                     keys(*p, k);
                     for (const std::string& s : k) controller.enqueue(s);
                   }});
}

bool newerOrSame(std::string_view have, std::string_view want) {
  if (have == want) return true;
  uint64_t a = 0, b = 0;
  auto pa = std::from_chars(have.data(), have.data() + have.size(), a);
  auto pb = std::from_chars(want.data(), want.data() + want.size(), b);
  return pa.ec == std::errc() && pb.ec == std::errc() && a >= b;
}

class EndpointSlices : public Reconciler {
 public:
  explicit EndpointSlices(Context& ctx)
      : Reconciler(ctx, "endpointslice", [this](const std::string& key) { return reconcile(key); }),
        services_(ctx.informers.get(kServices)),
        pods_(ctx.informers.get(kPods)),
        slices_(ctx.informers.get(kEndpointSlices)),
        nodes_(ctx.informers.get(kNodes)) {
    indexByNamespace(*services_);
    indexByNamespace(*pods_);
    slices_->addIndex("service", kube::sliceServiceIndex());
    controller_.watch(*services_);
    controller_.watch(*slices_, kube::sliceServiceIndex());
    watchPodsForServices(controller_, *pods_, *services_);
  }

 private:
  struct Written {
    std::map<std::string, std::string> present;  // slice name -> resourceVersion written
    std::vector<std::string> deleted;
  };

  // Whether the cache shows every write of the last reconcile of `key`
  // (else a slice created by generateName would be created again).
  bool cacheCaughtUp(const std::string& key) {
    std::lock_guard g(mu_);
    auto it = written_.find(key);
    if (it == written_.end()) return true;
    std::string ns = key.substr(0, key.find('/'));
    for (const auto& [name, rv] : it->second.present) {
      kube::ObjectPtr s = slices_->get(ns + "/" + name);
      if (!s || !newerOrSame(kube::objectResourceVersion(*s), rv)) return false;
    }
    for (const std::string& name : it->second.deleted) {
      if (slices_->get(ns + "/" + name)) return false;
    }
    written_.erase(it);
    return true;
  }

  base::Status reconcile(const std::string& key) {
    if (!cacheCaughtUp(key)) {
      controller_.queue().addAfter(key, std::chrono::milliseconds(20));
      return {};
    }
    std::string ns = key.substr(0, key.find('/'));
    std::vector<kube::ObjectPtr> existing;
    for (const kube::ObjectPtr& s : slices_->byIndex("service", key)) {
      if (kube::str(*s, {"metadata", "labels", kManagedByLabel}) == kManagedBy) existing.push_back(s);
    }
    kube::ObjectPtr svc = services_->get(key);
    std::optional<std::map<std::string, std::vector<Backend>>> backends;
    if (svc) backends = backendsOf(*svc, pods_->byIndex(kByNamespace, ns));

    // Desired slices: per family and port mapping, chunks of 100.
    std::map<std::string, std::vector<json::object>> desired;  // group -> slices' bodies
    if (backends) {
      for (const auto& [family, list] : *backends) {
        std::map<std::string, std::pair<json::array, json::array>> groups;  // ports json -> (ports, endpoints)
        for (const Backend& b : list) {
          auto& g = groups[json::serialize(b.ports)];
          g.first = b.ports;
          g.second.push_back(endpointOf(b));
        }
        if (groups.empty()) groups[json::serialize(json::array())];  // an empty slice says "no endpoints"
        for (auto& [ports, g] : groups) {
          std::string group = family + " " + ports;
          auto& out = desired[group];
          for (size_t i = 0; i < g.second.size() || i == 0; i += kMaxEndpointsPerSlice) {
            json::array chunk;
            for (size_t j = i; j < std::min(g.second.size(), i + kMaxEndpointsPerSlice); ++j) chunk.push_back(g.second[j]);
            out.push_back(json::object{{"addressType", family}, {"endpoints", std::move(chunk)}, {"ports", g.first}});
          }
        }
      }
    }
    std::map<std::string, std::vector<kube::ObjectPtr>> have;
    for (const kube::ObjectPtr& s : existing) {
      const json::value* ports = kube::field(*s, {"ports"});
      std::string group = std::string(kube::str(*s, {"addressType"})) + " " +
                          (ports && ports->is_array() ? json::serialize(*ports) : json::serialize(json::array()));
      have[group].push_back(s);
    }
    for (auto& [g, list] : have) {
      std::sort(list.begin(), list.end(), [](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
        return kube::objectName(*a) < kube::objectName(*b);
      });
    }
    Written written;
    base::Status result;
    auto note = [&](const base::Result<json::object>& r) {
      if (r) written.present[std::string(kube::objectName(*r))] = std::string(kube::objectResourceVersion(*r));
      else if (result) result = r.error();
    };
    // Slices of groups no longer wanted, and a group's surplus, are spare:
    // reused (updated) for new chunks of the same family before any is
    // created, deleted if left over.
    std::vector<kube::ObjectPtr> spare;
    for (auto& [group, old] : have) {
      size_t keep = desired.count(group) ? std::min(old.size(), desired[group].size()) : 0;
      spare.insert(spare.end(), old.begin() + static_cast<long>(keep), old.end());
      old.resize(keep);
    }
    auto rewrite = [&](const kube::ObjectPtr& slice, json::object body) {
      json::object copy = *slice;
      for (auto& [k, v] : body) copy[k] = std::move(v);
      kube::ensureObject(copy, {"metadata"})["labels"] = labelsFor(*svc);
      note(ctx_.client.update(kEndpointSlices, std::move(copy)));
    };
    for (auto& [group, bodies] : desired) {
      auto& old = have[group];
      for (size_t i = 0; i < bodies.size(); ++i) {
        if (i < old.size()) {
          if (!sameSlice(*old[i], bodies[i], *svc)) rewrite(old[i], std::move(bodies[i]));
          continue;
        }
        auto reuse = std::find_if(spare.begin(), spare.end(), [&](const kube::ObjectPtr& s) {
          return kube::field(*s, {"addressType"}) && *kube::field(*s, {"addressType"}) == bodies[i]["addressType"];
        });
        if (reuse != spare.end()) {
          rewrite(*reuse, std::move(bodies[i]));
          spare.erase(reuse);
          continue;
        }
        json::object body = std::move(bodies[i]);
        body["metadata"] = json::object{{"generateName", std::string(kube::objectName(*svc)) + "-"},
                                        {"namespace", ns},
                                        {"labels", labelsFor(*svc)},
                                        {"ownerReferences", json::array{ownerRef(*svc)}}};
        note(ctx_.client.create(kEndpointSlices, ns, std::move(body)));
      }
    }
    for (const kube::ObjectPtr& s : spare) {
      auto st = ctx_.client.remove(kEndpointSlices, ns, kube::objectName(*s));
      if (st || st.error().code() == base::ErrorCode::kNotFound) written.deleted.emplace_back(kube::objectName(*s));
      else if (result) result = st;
    }
    if (!written.present.empty() || !written.deleted.empty()) {
      std::lock_guard g(mu_);
      written_[key] = std::move(written);
    }
    return result;
  }

  json::object endpointOf(const Backend& b) {
    json::object e{{"addresses", json::array{json::string(b.ip)}},
                   {"conditions", json::object{{"ready", b.ready}, {"serving", b.serving}, {"terminating", b.terminating}}},
                   {"targetRef", targetRef(*b.pod)}};
    std::string_view node = kube::str(*b.pod, {"spec", "nodeName"});
    if (!node.empty()) {
      e["nodeName"] = node;
      if (kube::ObjectPtr n = nodes_->get(std::string(node))) {
        if (auto zone = kube::str(*n, {"metadata", "labels", "topology.kubernetes.io/zone"}); !zone.empty()) e["zone"] = zone;
      }
    }
    return e;
  }

  static json::object labelsFor(const json::object& svc) {
    json::object l;
    if (const json::object* sl = kube::child(svc, {"metadata", "labels"})) l = *sl;
    l[kServiceNameLabel] = kube::objectName(svc);
    l[kManagedByLabel] = kManagedBy;
    return l;
  }

  static json::object ownerRef(const json::object& svc) {
    return kube::toJson(kube::OwnerReference{"v1", "Service", std::string(kube::objectName(svc)), std::string(kube::uid(svc)),
                                             true, true});
  }

  static bool sameSlice(const json::object& have, const json::object& want, const json::object& svc) {
    for (const char* k : {"addressType", "endpoints", "ports"}) {
      const json::value* a = have.if_contains(k);
      const json::value* b = want.if_contains(k);
      json::value empty = json::array();
      if (*(a && !a->is_null() ? a : &empty) != *(b ? b : &empty)) return false;
    }
    const json::value* l = kube::field(have, {"metadata", "labels"});
    return l && *l == json::value(labelsFor(svc));
  }

  std::shared_ptr<kube::Informer> services_, pods_, slices_, nodes_;
  std::mutex mu_;
  std::map<std::string, Written> written_;
};

class Endpoints : public Reconciler {
 public:
  explicit Endpoints(Context& ctx)
      : Reconciler(ctx, "endpoints", [this](const std::string& key) { return reconcile(key); }),
        services_(ctx.informers.get(kServices)),
        pods_(ctx.informers.get(kPods)),
        endpoints_(ctx.informers.get(kEndpoints)) {
    indexByNamespace(*services_);
    indexByNamespace(*pods_);
    controller_.watch(*services_);
    controller_.watch(*endpoints_);
    watchPodsForServices(controller_, *pods_, *services_);
  }

 private:
  base::Status reconcile(const std::string& key) {
    std::string ns = key.substr(0, key.find('/')), name = key.substr(key.find('/') + 1);
    kube::ObjectPtr svc = services_->get(key);
    kube::ObjectPtr ep = endpoints_->get(key);
    std::optional<std::map<std::string, std::vector<Backend>>> backends;
    if (svc) backends = backendsOf(*svc, pods_->byIndex(kByNamespace, ns));
    if (!backends) {
      // Gone, or not ours to manage (no selector): only ours are deleted.
      if (!svc && ep && kube::str(*ep, {"metadata", "labels", "endpointslice.kubernetes.io/skip-mirror"}) == "true") {
        auto st = ctx_.client.remove(kEndpoints, ns, name);
        if (!st && st.error().code() != base::ErrorCode::kNotFound) return st;
      }
      return {};
    }
    // One subset per port mapping; terminating pods are left out.
    std::map<std::string, json::object> subsets;
    for (const auto& [family, list] : *backends) {
      for (const Backend& b : list) {
        if (b.terminating && !kube::boolean(*svc, {"spec", "publishNotReadyAddresses"})) continue;
        json::object& s = subsets[json::serialize(b.ports)];
        if (s.empty()) s = json::object{{"ports", b.ports}};
        json::object addr{{"ip", b.ip}, {"targetRef", targetRef(*b.pod)}};
        if (auto node = kube::str(*b.pod, {"spec", "nodeName"}); !node.empty()) addr["nodeName"] = node;
        json::value& list2 = s[b.ready ? "addresses" : "notReadyAddresses"];
        if (!list2.is_array()) list2 = json::array();
        list2.get_array().push_back(std::move(addr));
      }
    }
    json::array want;
    for (auto& [k, s] : subsets) {
      if (s["ports"].as_array().empty()) s.erase("ports");
      want.push_back(std::move(s));
    }
    json::object labels;
    if (const json::object* sl = kube::child(*svc, {"metadata", "labels"})) labels = *sl;
    labels["endpointslice.kubernetes.io/skip-mirror"] = "true";
    if (!ep) {
      json::object body{{"metadata", json::object{{"name", name}, {"namespace", ns}, {"labels", labels}}}};
      if (!want.empty()) body["subsets"] = std::move(want);
      auto res = ctx_.client.create(kEndpoints, ns, std::move(body));
      if (!res && res.error().code() != base::ErrorCode::kAlreadyExists) return res.error();
      return {};
    }
    const json::value* have = ep->if_contains("subsets");
    json::value haveSubsets = have && !have->is_null() ? *have : json::value(json::array());
    const json::value* haveLabels = kube::field(*ep, {"metadata", "labels"});
    if (haveSubsets == json::value(want) && haveLabels && *haveLabels == json::value(labels)) return {};
    json::object copy = *ep;
    if (want.empty()) copy.erase("subsets");
    else copy["subsets"] = std::move(want);
    kube::ensureObject(copy, {"metadata"})["labels"] = std::move(labels);
    auto res = ctx_.client.update(kEndpoints, std::move(copy));
    return res ? base::Status() : base::Status(res.error());
  }

  std::shared_ptr<kube::Informer> services_, pods_, endpoints_;
};

}  // namespace

std::unique_ptr<Runnable> makeEndpointSlices(Context& ctx) { return std::make_unique<EndpointSlices>(ctx); }
std::unique_ptr<Runnable> makeEndpoints(Context& ctx) { return std::make_unique<Endpoints>(ctx); }

}  // namespace trellis::controllers
