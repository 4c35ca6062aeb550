#include "servicelb/daemon.h"

#include <chrono>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "common/base/log.h"
#include "common/kube/informer.h"
#include "common/kube/object.h"
#include "servicelb/translate.h"

namespace trellis::servicelb {
namespace {
bool sameBackends(const std::vector<Backend>& a, const std::vector<Backend>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const Backend& x, const Backend& y) { return x.addr == y.addr && x.port == y.port; });
}
}  // namespace

struct Daemon::Impl {
  Impl(kube::Client& client, SockLb& lb, uint64_t netns, base::Registry& metrics)
      : lb(lb),
        netns(netns),
        services(std::make_shared<kube::Informer>(client, kube::resources::kServices)),
        slices(std::make_shared<kube::Informer>(client, kube::resources::kEndpointSlices)),
        writes(metrics.counter("trellis_servicelb_map_writes_total", "Service entries written to the BPF maps")),
        frontendsGauge(metrics.gauge("trellis_servicelb_frontends", "VIP:port/protocol entries programmed")),
        syncSeconds(metrics.histogram("trellis_servicelb_sync_duration_seconds",
                                      "Time to recompute and program one Service",
                                      {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01})) {
    slices->addIndex("service", kube::sliceServiceIndex());
    auto ofService = [this](const kube::ObjectPtr& o) { sync(kube::objectKey(*o)); };
    services->addHandler({.onAdd = ofService,
                          .onUpdate = [ofService](const kube::ObjectPtr&, const kube::ObjectPtr& o) { ofService(o); },
                          .onDelete = ofService});
    auto ofSlice = [this](const kube::ObjectPtr& o) {
      if (std::string key = kube::sliceServiceKey(*o); !key.empty()) sync(key);
    };
    slices->addHandler({.onAdd = ofSlice,
                        .onUpdate = [ofSlice](const kube::ObjectPtr& old, const kube::ObjectPtr& o) {
                          ofSlice(o);
                          ofSlice(old);
                        },
                        .onDelete = ofSlice});
  }

  // Recomputes one Service and writes what changed.
  void sync(const std::string& key) {
    auto started = std::chrono::steady_clock::now();
    std::lock_guard g(mu);
    std::map<Frontend, std::vector<Backend>> now;
    if (auto svc = services->get(key)) {
      for (Entry& e : clusterIpEntries(*svc, slices->byIndex("service", key))) now[e.frontend] = std::move(e.backends);
    }
    auto& before = programmed[key];
    for (auto& [fe, backends] : now) {
      auto it = before.find(fe);
      if (it != before.end() && sameBackends(it->second, backends)) continue;
      uint32_t& id = ids[fe];
      if (id == 0) id = nextId++;
      auto st = lb.setService({netns, fe.addr, fe.port, fe.proto}, id, backends);
      if (!st) log.warn("programming a service", {{"service", key}, {"error", st.error().message()}});
      writes.inc();
    }
    for (auto& [fe, backends] : before) {
      if (now.count(fe)) continue;
      auto st = lb.removeService({netns, fe.addr, fe.port, fe.proto});
      if (!st) log.warn("removing a service", {{"service", key}, {"error", st.error().message()}});
      ids.erase(fe);
      writes.inc();
    }
    if (now.empty()) {
      programmed.erase(key);
    } else {
      before = std::move(now);
    }
    frontendsGauge.set(static_cast<double>(ids.size()));
    syncSeconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }

  SockLb& lb;
  uint64_t netns;
  std::shared_ptr<kube::Informer> services, slices;
  base::Counter& writes;
  base::Gauge& frontendsGauge;
  base::Histogram& syncSeconds;
  base::Logger log{"servicelb"};
  std::mutex mu;
  std::map<std::string, std::map<Frontend, std::vector<Backend>>> programmed;  // service -> what the maps hold
  std::map<Frontend, uint32_t> ids;
  uint32_t nextId = 1;
};

Daemon::Daemon(kube::Client& client, SockLb& lb, uint64_t netns, base::Registry& metrics)
    : impl_(std::make_unique<Impl>(client, lb, netns, metrics)) {}
Daemon::~Daemon() { stop(); }
void Daemon::start() {
  impl_->services->start();
  impl_->slices->start();
}
bool Daemon::synced() const { return impl_->services->hasSynced() && impl_->slices->hasSynced(); }
void Daemon::stop() {
  impl_->services->stop();
  impl_->slices->stop();
}

}  // namespace trellis::servicelb
