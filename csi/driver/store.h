// The driver's crash-safe metadata: one JSON record per volume, snapshot,
// group snapshot and node-side volume (staging and publishes), each
// replaced atomically (temp file, fsync, rename, fsync dir). Records carry
// a state so that work a kill -9 interrupted is recognised and undone at
// start-up. The store itself is not locked: callers serialise per id.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/base/result.h"

namespace trellis::csi {

// "creating": the record was written before the work; "ready": done.
enum class RecordState { kCreating, kReady };

struct VolumeRecord {
  std::string id;
  std::string name;
  int64_t capacity = 0;
  RecordState state = RecordState::kCreating;
  std::string node;                       // the node whose pool holds it
  std::string fsType;                     // requested fs ("" for block-only)
  bool blockAccess = false, mountAccess = false;  // the access types CreateVolume asked for
  std::map<std::string, std::string> parameters;
  std::map<std::string, std::string> mutableParameters;
  std::string sourceSnapshot, sourceVolume;  // content source, at most one
  std::map<std::string, bool> published;  // node id -> readonly
  bool fsGrowPending = false;             // the file grew; the filesystem has not yet
  int64_t createdUnix = 0;
};

struct SnapshotRecord {
  std::string id;
  std::string name;
  std::string sourceVolume;
  int64_t size = 0;
  RecordState state = RecordState::kCreating;
  std::string groupId;
  int64_t createdUnixNanos = 0;
  std::map<std::string, std::string> parameters;
};

struct GroupRecord {
  std::string id;
  std::string name;
  std::vector<std::string> sourceVolumes;  // in request order
  std::vector<std::string> snapshots;      // parallel to sourceVolumes
  RecordState state = RecordState::kCreating;
  int64_t createdUnixNanos = 0;
  std::map<std::string, std::string> parameters;
};

struct PublishRecord {
  std::string targetPath;
  bool readonly = false;
  RecordState state = RecordState::kCreating;
};

// What this node did with a volume: the loop device, the staging mount,
// the publishes.
struct NodeRecord {
  std::string volumeId;
  std::string stagingPath;
  std::string device;
  std::string fsType;    // "" for raw block
  bool block = false;
  RecordState state = RecordState::kCreating;
  std::vector<PublishRecord> publishes;
};

class Store {
 public:
  // Creates <pool>/meta/{volumes,snapshots,groups,node} as needed.
  static base::Result<Store> open(const std::string& poolDir);

  const std::string& poolDir() const { return pool_; }
  std::string volumeImage(const std::string& id) const { return pool_ + "/volumes/" + id + ".img"; }
  std::string snapshotImage(const std::string& id) const { return pool_ + "/snapshots/" + id + ".img"; }

  std::optional<VolumeRecord> volume(const std::string& id) const;
  std::vector<VolumeRecord> volumes() const;  // sorted by id
  base::Status put(const VolumeRecord& r);
  base::Status removeVolume(const std::string& id);

  std::optional<SnapshotRecord> snapshot(const std::string& id) const;
  std::vector<SnapshotRecord> snapshots() const;
  base::Status put(const SnapshotRecord& r);
  base::Status removeSnapshot(const std::string& id);

  std::optional<GroupRecord> group(const std::string& id) const;
  std::vector<GroupRecord> groups() const;
  base::Status put(const GroupRecord& r);
  base::Status removeGroup(const std::string& id);

  std::optional<NodeRecord> node(const std::string& volumeId) const;
  std::vector<NodeRecord> nodes() const;
  base::Status put(const NodeRecord& r);
  base::Status removeNode(const std::string& volumeId);

 private:
  explicit Store(std::string pool) : pool_(std::move(pool)) {}
  std::string path(const char* kind, const std::string& id) const;
  std::optional<std::string> read(const char* kind, const std::string& id) const;
  std::vector<std::string> list(const char* kind) const;
  base::Status remove(const char* kind, const std::string& id);
  template <typename R, typename Decode>
  std::optional<R> get(const char* kind, const std::string& id, Decode decode) const;
  template <typename R, typename Decode>
  std::vector<R> all(const char* kind, Decode decode) const;
  base::Status write(const char* kind, const std::string& id, const boost::json::object& o);

  std::string pool_;
};

}  // namespace trellis::csi
