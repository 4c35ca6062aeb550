// Informers: a local, indexed cache of one resource type kept equal to the
// server by list-then-watch, with handlers told of every change.
//
//   kube::SharedInformers informers(client);
//   auto pods = informers.get(kube::resources::kPods);       // one per resource per process
//   pods->addHandler({.onAdd = ..., .onUpdate = ..., .onDelete = ...});
//   pods->addIndex("node", [](const json::object& p) { return std::vector<std::string>{nodeName(p)}; });
//   informers.start();
//   informers.waitForSync(10s);
//   auto onNode = pods->byIndex("node", "node-a");
//
// How it stays right: a paged LIST at one revision, then a WATCH from that
// revision (with bookmarks, which move the revision on without events).
// When the stream ends it resumes from the last revision seen; a 410 Gone
// (the revision was compacted) or a failed resume relists, and the relist is
// reconciled against the cache: handlers see an add, update or delete for
// exactly what changed meanwhile, never a duplicate. Handlers run on the
// informer's own thread, in order; keep them short (hand keys to a
// WorkQueue). Objects are shared and immutable: copy before changing.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/kube/client.h"

namespace trellis::kube {

using ObjectPtr = std::shared_ptr<const boost::json::object>;

struct EventHandler {
  std::function<void(const ObjectPtr& obj)> onAdd;
  // Also called on every resync (old == new).
  std::function<void(const ObjectPtr& oldObj, const ObjectPtr& newObj)> onUpdate;
  std::function<void(const ObjectPtr& obj)> onDelete;
};

// The values an object has for an index ("node" -> {"node-a"}).
using IndexFunc = std::function<std::vector<std::string>(const boost::json::object&)>;

// An index of objects by the value of one label ("app" -> {"web"}).
IndexFunc labelIndex(std::string key);
// An index by namespace.
IndexFunc namespaceIndex();
// "ns/service" of an EndpointSlice (its kubernetes.io/service-name label), or
// "" when it has none; and an index of slices by it.
std::string sliceServiceKey(const boost::json::object& slice);
IndexFunc sliceServiceIndex();

struct InformerOptions {
  std::string ns;  // "" for all namespaces (and for cluster-scoped resources)
  std::string labelSelector;
  std::string fieldSelector;
  // Every period each cached object goes to onUpdate(old == new); 0: never.
  // (Whole seconds; watch streams are cut to this length to make room.)
  std::chrono::milliseconds resync{0};
  int64_t pageSize = 500;
  int watchTimeoutSeconds = 0;  // the server ends each watch after this; 0: 5-10 min at random
  bool bookmarks = true;        // allowWatchBookmarks (keeps the resume revision fresh)
  // false: the cache keeps only each object's key and resourceVersion (what
  // list/watch bookkeeping needs). Handlers still get whole objects on add
  // and update; onUpdate's old, a relist's onDelete and get/list see stubs
  // (metadata.name, .namespace, .resourceVersion); indexes stay empty. For
  // components that keep their own compact state of many objects (trellis-dns).
  bool keepObjects = true;
};

class Informer {
 public:
  Informer(Client& client, Resource resource, InformerOptions options = {});
  ~Informer();  // stops
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Before start(): handlers and indexes. (Handlers added later get the
  // current objects as adds first.)
  void addHandler(EventHandler handler);
  void addIndex(const std::string& name, IndexFunc fn);

  void start();  // idempotent; runs on its own thread
  void stop();   // ends the watch and joins

  bool hasSynced() const;  // the first LIST is in the cache and handlers saw it
  bool waitForSync(std::chrono::milliseconds timeout) const;

  // Cache reads (thread-safe, never block on the network).
  ObjectPtr get(const std::string& key) const;  // "ns/name" or "name"
  std::vector<ObjectPtr> list() const;
  std::vector<ObjectPtr> byIndex(const std::string& index, const std::string& value) const;
  size_t size() const;
  std::string lastSyncResourceVersion() const;

  const Resource& resource() const;

  // Counters for tests and metrics.
  struct Stats {
    uint64_t lists = 0;     // full LISTs (1 + relists)
    uint64_t watches = 0;   // watch streams opened
    uint64_t events = 0;    // watch events applied
    uint64_t gone = 0;      // 410s seen
  };
  Stats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// One informer per (resource, namespace) per process, shared by every
// component part that asks for it.
class SharedInformers {
 public:
  explicit SharedInformers(Client& client, std::chrono::milliseconds defaultResync = std::chrono::milliseconds(0));
  ~SharedInformers();
  std::shared_ptr<Informer> get(const Resource& resource, const std::string& ns = "");
  void start();  // starts every informer asked for so far (and later ones on get)
  bool waitForSync(std::chrono::milliseconds timeout) const;
  void stop();

 private:
  Client& client_;
  std::chrono::milliseconds resync_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Informer>> informers_;
  bool started_ = false;
};

}  // namespace trellis::kube
