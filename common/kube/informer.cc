#include "common/kube/informer.h"

#include <sys/random.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "common/base/log.h"
#include "common/kube/object.h"

namespace trellis::kube {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

const base::Logger& log() {
  static base::Logger l("informer");
  return l;
}

int randomBetween(int lo, int hi) {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, 0) != sizeof r) r = 0;
  return lo + static_cast<int>(r % static_cast<uint32_t>(hi - lo + 1));
}

}  // namespace

IndexFunc labelIndex(std::string key) {
  return [key](const json::object& o) -> std::vector<std::string> {
    const json::value* m = o.if_contains("metadata");
    const json::value* labels = m && m->is_object() ? m->get_object().if_contains("labels") : nullptr;
    const json::value* v = labels && labels->is_object() ? labels->get_object().if_contains(key) : nullptr;
    if (!v || !v->is_string()) return {};
    return {std::string(v->get_string())};
  };
}

IndexFunc namespaceIndex() {
  return [](const json::object& o) -> std::vector<std::string> { return {std::string(objectNamespace(o))}; };
}

std::string sliceServiceKey(const json::object& slice) {
  std::string_view svc = str(slice, {"metadata", "labels", "kubernetes.io/service-name"});
  return svc.empty() ? std::string() : std::string(objectNamespace(slice)) + "/" + std::string(svc);
}

IndexFunc sliceServiceIndex() {
  return [](const json::object& s) {
    std::string key = sliceServiceKey(s);
    return key.empty() ? std::vector<std::string>() : std::vector<std::string>{std::move(key)};
  };
}

struct Informer::Impl : std::enable_shared_from_this<Informer::Impl> {
  Client& client;
  Resource resource;
  InformerOptions options;

  mutable std::mutex mu;  // guards the cache, indexes, handlers, state below
  mutable std::condition_variable cv;
  // Without keepObjects an item holds no object, only its resourceVersion;
  // objectOf() makes the stub callers see.
  struct Item {
    ObjectPtr obj;
    std::string resourceVersion;
  };
  std::map<std::string, Item> items;
  std::map<std::string, IndexFunc> indexFuncs;
  // index name -> value -> keys
  std::map<std::string, std::map<std::string, std::set<std::string>>> indexes;
  std::vector<EventHandler> handlers;
  std::string resourceVersion;
  bool synced = false;
  bool stopping = false;
  bool started = false;
  Stats stats;
  std::thread thread;
  std::unique_ptr<Client::Watch> watch;  // the open stream, for stop()

  Impl(Client& c, Resource r, InformerOptions o) : client(c), resource(std::move(r)), options(std::move(o)) {}

  // ---- cache (mu held) ----
  void unindex(const std::string& key, const json::object& obj) {
    for (auto& [name, fn] : indexFuncs) {
      for (const std::string& v : fn(obj)) {
        auto& byValue = indexes[name];
        auto it = byValue.find(v);
        if (it == byValue.end()) continue;
        it->second.erase(key);
        if (it->second.empty()) byValue.erase(it);
      }
    }
  }
  void index(const std::string& key, const json::object& obj) {
    for (auto& [name, fn] : indexFuncs) {
      for (const std::string& v : fn(obj)) indexes[name][v].insert(key);
    }
  }
  // The object of an item: itself, or (without keepObjects) a stub with its
  // name, namespace and resourceVersion.
  static ObjectPtr objectOf(const std::string& key, const Item& item) {
    if (item.obj) return item.obj;
    json::object meta;
    size_t slash = key.find('/');
    if (slash != std::string::npos) meta["namespace"] = key.substr(0, slash);
    meta["name"] = slash == std::string::npos ? key : key.substr(slash + 1);
    meta["resourceVersion"] = item.resourceVersion;
    return std::make_shared<const json::object>(json::object{{"metadata", std::move(meta)}});
  }
  // Puts `obj` in the cache; returns the previous version (null if new).
  ObjectPtr upsert(const ObjectPtr& obj) {
    std::string key = objectKey(*obj);
    Item item{options.keepObjects ? obj : nullptr, std::string(objectResourceVersion(*obj))};
    ObjectPtr old;
    auto it = items.find(key);
    if (it != items.end()) {
      old = objectOf(key, it->second);
      if (options.keepObjects) unindex(key, *old);
      it->second = std::move(item);
    } else {
      items.emplace(key, std::move(item));
    }
    if (options.keepObjects) index(key, *obj);
    return old;
  }
  ObjectPtr erase(const std::string& key) {
    auto it = items.find(key);
    if (it == items.end()) return nullptr;
    ObjectPtr old = objectOf(key, it->second);
    if (options.keepObjects) unindex(key, *old);
    items.erase(it);
    return old;
  }

