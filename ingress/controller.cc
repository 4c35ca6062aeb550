#include "ingress/controller.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/base/base64.h"
#include "common/base/log.h"
#include "common/kube/events.h"
#include "common/kube/informer.h"
#include "common/kube/object.h"
#include "ingress/translate.h"

namespace trellis::ingress {

namespace json = boost::json;
namespace res = kube::resources;

namespace {


// The certificate in a kubernetes.io/tls Secret, or why it is not one.
std::shared_ptr<const Certificate> certificateOf(const json::object& secret) {
  auto c = std::make_shared<Certificate>();
  if (kube::str(secret, {"type"}) != "kubernetes.io/tls") {
    c->error = fmt::format("type is {:?}, not \"kubernetes.io/tls\"", kube::str(secret, {"type"}));
    return c;
  }
  auto crt = base::base64Decode(kube::str(secret, {"data", "tls.crt"}));
  auto key = base::base64Decode(kube::str(secret, {"data", "tls.key"}));
  if (!crt || !key || crt->empty() || key->empty()) {
    c->error = "data must hold tls.crt and tls.key (base64 PEM)";
    return c;
  }
  auto cert = http::ServerCertificate::fromPem(*crt, *key);
  if (!cert) {
    c->error = fmt::format("tls.crt/tls.key: {}", cert.error().message());
    return c;
  }
  c->cert = *cert;
  return c;
}

std::string splitNs(const std::string& key, std::string* name) {
  size_t slash = key.find('/');
  *name = key.substr(slash + 1);
  return key.substr(0, slash);
}

}  // namespace

struct Controller::Impl {
  kube::Client& client;
  Proxy& proxy;
  std::shared_ptr<http::TlsServerConfig> tls;
  ControllerOptions options;
  base::Logger log{"ingress-controller"};
  base::Registry ownMetrics;
  base::Registry& metrics;
  base::Counter& builds;
  base::Histogram& buildSeconds;
  base::Gauge& servedGauge;
  base::Gauge& problemsGauge;
  kube::SharedInformers informers;
  std::shared_ptr<kube::Informer> classes, ingresses, services, slices;
  kube::EventRecorder events;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool dirty = true;
  bool stopping = false;
  bool built = false;
  uint64_t generation = 0;
  std::thread builder;
  std::shared_ptr<const std::map<std::string, std::shared_ptr<http::ServerCertificate>>> certs =
      std::make_shared<std::map<std::string, std::shared_ptr<http::ServerCertificate>>>();
  Translation last;

  // TLS Secrets, one watch each (by name: never a list of all Secrets).
  struct SecretWatch {
    std::unique_ptr<kube::Client::Watch> watch;
    std::shared_ptr<const Certificate> cert;  // null until seen (or when deleted)
    std::string resourceVersion;
    bool ended = false;
  };
  std::map<std::string, SecretWatch> secrets;  // under mu
  std::map<std::string, std::string> statusWritten;  // ingress → address written
  std::map<std::string, std::string> problemSeen;    // ingress → last problem announced

  Impl(kube::Client& c, Proxy& p, std::shared_ptr<http::TlsServerConfig> t, ControllerOptions o)
      : client(c),
        proxy(p),
        tls(std::move(t)),
        options(std::move(o)),
        metrics(options.metrics ? *options.metrics : ownMetrics),
        builds(metrics.counter("trellis_ingress_route_table_builds_total", "Route tables built")),
        buildSeconds(metrics.histogram("trellis_ingress_route_table_build_seconds", "Time to build a route table",
                                       base::latencyBuckets())),
        servedGauge(metrics.gauge("trellis_ingress_ingresses_served", "Ingresses in the route table")),
        problemsGauge(metrics.gauge("trellis_ingress_ingresses_skipped", "Admitted Ingresses skipped for a problem")),
        informers(client),
        events(client, {.component = "trellis-ingress"}) {
    classes = informers.get(res::kIngressClasses);
    ingresses = informers.get(res::kIngresses);
    services = informers.get(res::kServices);
    slices = informers.get(res::kEndpointSlices);
    slices->addIndex("service", kube::sliceServiceIndex());
    kube::EventHandler onChange{.onAdd = [this](const kube::ObjectPtr&) { markDirty(); },
                                .onUpdate =
                                    [this](const kube::ObjectPtr& a, const kube::ObjectPtr& b) {
                                      if (a != b) markDirty();
                                    },
                                .onDelete = [this](const kube::ObjectPtr&) { markDirty(); }};
    for (auto& inf : {classes, ingresses, services, slices}) inf->addHandler(onChange);
    if (tls) {
      tls->setSniResolver([this](std::string_view name) { return certificateFor(name); });
    }
  }

