// The API server's storage interface: a key-value store with one global,
// strictly increasing revision, an append-only history for watch replay, and
// compaction. SqliteStore is the embedded default; an etcd backend implements
// the same interface.
//
// Writes are asynchronous: write() queues the operation and calls `done`
// once it is durable (or failed), so a server thread never blocks on fsync and
// concurrent writers share commits.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::apiserver::storage {

using Revision = int64_t;

struct KeyValue {
  std::string key;
  std::string value;
  Revision createRevision = 0;
  Revision modRevision = 0;
};

struct Event {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  // kPut: the new value. kDelete: the last value before deletion, with
  // modRevision set to the revision of the delete.
  KeyValue kv;
  bool created = false;  // a put that created the key
};

struct Write {
  enum class Op { kCreate, kUpdate, kDelete };
  Op op = Op::kCreate;
  std::string key;
  std::string value;      // create/update
  Revision expected = 0;  // update/delete: the modRevision the key must have (0: any)
};

using WriteCallback = std::function<void(base::Result<KeyValue>)>;
using CommitListener = std::function<void(const std::vector<Event>&)>;

struct Snapshot {
  std::vector<KeyValue> items;  // sorted by key
  Revision revision = 0;
};

// Error codes: kAlreadyExists (create of an existing key), kNotFound,
// kConflict (expected revision differs), kOutOfRange (a compacted revision:
// the API server answers 410 Gone), kIo/kUnavailable (the store failed).
class Store {
 public:
  virtual ~Store() = default;

  // Applies `w` durably, then calls `done` on the store's commit thread (a
  // delete returns the deleted value with the delete's revision).
  virtual void write(Write w, WriteCallback done) = 0;
  // Latest value of one key.
  virtual base::Result<KeyValue> get(const std::string& key) = 0;
  // Every live key under `prefix` at `at` (0: the latest), sorted by key.
  virtual base::Result<Snapshot> list(const std::string& prefix, Revision at = 0) = 0;
  // Events with revision > `after`, in order, at most `max`.
  virtual base::Result<std::vector<Event>> eventsSince(Revision after, size_t max) = 0;
  virtual Revision currentRevision() = 0;
  virtual Revision compactedRevision() = 0;
  // Drops history at and below `upTo` that no revision after it needs.
  virtual base::Status compact(Revision upTo) = 0;
  // Called on the commit thread after each commit, events in revision order,
  // before the writers' callbacks. Replacing it (or clearing it with nullptr)
  // waits for a call in progress to return.
  virtual void setListener(CommitListener listener) = 0;
};

// "a/b" -> the smallest string greater than every string starting with "a/b".
std::string prefixEnd(const std::string& prefix);

}  // namespace trellis::apiserver::storage