  // ---- notifications (called without mu, on the informer thread) ----
  std::vector<EventHandler> handlersCopy() {
    std::lock_guard g(mu);
    return handlers;
  }
  void notifyAdd(const ObjectPtr& o) {
    for (auto& h : handlersCopy()) {
      if (h.onAdd) h.onAdd(o);
    }
  }
  void notifyUpdate(const ObjectPtr& a, const ObjectPtr& b) {
    for (auto& h : handlersCopy()) {
      if (h.onUpdate) h.onUpdate(a, b);
    }
  }
  void notifyDelete(const ObjectPtr& o) {
    for (auto& h : handlersCopy()) {
      if (h.onDelete) h.onDelete(o);
    }
  }

  bool sleepUnlessStopped(std::chrono::milliseconds d) {
    std::unique_lock g(mu);
    return !cv.wait_for(g, d, [&] { return stopping; });
  }

  // A full LIST, reconciled against the cache. False when stopping or failed.
  // Page by page: each page's objects go to the cache and the handlers before
  // the next is read, so a large list never sits in memory whole.
  bool relist() {
    ListOptions lo;
    lo.labelSelector = options.labelSelector;
    lo.fieldSelector = options.fieldSelector;
    lo.limit = options.pageSize;
    std::set<std::string> seen;
    std::string listRevision;
    {
      std::lock_guard g(mu);
      ++stats.lists;
    }
    while (true) {
      auto page = client.list(resource, options.ns, lo);
      if (!page) {
        log().warn("list failed", {{"resource", resource.id()}, {"error", page.error().message()}});
        return false;
      }
      if (listRevision.empty()) listRevision = page->resourceVersion;
      std::vector<std::pair<ObjectPtr, ObjectPtr>> updates;  // (old, new)
      std::vector<ObjectPtr> adds;
      {
        std::lock_guard g(mu);
        for (json::object& o : page->items) {
          auto obj = std::make_shared<const json::object>(std::move(o));
          std::string key = objectKey(*obj);
          seen.insert(key);
          auto it = items.find(key);
          if (it != items.end() && it->second.resourceVersion == objectResourceVersion(*obj)) continue;
          ObjectPtr old = upsert(obj);
          if (old) updates.emplace_back(old, obj);
          else adds.push_back(obj);
        }
      }
      page->items.clear();
      for (auto& o : adds) notifyAdd(o);
      for (auto& [a, b] : updates) notifyUpdate(a, b);
      if (page->continueToken.empty()) break;
      lo.continueToken = page->continueToken;
    }
    std::vector<ObjectPtr> deletes;
    {
      std::lock_guard g(mu);
      for (auto it = items.begin(); it != items.end();) {
        if (seen.count(it->first)) {
          ++it;
          continue;
        }
        ObjectPtr gone = objectOf(it->first, it->second);
        std::string key = it->first;
        ++it;
        erase(key);
        deletes.push_back(gone);
      }
      resourceVersion = listRevision;
    }
    for (auto& o : deletes) notifyDelete(o);
    {
      std::lock_guard g(mu);
      synced = true;
    }
    cv.notify_all();
    return true;
  }

  enum class WatchEnd { kResume, kRelist, kStopped };