  bool synced() const {
    return classes->hasSynced() && ingresses->hasSynced() && services->hasSynced() && slices->hasSynced();
  }

  void markDirty() {
    std::lock_guard g(mu);
    dirty = true;
    cv.notify_all();
  }

  std::shared_ptr<http::ServerCertificate> certificateFor(std::string_view serverName) {
    std::shared_ptr<const std::map<std::string, std::shared_ptr<http::ServerCertificate>>> snapshot;
    {
      std::lock_guard g(mu);
      snapshot = certs;
    }
    std::string host = normalizeHost(serverName);
    if (auto it = snapshot->find(host); it != snapshot->end()) return it->second;
    if (size_t dot = host.find('.'); dot != std::string::npos && dot > 0) {
      if (auto it = snapshot->find("*" + host.substr(dot)); it != snapshot->end()) return it->second;
    }
    return nullptr;  // the default certificate
  }

  // --- Secrets ---

  // Starts the watch of one Secret (not under mu: a failure may end it at once).
  std::unique_ptr<kube::Client::Watch> watchSecret(const std::string& key, const std::string& resourceVersion) {
    std::string name;
    std::string ns = splitNs(key, &name);
    kube::ListOptions lo;
    lo.fieldSelector = "metadata.name=" + name;
    lo.allowWatchBookmarks = true;
    lo.resourceVersion = resourceVersion;
    return client.watch(
        res::kSecrets, ns, lo,
        [this, key](kube::WatchEvent ev) {
          std::lock_guard g(mu);
          auto it = secrets.find(key);
          if (it == secrets.end()) return;
          if (ev.type == kube::WatchEvent::Type::kError) {
            it->second.resourceVersion.clear();  // 410 Gone and the like: start afresh
            return;
          }
          std::string rv(kube::objectResourceVersion(ev.object));
          if (!rv.empty()) it->second.resourceVersion = rv;
          if (ev.type == kube::WatchEvent::Type::kBookmark) return;
          it->second.cert = ev.type == kube::WatchEvent::Type::kDeleted ? nullptr : certificateOf(ev.object);
          dirty = true;
          cv.notify_all();
        },
        [this, key](base::Status st) {
          std::lock_guard g(mu);
          auto it = secrets.find(key);
          if (it == secrets.end()) return;
          if (!st) log.warn("secret watch ended", {{"secret", key}, {"error", st.error().message()}});
          it->second.ended = true;  // the builder thread restarts it
          cv.notify_all();
        });
  }

  // Makes the set of watched Secrets equal `wanted`; restarts ended watches.
  void syncSecrets(const std::set<std::string>& wanted) {
    std::vector<std::unique_ptr<kube::Client::Watch>> stopped;
    std::vector<std::string> added;
    {
      std::lock_guard g(mu);
      for (auto it = secrets.begin(); it != secrets.end();) {
        if (!wanted.count(it->first)) {
          if (it->second.watch) stopped.push_back(std::move(it->second.watch));
          it = secrets.erase(it);
        } else {
          ++it;
        }
      }
      for (const std::string& k : wanted) {
        if (secrets.emplace(k, SecretWatch{}).second) added.push_back(k);
      }
    }
    for (auto& w : stopped) w->stop();  // outside mu: onEnd takes it
    startWatches(added, {});
  }

  void startWatches(const std::vector<std::string>& keys, const std::vector<std::string>& versions) {
    for (size_t i = 0; i < keys.size(); ++i) {
      auto w = watchSecret(keys[i], i < versions.size() ? versions[i] : "");
      std::lock_guard g(mu);
      auto it = secrets.find(keys[i]);
      if (it != secrets.end() && !it->second.watch) {
        it->second.watch = std::move(w);
        continue;
      }
      w.reset();  // no longer wanted meanwhile
    }
  }

