#include "apiserver-lite/storage/watch_cache.h"

namespace trellis::apiserver::storage {

using base::ErrorCode;
using base::makeError;

WatchCache::WatchCache(Store& store, size_t historySize) : store_(store), historySize_(historySize) {}

WatchCache::~WatchCache() { store_.setListener(nullptr); }

base::Status WatchCache::start() {
  std::lock_guard g(mu_);
  // Subscribe before loading: commits that land in between are applied by
  // onCommit only if newer than the snapshot (it waits on mu_ meanwhile).
  store_.setListener([this](const std::vector<Event>& events) { onCommit(events); });
  auto snap = store_.list("");
  if (!snap) return std::move(snap).error().wrap("priming the watch cache");
  for (KeyValue& kv : snap->items) {
    std::string key = kv.key;
    objects_.emplace(std::move(key), std::move(kv));
  }
  revision_ = snap->revision;
  return {};
}

void WatchCache::onCommit(const std::vector<Event>& events) {
  std::lock_guard g(mu_);
  std::vector<Event> fresh;
  for (const Event& e : events) {
    if (e.kv.modRevision <= revision_) continue;  // already in the snapshot start() loaded
    if (e.type == Event::Type::kDelete) {
      objects_.erase(e.kv.key);
    } else {
      objects_[e.kv.key] = e.kv;
    }
    revision_ = e.kv.modRevision;
    history_.push_back(e);
    if (history_.size() > historySize_) history_.pop_front();
    fresh.push_back(e);
  }
  if (fresh.empty()) return;
  for (auto& [id, w] : watchers_) {
    std::vector<Event> mine;
    for (const Event& e : fresh) {
      if (under(e.kv.key, w.prefix)) mine.push_back(e);
    }
    if (!mine.empty()) w.fn(mine);
  }
}

Snapshot WatchCache::list(const std::string& prefix) const {
  std::lock_guard g(mu_);
  Snapshot snap;
  snap.revision = revision_;
  for (auto it = objects_.lower_bound(prefix); it != objects_.end() && under(it->first, prefix); ++it) {
    snap.items.push_back(it->second);
  }
  return snap;
}

base::Result<KeyValue> WatchCache::get(const std::string& key) const {
  std::lock_guard g(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return makeError(ErrorCode::kNotFound, "key {} not found", key);
  return it->second;
}

Revision WatchCache::revision() const {
  std::lock_guard g(mu_);
  return revision_;
}

base::Result<WatchCache::WatchId> WatchCache::watch(const std::string& prefix, Revision from, WatchFn fn) {
  std::lock_guard g(mu_);
  if (from > revision_) {
    return makeError(ErrorCode::kOutOfRange, "revision {} is newer than the current revision {}", from, revision_);
  }
  std::vector<Event> replay;
  if (from > 0 && from < revision_) {
    Revision oldestInRing = history_.empty() ? revision_ + 1 : history_.front().kv.modRevision;
    if (from + 1 >= oldestInRing) {
      for (const Event& e : history_) {
        if (e.kv.modRevision > from && under(e.kv.key, prefix)) replay.push_back(e);
      }
    } else {
      // Older than the ring: the store's history, up to what the cache has seen.
      Revision after = from;
      while (after < revision_) {
        auto batch = store_.eventsSince(after, 10'000);
        if (!batch) return std::move(batch).error();
        if (batch->empty()) break;
        for (Event& e : *batch) {
          if (e.kv.modRevision > revision_) break;
          if (under(e.kv.key, prefix)) replay.push_back(std::move(e));
        }
        after = batch->back().kv.modRevision;
      }
    }
  }
  if (!replay.empty()) fn(replay);
  WatchId id = nextId_++;
  watchers_.emplace(id, Watcher{prefix, std::move(fn)});
  return id;
}

bool WatchCache::atRevision(WatchId id, const std::function<void(Revision)>& fn) const {
  std::lock_guard g(mu_);
  if (!watchers_.count(id)) return false;
  fn(revision_);
  return true;
}

void WatchCache::compact(Revision upTo) {
  std::lock_guard g(mu_);
  while (!history_.empty() && history_.front().kv.modRevision <= upTo) history_.pop_front();
}

void WatchCache::unwatch(WatchId id) {
  std::lock_guard g(mu_);
  watchers_.erase(id);
}

size_t WatchCache::watchers() const {
  std::lock_guard g(mu_);
  return watchers_.size();
}

}  // namespace trellis::apiserver::storage