  // One watch stream from resourceVersion, until it ends.
  WatchEnd watchOnce() {
    ListOptions lo;
    lo.labelSelector = options.labelSelector;
    lo.fieldSelector = options.fieldSelector;
    lo.allowWatchBookmarks = options.bookmarks;
    lo.timeoutSeconds = options.watchTimeoutSeconds > 0 ? options.watchTimeoutSeconds : randomBetween(300, 600);
    if (options.resync.count() > 0) {
      // Resyncs run between watch streams (so handlers never run on two
      // threads at once): a stream lasts at most one resync period.
      int period = static_cast<int>((options.resync.count() + 999) / 1000);
      lo.timeoutSeconds = std::min(lo.timeoutSeconds, std::max(1, period));
    }
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      base::Status status;
      bool gone = false;
    };
    auto sh = std::make_shared<Shared>();
    auto self = shared_from_this();
    {
      std::lock_guard g(mu);
      if (stopping) return WatchEnd::kStopped;
      lo.resourceVersion = resourceVersion;
      ++stats.watches;
    }
    // Events are applied here on the HTTP client's thread, in order; handlers
    // run there too (one stream per informer, so per-informer order holds).
    auto w = client.watch(
        resource, options.ns, lo,
        [self, sh](WatchEvent ev) {
          if (ev.type == WatchEvent::Type::kError) {
            const json::value* code = ev.object.if_contains("code");
            std::lock_guard g(sh->mu);
            sh->gone = code && code->is_int64() && code->get_int64() == 410;
            return;
          }
          self->apply(std::move(ev));
        },
        [sh](base::Status st) {
          std::lock_guard g(sh->mu);
          sh->done = true;
          sh->status = std::move(st);
          sh->cv.notify_all();
        });
    {
      std::lock_guard g(mu);
      watch = std::move(w);
      if (stopping) watch->stop();
    }
    {
      std::unique_lock g(sh->mu);
      sh->cv.wait(g, [&] { return sh->done; });
    }
    {
      std::lock_guard g(mu);
      watch.reset();
      if (stopping) return WatchEnd::kStopped;
    }
    if (sh->gone || (!sh->status && sh->status.error().code() == base::ErrorCode::kOutOfRange)) {
      std::lock_guard g(mu);
      ++stats.gone;
      return WatchEnd::kRelist;
    }
    if (!sh->status) {
      log().debug("watch ended", {{"resource", resource.id()}, {"error", sh->status.error().message()}});
      return WatchEnd::kRelist;  // a failed stream: the revision may be stale; relist after backoff
    }
    return WatchEnd::kResume;  // the server ended it (timeout): resume from the last revision
  }

  void apply(WatchEvent ev) {
    auto obj = std::make_shared<const json::object>(std::move(ev.object));
    std::string rv(objectResourceVersion(*obj));
    ObjectPtr old;
    bool notify = true;
    {
      std::lock_guard g(mu);
      ++stats.events;
      if (!rv.empty()) resourceVersion = rv;
      if (ev.type == WatchEvent::Type::kBookmark) return;
      if (ev.type == WatchEvent::Type::kDeleted) {
        old = erase(objectKey(*obj));
        notify = old != nullptr;
      } else {
        auto it = items.find(objectKey(*obj));
        if (it != items.end() && it->second.resourceVersion == rv) return;  // already have it
        old = upsert(obj);
      }
    }
    if (!notify) return;
    if (ev.type == WatchEvent::Type::kDeleted) notifyDelete(obj);
    else if (old) notifyUpdate(old, obj);
    else notifyAdd(obj);
  }

  void run() {
    auto backoff = 100ms;
    auto lastResync = std::chrono::steady_clock::now();
    bool needList = true;
    while (true) {
      {
        std::lock_guard g(mu);
        if (stopping) return;
      }
      if (needList) {
        if (!relist()) {
          if (!sleepUnlessStopped(backoff)) return;
          backoff = std::min<std::chrono::milliseconds>(backoff * 2, 10s);
          continue;
        }
        needList = false;
        backoff = 100ms;
      }
      if (options.resync.count() > 0 && std::chrono::steady_clock::now() - lastResync >= options.resync) {
        lastResync = std::chrono::steady_clock::now();
        for (const ObjectPtr& o : snapshot()) notifyUpdate(o, o);
      }
      WatchEnd end = watchOnce();
      if (end == WatchEnd::kStopped) return;
      if (end == WatchEnd::kRelist) {
        needList = true;
        if (!sleepUnlessStopped(backoff)) return;
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 10s);
      }
    }
  }

  std::vector<ObjectPtr> snapshot() const {
    std::lock_guard g(mu);
    std::vector<ObjectPtr> out;
    out.reserve(items.size());
    for (const auto& [k, v] : items) out.push_back(objectOf(k, v));
    return out;
  }
};

Informer::Informer(Client& client, Resource resource, InformerOptions options)
    : impl_(std::make_shared<Impl>(client, std::move(resource), std::move(options))) {}

Informer::~Informer() { stop(); }