  void restartEndedWatches() {
    std::vector<std::unique_ptr<kube::Client::Watch>> old;
    std::vector<std::string> keys, versions;
    {
      std::lock_guard g(mu);
      for (auto& [k, sw] : secrets) {
        if (!sw.ended) continue;
        old.push_back(std::move(sw.watch));
        sw.ended = false;
        keys.push_back(k);
        versions.push_back(sw.resourceVersion);
      }
    }
    if (keys.empty()) return;
    old.clear();  // destroys the ended watches (outside mu)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // no tight loop against a failing server
    startWatches(keys, versions);
  }

  // --- building ---

  void loop() {
    for (;;) {
      {
        std::unique_lock g(mu);
        // Polls too: the caches becoming synced wakes nobody.
        cv.wait_for(g, std::chrono::milliseconds(50), [&] {
          if (stopping) return true;
          if (dirty && synced()) return true;
          for (auto& [k, sw] : secrets) {
            if (sw.ended) return true;
          }
          return false;
        });
        if (stopping) return;
        if (!dirty || !synced()) {
          bool ended = false;
          for (auto& [k, sw] : secrets) ended |= sw.ended;
          if (!ended) continue;
        }
      }
      restartEndedWatches();
      {
        std::unique_lock g(mu);
        if (!dirty || !synced()) continue;
      }
      std::this_thread::sleep_for(options.coalesce);
      {
        std::lock_guard g(mu);
        dirty = false;
      }
      rebuild();
    }
  }

  std::string publishAddress() {
    if (!options.publishService.empty()) {
      auto svc = services->get(options.publishService);
      if (const json::array* lb = svc ? kube::array(*svc, {"status", "loadBalancer", "ingress"}) : nullptr) {
        if (!lb->empty() && lb->front().is_object()) {
          std::string_view ip = kube::str(lb->front().get_object(), {"ip"});
          return std::string(ip.empty() ? kube::str(lb->front().get_object(), {"hostname"}) : ip);
        }
      }
      return "";
    }
    return options.publishAddress;
  }

  void rebuild() {
    auto t0 = std::chrono::steady_clock::now();
    kube::ObjectPtr cls = classes->get(options.className);
    Inputs in;
    std::set<std::string> wanted;
    for (const kube::ObjectPtr& ing : ingresses->list()) {
      if (!admitted(*ing, options.className, cls.get())) continue;
      in.ingresses.push_back(ing);
      for (std::string& s : tlsSecretsOf(*ing)) wanted.insert(std::move(s));
    }
    syncSecrets(wanted);
    std::map<std::string, std::shared_ptr<const Certificate>> certOf;
    {
      std::lock_guard g(mu);
      for (auto& [k, sw] : secrets) certOf[k] = sw.cert;
    }
    in.service = [&](const std::string& key) { return services->get(key); };
    in.endpointSlices = [&](const std::string& key) { return slices->byIndex("service", key); };
    in.certificate = [&](const std::string& key) -> std::shared_ptr<const Certificate> {
      auto it = certOf.find(key);
      return it == certOf.end() ? nullptr : it->second;
    };
    Translation t = translate(in, ++generation);
    proxy.setTable(t.table);
    {
      std::lock_guard g(mu);
      certs = std::make_shared<const std::map<std::string, std::shared_ptr<http::ServerCertificate>>>(t.certificates);
      built = true;
    }
    builds.inc();
    buildSeconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    servedGauge.set(static_cast<double>(t.served.size()));
    problemsGauge.set(static_cast<double>(t.problems.size()));
    log.debug("route table built", {{"generation", generation}, {"routes", t.table->size()},
                                    {"ingresses", t.served.size()}, {"skipped", t.problems.size()}});

    // What the API shows: Events for new problems, status for served Ingresses.
    std::map<std::string, const Problem*> now;
    for (const Problem& p : t.problems) now.emplace(p.ingress, &p);
    for (const auto& [key, p] : now) {
      std::string text = p->reason + ": " + p->message;
      if (problemSeen[key] == text) continue;
      problemSeen[key] = text;
      if (auto ing = ingresses->get(key)) {
        log.warn("ingress skipped", {{"ingress", key}, {"reason", p->reason}, {"message", p->message}});
        events.record(*ing, "Warning", p->reason, p->message);
      }
    }
    for (auto it = problemSeen.begin(); it != problemSeen.end();) {
      if (now.count(it->first)) {
        ++it;
        continue;
      }
      if (auto ing = ingresses->get(it->first); ing && t.served.count(it->first)) {
        events.record(*ing, "Normal", "Sync", "the Ingress is served (its earlier problem is resolved)");
      }
      it = problemSeen.erase(it);
    }
    std::string address = publishAddress();
    if (!address.empty()) {
      for (const std::string& key : t.served) writeStatus(key, address);
    }
    {
      std::lock_guard g(mu);
      last = std::move(t);
    }
  }

