// CSI Controller and GroupController services over the node's pool:
// volumes are sparse files, snapshots and clones reflink (or sparse)
// copies, attachments records; all state in the crash-safe Store.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include "common/base/log.h"
#include "common/linux/storage.h"
#include "csi/driver/services.h"

namespace trellis::csi {

namespace fs = std::filesystem;
using grpc::StatusCode;

namespace {


int64_t nowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::map<std::string, std::string> toMap(const google::protobuf::Map<std::string, std::string>& m) {
  return {m.begin(), m.end()};
}

void fillVolume(const Driver& d, const VolumeRecord& r, v1::Volume* out) {
  out->set_capacity_bytes(r.capacity);
  out->set_volume_id(r.id);
  if (!r.sourceSnapshot.empty()) out->mutable_content_source()->mutable_snapshot()->set_snapshot_id(r.sourceSnapshot);
  if (!r.sourceVolume.empty()) out->mutable_content_source()->mutable_volume()->set_volume_id(r.sourceVolume);
  (*out->add_accessible_topology()->mutable_segments())[kTopologyKey] = r.node;
}

void fillSnapshot(const SnapshotRecord& r, v1::Snapshot* out) {
  out->set_size_bytes(r.size);
  out->set_snapshot_id(r.id);
  out->set_source_volume_id(r.sourceVolume);
  out->mutable_creation_time()->set_seconds(r.createdUnixNanos / 1000000000);
  out->mutable_creation_time()->set_nanos(static_cast<int32_t>(r.createdUnixNanos % 1000000000));
  out->set_ready_to_use(r.state == RecordState::kReady);
  out->set_group_snapshot_id(r.groupId);
}

v1::VolumeCondition condition(Driver& d, const VolumeRecord& r) {
  v1::VolumeCondition c;
  struct stat st{};
  if (::stat(d.store().volumeImage(r.id).c_str(), &st) != 0) {
    c.set_abnormal(true);
    c.set_message("the volume's backing file is missing from the pool");
  } else if (st.st_size < r.capacity) {
    c.set_abnormal(true);
    c.set_message("the volume's backing file is smaller than its capacity");
  } else {
    c.set_message("ok");
  }
  return c;
}

// Creates `image`: a sparse file of `size` bytes, or a copy of `source`
// grown to `size`; fsynced with its directory. The record that makes it a
// volume (or snapshot) is written after it, so an image without a record is
// an interrupted create, which start-up recovery deletes.
base::Status makeImage(const std::string& image, const std::string& source, int64_t size) {
  std::error_code ec;
  fs::remove(image, ec);  // a failed earlier attempt's (no record names it)
  if (!source.empty()) {
    bool reflinked = false;
    if (auto st = sys::cloneFile(source, image, &reflinked); !st) return st;
  }
  int fd = ::open(image.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return base::Error::fromErrno(errno, "creating " + image);
  struct stat st{};
  ::fstat(fd, &st);
  int rc = st.st_size < size ? ::ftruncate(fd, size) : 0;
  int err = errno;
  if (rc == 0) rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0) {
    fs::remove(image, ec);
    return base::Error::fromErrno(err, "sizing " + image);
  }
  return sys::fsyncDir(fs::path(image).parent_path().string());
}

// Removes a pool file and the record naming it, in the order that survives
// a crash at any point: the record is marked "creating" first, so start-up
// recovery finishes the removal if the process dies half-way.
template <typename Record, typename Remove>
base::Status removeWithRecord(Store& store, Record rec, const std::string& image, Remove removeRecord) {
  rec.state = RecordState::kCreating;
  if (auto st = store.put(rec); !st) return st;
  if (::unlink(image.c_str()) != 0 && errno != ENOENT) return base::Error::fromErrno(errno, "removing " + image);
  if (auto st = sys::fsyncDir(fs::path(image).parent_path().string()); !st) return st;
  return removeRecord();
}

// Applies a volume's readAheadKB to its loop device, when attached.
void applyReadAhead(Driver& d, const VolumeRecord& r) {
  auto it = r.mutableParameters.find("readAheadKB");
  if (it == r.mutableParameters.end()) return;
  auto dev = sys::loopFind(d.store().volumeImage(r.id));
  if (!dev) return;
  std::ofstream out("/sys/block/" + fs::path(*dev).filename().string() + "/queue/read_ahead_kb");
  out << it->second;
}

// A page token: the id the next page starts at, of the given kind.
bool validToken(const std::string& token, const std::string& prefix) {
  if (token.size() != prefix.size() + 33 || token.rfind(prefix + "-", 0) != 0) return false;
  return token.find_first_not_of("0123456789abcdef", prefix.size() + 1) == std::string::npos;
}

}  // namespace

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*, const v1::CreateVolumeRequest* req,
                                             v1::CreateVolumeResponse* resp) {
  if (req->name().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "name is required");
  if (!validName(req->name())) return grpcError(StatusCode::INVALID_ARGUMENT, "name is longer than 128 bytes or has control characters");
  if (req->volume_capabilities().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_capabilities are required");
  std::string fsType;
  for (const auto& cap : req->volume_capabilities()) {
    if (auto why = unsupportedCapability(cap); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
    if (cap.has_mount() && !cap.mount().fs_type().empty()) {
      if (!fsType.empty() && fsType != cap.mount().fs_type()) {
        return grpcError(StatusCode::INVALID_ARGUMENT, "volume_capabilities ask for two filesystems");
      }
      fsType = cap.mount().fs_type();
    }
  }
  if (auto why = unknownParameter(req->parameters(), false); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  if (auto why = unknownParameter(req->mutable_parameters(), true); !why.empty()) {
    return grpcError(StatusCode::INVALID_ARGUMENT, "mutable_parameters: " + why);
  }
  // Topology: the volume can live only on this node.
  const auto& node = d_.options().nodeId;
  if (req->has_accessibility_requirements()) {
    const auto& reqs = req->accessibility_requirements();
    auto matches = [&](const v1::Topology& t) {
      for (const auto& [k, v] : t.segments()) {
        if (k != kTopologyKey || v != node) return false;
      }
      return true;
    };
    bool ok = reqs.requisite().empty() && reqs.preferred().empty();
    for (const auto& t : reqs.requisite()) ok = ok || matches(t);
    if (reqs.requisite().empty()) {
      for (const auto& t : reqs.preferred()) ok = ok || matches(t);
    }
    if (!ok) {
      return grpcError(StatusCode::RESOURCE_EXHAUSTED,
                       "accessibility_requirements exclude node " + node + ", the only place this pool can provision");
    }
  }
  const v1::CapacityRange* range = req->has_capacity_range() ? &req->capacity_range() : nullptr;
  // The smallest filesystem each mkfs makes: xfs 300 MiB, btrfs 109 MiB (114294784 bytes).
  bool mount = std::any_of(req->volume_capabilities().begin(), req->volume_capabilities().end(),
                           [](const v1::VolumeCapability& c) { return c.has_mount(); });
  bool block = std::any_of(req->volume_capabilities().begin(), req->volume_capabilities().end(),
                           [](const v1::VolumeCapability& c) { return c.has_block(); });
  const std::string& stagedFs = fsType.empty() && mount ? d_.options().defaultFsType : fsType;
  int64_t minimum = stagedFs == "xfs" ? 300 * kMiB : stagedFs == "btrfs" ? 109 * kMiB : 0;
  auto size = sizeFor(range, d_.options().defaultVolumeSize, minimum);
  if (!size) return toGrpc(size.error());

  // Content source.
  std::string sourceImage, sourceSnapshot, sourceVolume;
  int64_t sourceSize = 0;
  if (req->has_volume_content_source()) {
    const auto& src = req->volume_content_source();
    if (src.has_snapshot()) {
      sourceSnapshot = src.snapshot().snapshot_id();
      if (!Driver::validId(sourceSnapshot)) return grpcError(StatusCode::INVALID_ARGUMENT, "invalid source snapshot id");
      auto snap = d_.store().snapshot(sourceSnapshot);
      if (!snap || snap->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "snapshot " + sourceSnapshot + " not found");
      sourceImage = d_.store().snapshotImage(sourceSnapshot);
      sourceSize = snap->size;
    } else if (src.has_volume()) {
      sourceVolume = src.volume().volume_id();
      if (!Driver::validId(sourceVolume)) return grpcError(StatusCode::INVALID_ARGUMENT, "invalid source volume id");
      auto vol = d_.store().volume(sourceVolume);
      if (!vol || vol->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + sourceVolume + " not found");
      sourceImage = d_.store().volumeImage(sourceVolume);
      sourceSize = vol->capacity;
    } else {
      return grpcError(StatusCode::INVALID_ARGUMENT, "volume_content_source names neither a snapshot nor a volume");
    }
    if (!range || !range->required_bytes()) *size = std::max(*size, sourceSize);
    if (*size < sourceSize || (range && range->limit_bytes() && *size > range->limit_bytes())) {
      return grpcError(StatusCode::OUT_OF_RANGE, "the requested capacity is smaller than the source's " + std::to_string(sourceSize) + " bytes");
    }
  }

  std::string id = Driver::idFor("vol", req->name());
  std::vector<std::string> lockIds{id};
  if (!sourceVolume.empty()) lockIds.push_back(sourceVolume);
  auto guard = d_.locks().tryLock(lockIds);
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->name() + " or its source is in progress");

  auto params = toMap(req->parameters());
  if (auto existing = d_.store().volume(id); existing && existing->state == RecordState::kReady) {
    // Compatible: every access type asked for was asked for at creation
    // (records older than that field carry neither), the same parameters.
    bool accessKnown = existing->blockAccess || existing->mountAccess;
    bool sameAccess = !accessKnown || ((!block || existing->blockAccess) && (!mount || existing->mountAccess));
    bool same = existing->name == req->name() && inRange(existing->capacity, range) && existing->parameters == params &&
                existing->mutableParameters == toMap(req->mutable_parameters()) && sameAccess &&
                existing->sourceSnapshot == sourceSnapshot && existing->sourceVolume == sourceVolume &&
                (fsType.empty() || existing->fsType.empty() || existing->fsType == fsType);
    if (!same) return grpcError(StatusCode::ALREADY_EXISTS, "volume " + req->name() + " exists with different arguments");
    fillVolume(d_, *existing, resp->mutable_volume());
    return grpc::Status::OK;
  }

  VolumeRecord rec;
  rec.id = id;
  rec.name = req->name();
  rec.capacity = *size;
  rec.node = node;
  rec.fsType = fsType;
  rec.blockAccess = block;
  rec.mountAccess = mount;
  rec.parameters = std::move(params);
  rec.mutableParameters = toMap(req->mutable_parameters());
  rec.sourceSnapshot = sourceSnapshot;
  rec.sourceVolume = sourceVolume;
  rec.fsGrowPending = !sourceImage.empty() && *size > sourceSize;
  rec.createdUnix = nowNanos() / 1000000000;
  // Promise the capacity until the record (which then counts it) is written.
  auto reservation = d_.reserve(*size);
  if (!reservation) {
    return grpcError(StatusCode::RESOURCE_EXHAUSTED, "the pool cannot promise " + std::to_string(*size) + " more bytes (" +
                                                         std::to_string(d_.availableCapacity()) + " available)");
  }
  std::vector<std::string> frozen;
  if (!sourceVolume.empty()) {
    if (auto st = d_.freeze({sourceVolume}, &frozen); !st) return toGrpc(st.error());
  }
  auto made = makeImage(d_.store().volumeImage(id), sourceImage, *size);
  d_.thaw(frozen);
  if (!made) return toGrpc(made.error().wrap("creating volume {}", req->name()));
  rec.state = RecordState::kReady;
  if (auto st = d_.store().put(rec); !st) {
    std::error_code ec;
    fs::remove(d_.store().volumeImage(id), ec);
    return toGrpc(st.error());
  }
  logger().info("volume created", {{"volume", id}, {"name", rec.name}, {"bytes", rec.capacity}});
  fillVolume(d_, rec, resp->mutable_volume());
  return grpc::Status::OK;
}

grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*, const v1::DeleteVolumeRequest* req, v1::DeleteVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (!Driver::validId(id)) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto guard = d_.locks().tryLock({id});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + id + " is in progress");
  auto rec = d_.store().volume(id);
  if (!rec) return grpc::Status::OK;
  if (!rec->published.empty()) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + id + " is published to node " + rec->published.begin()->first);
  }
  if (auto n = d_.store().node(id)) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + id + " is staged at " + n->stagingPath);
  }
  auto st = removeWithRecord(d_.store(), *rec, d_.store().volumeImage(id), [&] { return d_.store().removeVolume(id); });
  if (!st) return toGrpc(st.error());
  logger().info("volume deleted", {{"volume", id}});
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerPublishVolume(grpc::ServerContext*, const v1::ControllerPublishVolumeRequest* req,
                                                        v1::ControllerPublishVolumeResponse* resp) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->node_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "node_id is required");
  if (!req->has_volume_capability()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_capability is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  if (auto why = unsupportedCapability(req->volume_capability()); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto rec = d_.store().volume(req->volume_id());
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  if (req->node_id() != rec->node) {
    return grpcError(StatusCode::NOT_FOUND, "node " + req->node_id() + " not found: volume " + rec->id +
                                                " lives in the pool of node " + rec->node + " and can be published only there");
  }
  const auto& fsType = req->volume_capability().has_mount() ? req->volume_capability().mount().fs_type() : std::string();
  if (!fsType.empty() && !rec->fsType.empty() && fsType != rec->fsType) {
    return grpcError(StatusCode::INVALID_ARGUMENT, "volume " + rec->id + " was created for " + rec->fsType + ", not " + fsType);
  }
  auto it = rec->published.find(req->node_id());
  if (it != rec->published.end()) {
    if (it->second != req->readonly()) {
      return grpcError(StatusCode::ALREADY_EXISTS, "volume " + rec->id + " is already published to " + req->node_id() +
                                                       (it->second ? " read-only" : " read-write"));
    }
  } else {
    if (int64_t max = d_.options().maxVolumesPerNode; max > 0) {
      int64_t attached = 0;
      for (const auto& v : d_.store().volumes()) attached += v.published.count(req->node_id());
      if (attached >= max) {
        return grpcError(StatusCode::RESOURCE_EXHAUSTED, "node " + req->node_id() + " already has " + std::to_string(attached) +
                                                             " volumes published (--max-volumes-per-node)");
      }
    }
    rec->published[req->node_id()] = req->readonly();
    if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
  }
  (*resp->mutable_publish_context())["trellis.dev/readonly"] = req->readonly() ? "true" : "false";
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerUnpublishVolume(grpc::ServerContext*, const v1::ControllerUnpublishVolumeRequest* req,
                                                          v1::ControllerUnpublishVolumeResponse*) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto rec = d_.store().volume(req->volume_id());
  // A volume that is gone is published nowhere: the spec's SHOULD is OK,
  // and a CO cleaning up after DeleteVolume relies on it.
  if (!rec) return grpc::Status::OK;
  size_t before = rec->published.size();
  if (req->node_id().empty()) {
    rec->published.clear();
  } else {
    rec->published.erase(req->node_id());
  }
  if (rec->published.size() != before) {
    if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::ValidateVolumeCapabilities(grpc::ServerContext*, const v1::ValidateVolumeCapabilitiesRequest* req,
                                                           v1::ValidateVolumeCapabilitiesResponse* resp) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->volume_capabilities().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_capabilities are required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto rec = d_.store().volume(req->volume_id());
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  for (const auto& cap : req->volume_capabilities()) {
    std::string why = unsupportedCapability(cap);
    if (why.empty() && cap.has_mount() && !cap.mount().fs_type().empty() && !rec->fsType.empty() && cap.mount().fs_type() != rec->fsType) {
      why = "the volume was created for " + rec->fsType;
    }
    if (!why.empty()) {
      resp->set_message(why);
      return grpc::Status::OK;
    }
  }
  if (auto why = unknownParameter(req->parameters(), false); !why.empty()) {
    resp->set_message(why);
    return grpc::Status::OK;
  }
  auto* confirmed = resp->mutable_confirmed();
  *confirmed->mutable_volume_capabilities() = req->volume_capabilities();
  *confirmed->mutable_volume_context() = req->volume_context();
  *confirmed->mutable_parameters() = req->parameters();
  *confirmed->mutable_mutable_parameters() = req->mutable_parameters();
  return grpc::Status::OK;
}

grpc::Status ControllerService::ListVolumes(grpc::ServerContext*, const v1::ListVolumesRequest* req, v1::ListVolumesResponse* resp) {
  if (req->max_entries() < 0) return grpcError(StatusCode::INVALID_ARGUMENT, "max_entries must not be negative");
  if (!req->starting_token().empty() && !validToken(req->starting_token(), "vol")) {
    return grpcError(StatusCode::ABORTED, "starting_token \"" + req->starting_token() + "\" is not a token this driver issued");
  }
  int count = 0;
  for (const auto& rec : d_.store().volumes()) {
    if (rec.state != RecordState::kReady || rec.id < req->starting_token()) continue;
    if (req->max_entries() && count == req->max_entries()) {
      resp->set_next_token(rec.id);
      break;
    }
    auto* e = resp->add_entries();
    fillVolume(d_, rec, e->mutable_volume());
    for (const auto& [node, ro] : rec.published) e->mutable_status()->add_published_node_ids(node);
    *e->mutable_status()->mutable_volume_condition() = condition(d_, rec);
    ++count;
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::GetCapacity(grpc::ServerContext*, const v1::GetCapacityRequest* req, v1::GetCapacityResponse* resp) {
  for (const auto& cap : req->volume_capabilities()) {
    if (!unsupportedCapability(cap).empty()) return grpc::Status::OK;  // nothing of that kind can be made: 0
  }
  if (auto why = unknownParameter(req->parameters(), false); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  if (req->has_accessible_topology()) {
    for (const auto& [k, v] : req->accessible_topology().segments()) {
      if (k != kTopologyKey || v != d_.options().nodeId) return grpc::Status::OK;
    }
  }
  int64_t available = d_.availableCapacity();
  resp->set_available_capacity(available);
  resp->mutable_maximum_volume_size()->set_value(available);
  resp->mutable_minimum_volume_size()->set_value(512);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerGetCapabilities(grpc::ServerContext*, const v1::ControllerGetCapabilitiesRequest*,
                                                          v1::ControllerGetCapabilitiesResponse* resp) {
  using T = v1::ControllerServiceCapability::RPC;
  for (auto t : {T::CREATE_DELETE_VOLUME, T::PUBLISH_UNPUBLISH_VOLUME, T::LIST_VOLUMES, T::GET_CAPACITY,
                 T::CREATE_DELETE_SNAPSHOT, T::LIST_SNAPSHOTS, T::CLONE_VOLUME, T::PUBLISH_READONLY, T::EXPAND_VOLUME,
                 T::LIST_VOLUMES_PUBLISHED_NODES, T::VOLUME_CONDITION, T::GET_VOLUME, T::SINGLE_NODE_MULTI_WRITER,
                 T::MODIFY_VOLUME, T::GET_SNAPSHOT}) {
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::CreateSnapshot(grpc::ServerContext*, const v1::CreateSnapshotRequest* req,
                                               v1::CreateSnapshotResponse* resp) {
  if (req->source_volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "source_volume_id is required");
  if (req->name().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "name is required");
  if (!validName(req->name())) return grpcError(StatusCode::INVALID_ARGUMENT, "name is longer than 128 bytes or has control characters");
  if (!Driver::validId(req->source_volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "source_volume_id has characters outside [A-Za-z0-9._-]");
  if (auto why = unknownParameter(req->parameters(), false); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  std::string id = Driver::idFor("snap", req->name());
  auto guard = d_.locks().tryLock({id, req->source_volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on snapshot " + req->name() + " or its volume is in progress");
  if (auto existing = d_.store().snapshot(id); existing && existing->state == RecordState::kReady) {
    if (existing->sourceVolume != req->source_volume_id()) {
      return grpcError(StatusCode::ALREADY_EXISTS, "snapshot " + req->name() + " exists for volume " + existing->sourceVolume);
    }
    fillSnapshot(*existing, resp->mutable_snapshot());
    return grpc::Status::OK;
  }
  auto vol = d_.store().volume(req->source_volume_id());
  if (!vol || vol->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->source_volume_id() + " not found");
  SnapshotRecord rec;
  rec.id = id;
  rec.name = req->name();
  rec.sourceVolume = vol->id;
  rec.size = vol->capacity;
  rec.createdUnixNanos = nowNanos();
  rec.parameters = toMap(req->parameters());
  std::vector<std::string> frozen;
  if (auto st = d_.freeze({vol->id}, &frozen); !st) return toGrpc(st.error());
  auto made = makeImage(d_.store().snapshotImage(id), d_.store().volumeImage(vol->id), 0);
  d_.thaw(frozen);
  if (!made) return toGrpc(made.error().wrap("snapshotting {}", vol->id));
  rec.state = RecordState::kReady;  // the image exists: the record makes it a snapshot
  if (auto st = d_.store().put(rec); !st) {
    std::error_code ec;
    fs::remove(d_.store().snapshotImage(id), ec);
    return toGrpc(st.error());
  }
  logger().info("snapshot created", {{"snapshot", id}, {"volume", vol->id}});
  fillSnapshot(rec, resp->mutable_snapshot());
  return grpc::Status::OK;
}

grpc::Status ControllerService::DeleteSnapshot(grpc::ServerContext*, const v1::DeleteSnapshotRequest* req, v1::DeleteSnapshotResponse*) {
  const std::string& id = req->snapshot_id();
  if (id.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "snapshot_id is required");
  if (!Driver::validId(id)) return grpcError(StatusCode::INVALID_ARGUMENT, "snapshot_id has characters outside [A-Za-z0-9._-]");
  auto guard = d_.locks().tryLock({id});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on snapshot " + id + " is in progress");
  auto rec = d_.store().snapshot(id);
  if (!rec) return grpc::Status::OK;
  if (!rec->groupId.empty() && d_.store().group(rec->groupId)) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "snapshot " + id + " belongs to group snapshot " + rec->groupId +
                                                          "; delete the group snapshot instead");
  }
  auto st = removeWithRecord(d_.store(), *rec, d_.store().snapshotImage(id), [&] { return d_.store().removeSnapshot(id); });
  return st ? grpc::Status::OK : toGrpc(st.error());
}

grpc::Status ControllerService::ListSnapshots(grpc::ServerContext*, const v1::ListSnapshotsRequest* req, v1::ListSnapshotsResponse* resp) {
  if (req->max_entries() < 0) return grpcError(StatusCode::INVALID_ARGUMENT, "max_entries must not be negative");
  if (!req->starting_token().empty() && !validToken(req->starting_token(), "snap")) {
    return grpcError(StatusCode::ABORTED, "starting_token \"" + req->starting_token() + "\" is not a token this driver issued");
  }
  int count = 0;
  for (const auto& rec : d_.store().snapshots()) {
    if (rec.state != RecordState::kReady || rec.id < req->starting_token()) continue;
    if (!req->snapshot_id().empty() && rec.id != req->snapshot_id()) continue;
    if (!req->source_volume_id().empty() && rec.sourceVolume != req->source_volume_id()) continue;
    if (req->max_entries() && count == req->max_entries()) {
      resp->set_next_token(rec.id);
      break;
    }
    fillSnapshot(rec, resp->add_entries()->mutable_snapshot());
    ++count;
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::GetSnapshot(grpc::ServerContext*, const v1::GetSnapshotRequest* req, v1::GetSnapshotResponse* resp) {
  if (req->snapshot_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "snapshot_id is required");
  if (!Driver::validId(req->snapshot_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "snapshot_id has characters outside [A-Za-z0-9._-]");
  auto rec = d_.store().snapshot(req->snapshot_id());
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "snapshot " + req->snapshot_id() + " not found");
  fillSnapshot(*rec, resp->mutable_snapshot());
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerExpandVolume(grpc::ServerContext*, const v1::ControllerExpandVolumeRequest* req,
                                                       v1::ControllerExpandVolumeResponse* resp) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (!req->has_capacity_range()) return grpcError(StatusCode::INVALID_ARGUMENT, "capacity_range is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  if (req->has_volume_capability()) {
    if (auto why = unsupportedCapability(req->volume_capability()); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  }
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto rec = d_.store().volume(req->volume_id());
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  auto size = sizeFor(&req->capacity_range(), rec->capacity, 0);
  if (!size) return toGrpc(size.error());
  bool block = req->has_volume_capability() && req->volume_capability().has_block();
  if (auto n = d_.store().node(rec->id)) block = block || n->block;
  if (*size > rec->capacity) {
    std::lock_guard<std::mutex> lock(d_.capacityMutex());
    if (d_.availableCapacity() < *size - rec->capacity) {
      return grpcError(StatusCode::OUT_OF_RANGE, "the pool cannot promise " + std::to_string(*size - rec->capacity) + " more bytes");
    }
    std::string image = d_.store().volumeImage(rec->id);
    if (::truncate(image.c_str(), *size) != 0) return toGrpc(base::Error::fromErrno(errno, "growing " + image));
    int fd = ::open(image.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    rec->capacity = *size;
    rec->fsGrowPending = !block;
    if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
    if (auto dev = sys::loopFind(image)) {
      if (auto st = sys::loopRefreshCapacity(*dev); !st) return toGrpc(st.error());
    }
    logger().info("volume expanded", {{"volume", rec->id}, {"bytes", rec->capacity}});
  }
  resp->set_capacity_bytes(rec->capacity);
  resp->set_node_expansion_required(!block);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerGetVolume(grpc::ServerContext*, const v1::ControllerGetVolumeRequest* req,
                                                    v1::ControllerGetVolumeResponse* resp) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto rec = d_.store().volume(req->volume_id());
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  fillVolume(d_, *rec, resp->mutable_volume());
  for (const auto& [node, ro] : rec->published) resp->mutable_status()->add_published_node_ids(node);
  *resp->mutable_status()->mutable_volume_condition() = condition(d_, *rec);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerModifyVolume(grpc::ServerContext*, const v1::ControllerModifyVolumeRequest* req,
                                                       v1::ControllerModifyVolumeResponse*) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  if (auto why = unknownParameter(req->mutable_parameters(), true); !why.empty()) {
    return grpcError(StatusCode::INVALID_ARGUMENT, "mutable_parameters: " + why);
  }
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto rec = d_.store().volume(req->volume_id());
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  for (const auto& [k, v] : req->mutable_parameters()) rec->mutableParameters[k] = v;
  if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
  applyReadAhead(d_, *rec);
  return grpc::Status::OK;
}

// ---- GroupController ----

grpc::Status GroupControllerService::GroupControllerGetCapabilities(grpc::ServerContext*,
                                                                    const v1::GroupControllerGetCapabilitiesRequest*,
                                                                    v1::GroupControllerGetCapabilitiesResponse* resp) {
  resp->add_capabilities()->mutable_rpc()->set_type(v1::GroupControllerServiceCapability::RPC::CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT);
  return grpc::Status::OK;
}

namespace {

void fillGroup(Store& store, const GroupRecord& g, v1::VolumeGroupSnapshot* out) {
  out->set_group_snapshot_id(g.id);
  out->mutable_creation_time()->set_seconds(g.createdUnixNanos / 1000000000);
  out->mutable_creation_time()->set_nanos(static_cast<int32_t>(g.createdUnixNanos % 1000000000));
  out->set_ready_to_use(g.state == RecordState::kReady);
  for (const auto& s : g.snapshots) {
    if (auto rec = store.snapshot(s)) fillSnapshot(*rec, out->add_snapshots());
  }
}

// The snapshot ids a request names must be exactly the group's, when given.
bool sameSnapshots(const GroupRecord& g, const google::protobuf::RepeatedPtrField<std::string>& ids) {
  if (ids.empty()) return true;
  std::vector<std::string> a(ids.begin(), ids.end()), b = g.snapshots;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

}  // namespace

grpc::Status GroupControllerService::CreateVolumeGroupSnapshot(grpc::ServerContext*, const v1::CreateVolumeGroupSnapshotRequest* req,
                                                               v1::CreateVolumeGroupSnapshotResponse* resp) {
  if (req->name().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "name is required");
  if (!validName(req->name())) return grpcError(StatusCode::INVALID_ARGUMENT, "name is longer than 128 bytes or has control characters");
  if (req->source_volume_ids().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "source_volume_ids are required");
  if (auto why = unknownParameter(req->parameters(), false); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  std::vector<std::string> sources(req->source_volume_ids().begin(), req->source_volume_ids().end());
  for (const auto& v : sources) {
    if (!Driver::validId(v)) return grpcError(StatusCode::INVALID_ARGUMENT, "source volume id \"" + v + "\" has characters outside [A-Za-z0-9._-]");
  }
  std::vector<std::string> sorted = sources;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return grpcError(StatusCode::INVALID_ARGUMENT, "source_volume_ids name a volume twice");
  }
  std::string id = Driver::idFor("group", req->name());
  std::vector<std::string> lockIds = sources;
  lockIds.push_back(id);
  auto guard = d_.locks().tryLock(lockIds);
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on group snapshot " + req->name() + " or one of its volumes is in progress");
  if (auto existing = d_.store().group(id); existing && existing->state == RecordState::kReady) {
    std::vector<std::string> had = existing->sourceVolumes;
    std::sort(had.begin(), had.end());
    if (had != sorted) return grpcError(StatusCode::ALREADY_EXISTS, "group snapshot " + req->name() + " exists for other volumes");
    fillGroup(d_.store(), *existing, resp->mutable_group_snapshot());
    return grpc::Status::OK;
  }
  std::vector<VolumeRecord> vols;
  for (const auto& v : sources) {
    auto rec = d_.store().volume(v);
    if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + v + " not found");
    vols.push_back(*rec);
  }
  GroupRecord g;
  g.id = id;
  g.name = req->name();
  g.sourceVolumes = sources;
  g.createdUnixNanos = nowNanos();
  g.parameters = toMap(req->parameters());
  for (const auto& v : sources) g.snapshots.push_back(Driver::idFor("snap", req->name() + "/" + v));
  if (auto st = d_.store().put(g); !st) return toGrpc(st.error());
  auto undo = [&] {
    std::error_code ec;
    for (const auto& s : g.snapshots) {
      fs::remove(d_.store().snapshotImage(s), ec);
      (void)d_.store().removeSnapshot(s);
    }
    (void)d_.store().removeGroup(id);
  };
  // One point in time for every volume: freeze all, copy all, thaw all.
  std::vector<std::string> frozen;
  if (auto st = d_.freeze(sources, &frozen); !st) {
    undo();
    return toGrpc(st.error());
  }
  base::Status copied;
  std::vector<SnapshotRecord> snaps;
  for (size_t i = 0; i < vols.size() && copied; ++i) {
    SnapshotRecord s;
    s.id = g.snapshots[i];
    s.name = req->name() + "/" + vols[i].id;
    s.sourceVolume = vols[i].id;
    s.size = vols[i].capacity;
    s.groupId = id;
    s.createdUnixNanos = g.createdUnixNanos;
    copied = d_.store().put(s);
    if (copied) copied = makeImage(d_.store().snapshotImage(s.id), d_.store().volumeImage(vols[i].id), 0);
    snaps.push_back(std::move(s));
  }
  d_.thaw(frozen);
  if (!copied) {
    undo();
    return toGrpc(copied.error());
  }
  for (auto& s : snaps) {
    s.state = RecordState::kReady;
    if (auto st = d_.store().put(s); !st) return toGrpc(st.error());
  }
  g.state = RecordState::kReady;
  if (auto st = d_.store().put(g); !st) return toGrpc(st.error());
  logger().info("group snapshot created", {{"group", id}, {"volumes", sources.size()}});
  fillGroup(d_.store(), g, resp->mutable_group_snapshot());
  return grpc::Status::OK;
}

grpc::Status GroupControllerService::DeleteVolumeGroupSnapshot(grpc::ServerContext*, const v1::DeleteVolumeGroupSnapshotRequest* req,
                                                               v1::DeleteVolumeGroupSnapshotResponse*) {
  const std::string& id = req->group_snapshot_id();
  if (id.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "group_snapshot_id is required");
  if (!Driver::validId(id)) return grpcError(StatusCode::INVALID_ARGUMENT, "group_snapshot_id has characters outside [A-Za-z0-9._-]");
  auto guard = d_.locks().tryLock({id});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on group snapshot " + id + " is in progress");
  auto g = d_.store().group(id);
  if (!g) return grpc::Status::OK;
  if (!sameSnapshots(*g, req->snapshot_ids())) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "snapshot_ids are not the snapshots of group snapshot " + id);
  }
  g->state = RecordState::kCreating;  // recovery finishes a crashed delete
  if (auto st = d_.store().put(*g); !st) return toGrpc(st.error());
  for (const auto& s : g->snapshots) {
    auto rec = d_.store().snapshot(s);
    if (!rec) continue;
    auto st = removeWithRecord(d_.store(), *rec, d_.store().snapshotImage(s), [&] { return d_.store().removeSnapshot(s); });
    if (!st) return toGrpc(st.error());
  }
  if (auto st = d_.store().removeGroup(id); !st) return toGrpc(st.error());
  return grpc::Status::OK;
}

grpc::Status GroupControllerService::GetVolumeGroupSnapshot(grpc::ServerContext*, const v1::GetVolumeGroupSnapshotRequest* req,
                                                            v1::GetVolumeGroupSnapshotResponse* resp) {
  const std::string& id = req->group_snapshot_id();
  if (id.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "group_snapshot_id is required");
  if (!Driver::validId(id)) return grpcError(StatusCode::INVALID_ARGUMENT, "group_snapshot_id has characters outside [A-Za-z0-9._-]");
  auto g = d_.store().group(id);
  if (!g || g->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "group snapshot " + id + " not found");
  if (!sameSnapshots(*g, req->snapshot_ids())) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "snapshot_ids are not the snapshots of group snapshot " + id);
  }
  fillGroup(d_.store(), *g, resp->mutable_group_snapshot());
  return grpc::Status::OK;
}

}  // namespace trellis::csi