void Informer::addHandler(EventHandler handler) {
  std::vector<ObjectPtr> existing;
  {
    std::lock_guard g(impl_->mu);
    impl_->handlers.push_back(handler);
    if (impl_->synced) {
      for (const auto& [k, v] : impl_->items) existing.push_back(Impl::objectOf(k, v));
    }
  }
  if (handler.onAdd) {
    for (const ObjectPtr& o : existing) handler.onAdd(o);
  }
}

void Informer::addIndex(const std::string& name, IndexFunc fn) {
  std::lock_guard g(impl_->mu);
  impl_->indexFuncs[name] = fn;
  if (!impl_->options.keepObjects) return;  // stubs have nothing to index
  for (const auto& [k, v] : impl_->items) {
    for (const std::string& value : fn(*v.obj)) impl_->indexes[name][value].insert(k);
  }
}

void Informer::start() {
  std::lock_guard g(impl_->mu);
  if (impl_->started) return;
  impl_->started = true;
  impl_->thread = std::thread([impl = impl_] { impl->run(); });
}

void Informer::stop() {
  {
    std::lock_guard g(impl_->mu);
    impl_->stopping = true;
    if (impl_->watch) impl_->watch->stop();
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool Informer::hasSynced() const {
  std::lock_guard g(impl_->mu);
  return impl_->synced;
}

bool Informer::waitForSync(std::chrono::milliseconds timeout) const {
  std::unique_lock g(impl_->mu);
  return impl_->cv.wait_for(g, timeout, [&] { return impl_->synced; });
}

ObjectPtr Informer::get(const std::string& key) const {
  std::lock_guard g(impl_->mu);
  auto it = impl_->items.find(key);
  return it == impl_->items.end() ? nullptr : Impl::objectOf(key, it->second);
}

std::vector<ObjectPtr> Informer::list() const { return impl_->snapshot(); }

std::vector<ObjectPtr> Informer::byIndex(const std::string& index, const std::string& value) const {
  std::lock_guard g(impl_->mu);
  std::vector<ObjectPtr> out;
  auto idx = impl_->indexes.find(index);
  if (idx == impl_->indexes.end()) return out;
  auto keys = idx->second.find(value);
  if (keys == idx->second.end()) return out;
  for (const std::string& k : keys->second) {
    if (auto it = impl_->items.find(k); it != impl_->items.end()) out.push_back(Impl::objectOf(k, it->second));
  }
  return out;
}

size_t Informer::size() const {
  std::lock_guard g(impl_->mu);
  return impl_->items.size();
}

std::string Informer::lastSyncResourceVersion() const {
  std::lock_guard g(impl_->mu);
  return impl_->resourceVersion;
}

const Resource& Informer::resource() const { return impl_->resource; }

Informer::Stats Informer::stats() const {
  std::lock_guard g(impl_->mu);
  return impl_->stats;
}

SharedInformers::SharedInformers(Client& client, std::chrono::milliseconds defaultResync)
    : client_(client), resync_(defaultResync) {}

SharedInformers::~SharedInformers() { stop(); }

std::shared_ptr<Informer> SharedInformers::get(const Resource& resource, const std::string& ns) {
  std::lock_guard g(mu_);
  std::string key = resource.id() + "@" + ns;
  auto it = informers_.find(key);
  if (it != informers_.end()) return it->second;
  InformerOptions o;
  o.ns = ns;
  o.resync = resync_;
  auto inf = std::make_shared<Informer>(client_, resource, o);
  informers_.emplace(key, inf);
  if (started_) inf->start();
  return inf;
}

void SharedInformers::start() {
  std::lock_guard g(mu_);
  started_ = true;
  for (auto& [k, inf] : informers_) inf->start();
}

bool SharedInformers::waitForSync(std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::shared_ptr<Informer>> all;
  {
    std::lock_guard g(mu_);
    for (auto& [k, inf] : informers_) all.push_back(inf);
  }
  for (auto& inf : all) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !inf->waitForSync(left)) return false;
  }
  return true;
}

void SharedInformers::stop() {
  std::vector<std::shared_ptr<Informer>> all;
  {
    std::lock_guard g(mu_);
    for (auto& [k, inf] : informers_) all.push_back(inf);
  }
  for (auto& inf : all) inf->stop();
}

}  // namespace trellis::kube