  void writeStatus(const std::string& key, const std::string& address) {
    kube::ObjectPtr ing = ingresses->get(key);
    if (!ing) return;
    json::object entry;
    bool isIp = address.find_first_not_of("0123456789.:abcdefABCDEF") == std::string::npos &&
                address.find_first_of(".:") != std::string::npos;
    entry[isIp ? "ip" : "hostname"] = address;
    json::array want{entry};
    const json::value* have = kube::field(*ing, {"status", "loadBalancer", "ingress"});
    if (have && *have == json::value(want)) return;
    json::object body = *ing;
    kube::ensureObject(body, {"status", "loadBalancer"})["ingress"] = want;
    auto r = client.update(res::kIngresses, std::move(body), "status");
    if (!r && r.error().code() != base::ErrorCode::kConflict && r.error().code() != base::ErrorCode::kNotFound) {
      log.warn("writing ingress status", {{"ingress", key}, {"error", r.error().message()}});
      markDirty();  // try again with the next build
    } else if (!r) {
      markDirty();  // stale copy: the informer brings the new one and another build
    }
  }
};

Controller::Controller(kube::Client& client, Proxy& proxy, std::shared_ptr<http::TlsServerConfig> tls,
                       ControllerOptions options)
    : impl_(std::make_unique<Impl>(client, proxy, std::move(tls), std::move(options))) {}

Controller::~Controller() { stop(); }

void Controller::start() {
  impl_->informers.start();
  Impl* im = impl_.get();
  im->builder = std::thread([im] { im->loop(); });
}

void Controller::stop() {
  {
    std::lock_guard g(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
    impl_->cv.notify_all();
  }
  if (impl_->builder.joinable()) impl_->builder.join();
  impl_->informers.stop();
  std::vector<std::unique_ptr<kube::Client::Watch>> watches;
  {
    std::lock_guard g(impl_->mu);
    for (auto& [k, sw] : impl_->secrets) {
      if (sw.watch) watches.push_back(std::move(sw.watch));
    }
  }
  for (auto& w : watches) w->stop();
  watches.clear();
  {
    std::lock_guard g(impl_->mu);
    impl_->secrets.clear();
  }
  impl_->events.flush();
}

bool Controller::ready() const {
  std::lock_guard g(impl_->mu);
  return impl_->built;
}

std::string Controller::explain(std::string_view host, std::string_view path) const {
  std::shared_ptr<const RouteTable> table = impl_->proxy.table();
  json::object out;
  std::string h = normalizeHost(host);
  out["host"] = h;
  out["path"] = path;
  if (!table) {
    out["result"] = "no route table yet";
    return json::serialize(out);
  }
  out["generation"] = table->generation();
  RouteTable::Match m = table->explain(h, path);
  out["why"] = m.why;
  if (!m.route) {
    out["result"] = "404";
    return json::serialize(out);
  }
  const Route& r = *m.route;
  out["result"] = r.backends.front().backend->endpoints.empty() ? "503" : "proxied";
  out["ingress"] = r.source;
  out["rule"] = r.rule;
  out["ruleHost"] = r.host;
  out["rulePath"] = r.path;
  out["pathType"] = m.viaDefault ? "" : std::string(pathMatchName(r.match));
  json::array backends;
  for (const auto& wb : r.backends) {
    json::object b;
    b["service"] = wb.backend->id();
    b["protocol"] = upstreamProtocolName(wb.backend->protocol);
    b["weight"] = wb.weight;
    json::array eps;
    for (const Endpoint& e : wb.backend->endpoints) eps.push_back(json::value(e.hostPort));
    b["endpoints"] = std::move(eps);
    backends.push_back(std::move(b));
  }
  out["backends"] = std::move(backends);
  out["sslRedirect"] = r.policy->sslRedirect;
  return json::serialize(out);
}

std::string Controller::problems() const {
  std::lock_guard g(impl_->mu);
  json::array out;
  for (const Problem& p : impl_->last.problems) {
    out.push_back(json::object{{"ingress", p.ingress}, {"reason", p.reason}, {"message", p.message}});
  }
  return json::serialize(out);
}

}  // namespace trellis::ingress
