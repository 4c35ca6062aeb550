// An in-memory cache in front of a Store: every live object and a ring of
// recent events, so lists and watches are served without touching the store.
//
// It subscribes to the store's commit listener, so it sees every committed
// event exactly once, in revision order. A watch replays the events after its
// starting revision (from the ring, or from the store's history when older)
// and is registered under the same lock the listener takes: nothing is missed
// or delivered twice between replay and live events. A starting revision
// older than what the store still keeps gets kOutOfRange (the API's 410 Gone).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "apiserver-lite/storage/store.h"

namespace trellis::apiserver::storage {

class WatchCache {
 public:
  using WatchId = uint64_t;
  // Receives events in revision order. Called with the cache locked (on the
  // store's commit thread, or on the caller's thread during replay): keep it
  // short and never call back into the cache.
  using WatchFn = std::function<void(const std::vector<Event>& events)>;

  explicit WatchCache(Store& store, size_t historySize = 50'000);
  ~WatchCache();
  WatchCache(const WatchCache&) = delete;
  WatchCache& operator=(const WatchCache&) = delete;

  // Loads every object from the store and starts following its commits.
  base::Status start();

  // Every live key under `prefix`, sorted, at the cache's current revision.
  Snapshot list(const std::string& prefix) const;
  base::Result<KeyValue> get(const std::string& key) const;
  Revision revision() const;

  // Events under `prefix` with revision > `from` (from = 0: only new ones).
  base::Result<WatchId> watch(const std::string& prefix, Revision from, WatchFn fn);
  void unwatch(WatchId id);
  // The store was compacted up to `upTo`: history at or below it is dropped
  // here too, so a watch from there gets Gone as the store would answer.
  void compact(Revision upTo);
  // Calls fn(revision) in order with the watcher's events: every event up to
  // `revision` under its prefix has been handed to it before. For bookmarks.
  // False (fn not called) when the watcher is gone.
  bool atRevision(WatchId id, const std::function<void(Revision)>& fn) const;
  size_t watchers() const;

 private:
  void onCommit(const std::vector<Event>& events);
  static bool under(const std::string& key, const std::string& prefix) { return key.compare(0, prefix.size(), prefix) == 0; }

  struct Watcher {
    std::string prefix;
    WatchFn fn;
  };

  Store& store_;
  size_t historySize_;
  mutable std::mutex mu_;
  std::map<std::string, KeyValue> objects_;
  std::deque<Event> history_;  // the most recent events, oldest first
  Revision revision_ = 0;
  std::unordered_map<WatchId, Watcher> watchers_;
  WatchId nextId_ = 1;
};

}  // namespace trellis::apiserver::storage
