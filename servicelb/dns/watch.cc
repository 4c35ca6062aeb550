#include "servicelb/dns/watch.h"

#include <map>
#include <mutex>
#include <unordered_map>

#include <fmt/format.h>

#include "common/kube/informer.h"
#include "common/kube/object.h"

namespace trellis::dns {

namespace {
constexpr const char* kNameserverService = "kube-system/kube-dns";
}  // namespace

struct Watcher::Impl {
  Impl(kube::Client& client, Zone& zone, base::Registry& metrics)
      : zone(zone),
        // The informers keep only identities: what records are made of is kept here, compactly.
        services(std::make_shared<kube::Informer>(client, kube::resources::kServices,
                                                  kube::InformerOptions{.keepObjects = false})),
        slices(std::make_shared<kube::Informer>(client, kube::resources::kEndpointSlices,
                                                kube::InformerOptions{.keepObjects = false})),
        updates(metrics.counter("trellis_dns_zone_updates_total", "Services whose records changed")),
        names(metrics.gauge("trellis_dns_zone_names", "Names in the cluster zone and its reverse names")),
        serviceCount(metrics.gauge("trellis_dns_services", "Services with records")),
        updateSeconds(metrics.histogram("trellis_dns_zone_update_duration_seconds",
                                        "Time to set one Service's records in the zone",
                                        {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05})) {
    auto onService = [this](const kube::ObjectPtr& o) {
      std::lock_guard g(mu);
      std::string key = kube::objectKey(*o);
      ServiceInfo info = serviceInfo(*o);
      // Only a headless Service's records depend on its slices: only its info is kept for them.
      if (!info.clusterIPs.empty() && info.clusterIPs.front() == "None") {
        refresh(key, serviceInfos[key] = std::move(info));
      } else {
        serviceInfos.erase(key);
        refresh(key, info);
      }
    };
    services->addHandler({.onAdd = onService,
                          .onUpdate = [onService](const kube::ObjectPtr&, const kube::ObjectPtr& o) { onService(o); },
                          .onDelete = [this](const kube::ObjectPtr& o) {
                            std::lock_guard g(mu);
                            std::string key = kube::objectKey(*o);
                            serviceInfos.erase(key);
                            set(key, {});
                          }});
    auto onSlice = [this](const kube::ObjectPtr& o, bool gone) {
      std::lock_guard g(mu);
      std::string key = kube::objectKey(*o);
      std::string_view name = kube::str(*o, {"metadata", "name"});
      std::string owner = gone ? std::string() : kube::sliceServiceKey(*o);
      // A slice that left its Service (deleted, or relabelled) is taken from the old one.
      if (auto it = sliceOwners.find(key); it != sliceOwners.end() && it->second != owner) {
        std::string old = it->second;
        auto& byName = sliceInfos[old];
        byName.erase(std::string(name));
        if (byName.empty()) sliceInfos.erase(old);
        sliceOwners.erase(it);
        refreshHeadless(old);
      }
      if (owner.empty()) return;
      sliceOwners[key] = owner;
      sliceInfos[owner][std::string(name)] = sliceInfo(*o);
      refreshHeadless(owner);
    };
    slices->addHandler({.onAdd = [onSlice](const kube::ObjectPtr& o) { onSlice(o, false); },
                        .onUpdate = [onSlice](const kube::ObjectPtr&, const kube::ObjectPtr& o) { onSlice(o, false); },
                        .onDelete = [onSlice](const kube::ObjectPtr& o) { onSlice(o, true); }});
    if (zone.config().pods == PodRecords::kVerified) {
      pods = std::make_shared<kube::Informer>(client, kube::resources::kPods);
      pods->addIndex("ip", [](const boost::json::object& p) {
        std::vector<std::string> out;
        std::string_view ns = kube::str(p, {"metadata", "namespace"});
        if (auto* ips = kube::array(p, {"status", "podIPs"})) {
          for (auto& v : *ips) {
            if (v.is_object()) out.push_back(fmt::format("{}/{}", ns, kube::str(v.as_object(), {"ip"})));
          }
        }
        return out;
      });
      zone.setPodCheck([p = pods](std::string_view ns, std::string_view ip) {
        return !p->byIndex("ip", fmt::format("{}/{}", ns, ip)).empty();
      });
    }
  }

  // Sets one Service's records, computed from `svc` and its slices (mu held).
  void refresh(const std::string& key, const ServiceInfo& svc) {
    std::vector<const SliceInfo*> ss;
    if (auto it = sliceInfos.find(key); it != sliceInfos.end()) {
      for (auto& [name, info] : it->second) ss.push_back(&info);
    }
    set(key, serviceRecords(svc, ss, zone.config()));
    if (key == kNameserverService) zone.setNameserverAddress(svc.clusterIPs.empty() ? "" : svc.clusterIPs[0]);
  }
  // A slice changed: its Service's records, when they depend on slices (mu held).
  void refreshHeadless(const std::string& key) {
    if (auto it = serviceInfos.find(key); it != serviceInfos.end()) refresh(key, it->second);
  }
  void set(const std::string& key, std::vector<Record> records) {
    auto started = std::chrono::steady_clock::now();
    bool none = records.empty();
    if (zone.set(key, std::move(records))) updates.inc();
    if (none && key == kNameserverService) zone.setNameserverAddress("");
    names.set(static_cast<double>(zone.names()));
    serviceCount.set(static_cast<double>(zone.sources()));
    updateSeconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }

  Zone& zone;
  std::shared_ptr<kube::Informer> services, slices, pods;
  base::Counter& updates;
  base::Gauge& names;
  base::Gauge& serviceCount;
  base::Histogram& updateSeconds;
  std::mutex mu;
  std::unordered_map<std::string, ServiceInfo> serviceInfos;                    // headless ones, ns/name
  std::unordered_map<std::string, std::map<std::string, SliceInfo>> sliceInfos;  // service ns/name -> slice name
  std::unordered_map<std::string, std::string> sliceOwners;                      // slice ns/name -> service ns/name
};

Watcher::Watcher(kube::Client& client, Zone& zone, base::Registry& metrics)
    : impl_(std::make_unique<Impl>(client, zone, metrics)) {}
Watcher::~Watcher() { stop(); }
void Watcher::start() {
  for (auto& i : {impl_->services, impl_->slices, impl_->pods}) {
    if (i) i->start();
  }
}
bool Watcher::synced() const {
  return impl_->services->hasSynced() && impl_->slices->hasSynced() && (!impl_->pods || impl_->pods->hasSynced());
}
void Watcher::stop() {
  for (auto& i : {impl_->services, impl_->slices, impl_->pods}) {
    if (i) i->stop();
  }
}

}  // namespace trellis::dns
