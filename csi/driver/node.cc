// CSI Node service: loop devices, filesystems and mounts on this node.
// Every step is recorded before it is taken (NodeRecord, state "creating")
// so that recovery can undo work a crash interrupted.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/base/log.h"
#include "common/linux/storage.h"
#include "csi/driver/services.h"

namespace trellis::csi {

namespace fs = std::filesystem;
using grpc::StatusCode;

namespace {


base::Status makeFilesystem(const std::string& fsType, const std::string& device) {
  if (fsType == "ext4" || fsType == "ext3") {
    return sys::runChecked({"mkfs." + fsType, "-F", "-q", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", device});
  }
  if (fsType == "xfs") return sys::runChecked({"mkfs.xfs", "-f", "-q", "-K", device});
  if (fsType == "btrfs") return sys::runChecked({"mkfs.btrfs", "-f", "-q", "-K", device});
  return base::makeError(base::ErrorCode::kInvalidArgument, "fs_type {} is not supported", fsType);
}

// Grows the filesystem mounted at `mountPoint` (on `device`) to the device's size.
base::Status growFilesystem(const std::string& fsType, const std::string& device, const std::string& mountPoint) {
  if (fsType == "ext4" || fsType == "ext3") return sys::runChecked({"resize2fs", device});
  if (fsType == "xfs") return sys::runChecked({"xfs_growfs", mountPoint});
  if (fsType == "btrfs") return sys::runChecked({"btrfs", "filesystem", "resize", "max", mountPoint});
  return base::makeError(base::ErrorCode::kInvalidArgument, "cannot grow fs_type {}", fsType);
}

bool mountedAt(const std::string& path) {
  auto all = sys::mounts();
  return std::any_of(all.begin(), all.end(), [&](const sys::MountEntry& m) { return m.mountPoint == path; });
}

bool isBlockDevice(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
}

}  // namespace

grpc::Status NodeService::NodeStageVolume(grpc::ServerContext*, const v1::NodeStageVolumeRequest* req, v1::NodeStageVolumeResponse*) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->staging_target_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "staging_target_path is required");
  if (!req->has_volume_capability()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_capability is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  const auto& cap = req->volume_capability();
  if (auto why = unsupportedCapability(cap); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  auto opts = parseMountFlags(cap.has_mount() ? cap.mount().mount_flags() : google::protobuf::RepeatedPtrField<std::string>());
  if (!opts) return toGrpc(opts.error());
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto vol = d_.store().volume(req->volume_id());
  if (!vol || vol->state != RecordState::kReady) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  bool block = cap.has_block();
  std::string fsType = block ? "" : (!cap.mount().fs_type().empty() ? cap.mount().fs_type() : (!vol->fsType.empty() ? vol->fsType : d_.options().defaultFsType));
  if (!block && !vol->fsType.empty() && fsType != vol->fsType) {
    return grpcError(StatusCode::INVALID_ARGUMENT, "volume " + vol->id + " was created for " + vol->fsType + ", not " + fsType);
  }
  std::string staging = req->staging_target_path();
  if (auto existing = d_.store().node(vol->id); existing && existing->state == RecordState::kReady) {
    if (existing->stagingPath != staging || existing->block != block || existing->fsType != fsType) {
      return grpcError(StatusCode::ALREADY_EXISTS, "volume " + vol->id + " is already staged at " + existing->stagingPath +
                                                       (existing->block ? " as a raw block device" : " with " + existing->fsType));
    }
    return grpc::Status::OK;
  }
  NodeRecord rec;
  rec.volumeId = vol->id;
  rec.stagingPath = staging;
  rec.fsType = fsType;
  rec.block = block;
  if (auto st = d_.store().put(rec); !st) return toGrpc(st.error());  // "creating": recovery undoes a crash
  auto fail = [&](base::Error err) {
    if (!block) (void)sys::unmount(staging);
    if (auto dev = sys::loopFind(d_.store().volumeImage(vol->id))) (void)sys::loopDetach(*dev);
    (void)d_.store().removeNode(vol->id);
    return toGrpc(err.wrap("staging volume {}", vol->id));
  };
  auto dev = sys::loopAttach(d_.store().volumeImage(vol->id));
  if (!dev) return fail(std::move(dev).error());
  rec.device = *dev;
  if (auto st = d_.store().put(rec); !st) return fail(std::move(st).error());
  if (!block) {
    auto current = sys::probeFsType(*dev);
    if (!current) return fail(std::move(current).error());
    bool formatted = current->empty();  // a new filesystem fills the device: nothing to grow
    if (formatted) {
      if (auto st = makeFilesystem(fsType, *dev); !st) return fail(std::move(st).error());
    } else if (*current != fsType) {
      (void)sys::loopDetach(*dev);
      (void)d_.store().removeNode(vol->id);
      return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + vol->id + " holds " + *current + ", not " + fsType);
    }
    std::error_code ec;
    fs::create_directories(staging, ec);
    std::string data = opts->data;
    if (fsType == "xfs") data += (data.empty() ? "" : ",") + std::string("nouuid");  // clones share the source's UUID
    if (auto st = sys::mountFs(*dev, staging, fsType, opts->flags, data); !st) return fail(std::move(st).error());
    if (vol->fsGrowPending) {
      if (!formatted) {
        if (auto st = growFilesystem(fsType, *dev, staging); !st) return fail(std::move(st).error());
      }
      vol->fsGrowPending = false;
      if (auto st = d_.store().put(*vol); !st) return fail(std::move(st).error());
    }
  }
  if (auto it = vol->mutableParameters.find("readAheadKB"); it != vol->mutableParameters.end()) {
    std::ofstream("/sys/block/" + fs::path(*dev).filename().string() + "/queue/read_ahead_kb") << it->second;
  }
  rec.state = RecordState::kReady;
  if (auto st = d_.store().put(rec); !st) return fail(std::move(st).error());
  logger().info("volume staged", {{"volume", vol->id}, {"device", *dev}, {"staging", staging}, {"fs", block ? "block" : fsType}});
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeUnstageVolume(grpc::ServerContext*, const v1::NodeUnstageVolumeRequest* req, v1::NodeUnstageVolumeResponse*) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->staging_target_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "staging_target_path is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto rec = d_.store().node(req->volume_id());
  if (!rec) {
    // Not staged by this driver: regarded as unstaged (OK, as the spec
    // says), unless an unknown volume leaves something mounted there.
    if (!d_.store().volume(req->volume_id()) && mountedAt(req->staging_target_path())) {
      return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found, and " + req->staging_target_path() +
                                                  " holds a mount this driver did not make");
    }
    return grpc::Status::OK;
  }
  if (rec->stagingPath != req->staging_target_path()) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + rec->volumeId + " is staged at " + rec->stagingPath + ", not " +
                                                          req->staging_target_path());
  }
  if (!rec->publishes.empty()) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + rec->volumeId + " is still published at " + rec->publishes[0].targetPath);
  }
  rec->state = RecordState::kCreating;  // recovery finishes an interrupted unstage
  if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
  if (!rec->block) {
    if (auto st = sys::unmount(rec->stagingPath); !st) return toGrpc(st.error());
  }
  if (auto dev = sys::loopFind(d_.store().volumeImage(rec->volumeId))) {
    if (auto st = sys::loopDetach(*dev); !st) return toGrpc(st.error());
  }
  if (auto st = d_.store().removeNode(rec->volumeId); !st) return toGrpc(st.error());
  logger().info("volume unstaged", {{"volume", rec->volumeId}});
  return grpc::Status::OK;
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext*, const v1::NodePublishVolumeRequest* req, v1::NodePublishVolumeResponse*) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->target_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "target_path is required");
  if (req->staging_target_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "staging_target_path is required (STAGE_UNSTAGE_VOLUME)");
  if (!req->has_volume_capability()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_capability is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  const auto& cap = req->volume_capability();
  if (auto why = unsupportedCapability(cap); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  if (!d_.store().volume(req->volume_id())) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  auto rec = d_.store().node(req->volume_id());
  if (!rec || rec->state != RecordState::kReady || rec->stagingPath != req->staging_target_path()) {
    return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + req->volume_id() + " is not staged at " + req->staging_target_path());
  }
  if (rec->block != cap.has_block()) {
    return grpcError(StatusCode::INVALID_ARGUMENT, std::string("volume ") + req->volume_id() + " is staged as " +
                                                       (rec->block ? "a raw block device" : "a filesystem"));
  }
  auto mode = cap.access_mode().mode();
  bool readonly = req->readonly() || mode == v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY;
  const std::string& target = req->target_path();
  for (const auto& p : rec->publishes) {
    if (p.targetPath != target) continue;
    if (p.readonly != readonly) {
      return grpcError(StatusCode::ALREADY_EXISTS, "volume " + rec->volumeId + " is already published at " + target +
                                                       (p.readonly ? " read-only" : " read-write"));
    }
    return grpc::Status::OK;
  }
  bool singleWriter = mode == v1::VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER;
  if (singleWriter && !readonly) {
    for (const auto& p : rec->publishes) {
      if (!p.readonly) {
        return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + rec->volumeId + " (SINGLE_NODE_SINGLE_WRITER) is already published read-write at " + p.targetPath);
      }
    }
  }
  rec->publishes.push_back({target, readonly, RecordState::kCreating});
  if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
  auto fail = [&](base::Error err) {
    (void)sys::unmount(target);
    rec->publishes.pop_back();
    (void)d_.store().put(*rec);
    return toGrpc(err.wrap("publishing volume {} at {}", rec->volumeId, target));
  };
  std::error_code ec;
  if (rec->block) {
    // The target is a file the device is bound onto; a CO that made an
    // empty directory there gets it replaced.
    fs::create_directories(fs::path(target).parent_path(), ec);
    if (fs::is_directory(target, ec)) fs::remove(target, ec);
    int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0660);
    if (fd < 0) return fail(base::Error::fromErrno(errno, "creating " + target));
    ::close(fd);
    if (auto st = sys::bindMount(rec->device, target, readonly); !st) return fail(std::move(st).error());
  } else {
    fs::create_directories(target, ec);
    const std::string& group = cap.mount().volume_mount_group();
    if (!group.empty()) {
      // fsGroup: the volume's root belongs to the group, which can write and
      // whose id new files inherit (setgid directory).
      gid_t gid = static_cast<gid_t>(std::stoul(group));
      if (::chown(rec->stagingPath.c_str(), static_cast<uid_t>(-1), gid) != 0 || ::chmod(rec->stagingPath.c_str(), 02775) != 0) {
        return fail(base::Error::fromErrno(errno, "giving " + rec->stagingPath + " to group " + group));
      }
    }
    if (auto st = sys::bindMount(rec->stagingPath, target, readonly); !st) return fail(std::move(st).error());
  }
  rec->publishes.back().state = RecordState::kReady;
  if (auto st = d_.store().put(*rec); !st) return fail(std::move(st).error());
  logger().info("volume published", {{"volume", rec->volumeId}, {"target", target}, {"readonly", readonly}});
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext*, const v1::NodeUnpublishVolumeRequest* req,
                                              v1::NodeUnpublishVolumeResponse*) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->target_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "target_path is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto rec = d_.store().node(req->volume_id());
  const std::string& target = req->target_path();
  if (!rec && !d_.store().volume(req->volume_id()) && mountedAt(target)) {
    // An unknown volume with nothing at the target is regarded as unpublished (OK below).
    return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found, and " + target +
                                                " holds a mount this driver did not make");
  }
  if (rec) {
    auto it = std::find_if(rec->publishes.begin(), rec->publishes.end(), [&](const PublishRecord& p) { return p.targetPath == target; });
    if (it == rec->publishes.end()) return grpc::Status::OK;
    if (auto st = sys::unmount(target); !st) return toGrpc(st.error());
    std::error_code ec;
    fs::remove(target, ec);  // the directory or file this driver made; kubelet removes it too
    rec->publishes.erase(it);
    if (auto st = d_.store().put(*rec); !st) return toGrpc(st.error());
    logger().info("volume unpublished", {{"volume", rec->volumeId}, {"target", target}});
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetVolumeStats(grpc::ServerContext*, const v1::NodeGetVolumeStatsRequest* req,
                                             v1::NodeGetVolumeStatsResponse* resp) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->volume_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_path is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  auto vol = d_.store().volume(req->volume_id());
  if (!vol) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  std::error_code ec;
  if (!fs::exists(req->volume_path(), ec)) return grpcError(StatusCode::NOT_FOUND, "volume_path " + req->volume_path() + " does not exist");
  auto rec = d_.store().node(vol->id);
  auto* cond = resp->mutable_volume_condition();
  cond->set_message("ok");
  if (!rec || rec->state != RecordState::kReady) {
    cond->set_abnormal(true);
    cond->set_message("the volume is not staged on this node");
  } else if (!sys::loopFind(d_.store().volumeImage(vol->id))) {
    cond->set_abnormal(true);
    cond->set_message("the volume's loop device is gone");
  } else if (!rec->block && !sys::mountAt(rec->stagingPath)) {
    cond->set_abnormal(true);
    cond->set_message("the staging mount " + rec->stagingPath + " is gone");
  }
  if ((rec && rec->block) || isBlockDevice(req->volume_path())) {
    auto size = sys::blockDeviceSize(req->volume_path());
    if (!size && rec) size = sys::blockDeviceSize(rec->device);
    auto* u = resp->add_usage();
    u->set_unit(v1::VolumeUsage::BYTES);
    u->set_total(size ? *size : vol->capacity);
    return grpc::Status::OK;
  }
  struct statvfs st{};
  if (::statvfs(req->volume_path().c_str(), &st) != 0) return toGrpc(base::Error::fromErrno(errno, "statfs " + req->volume_path()));
  auto* bytes = resp->add_usage();
  bytes->set_unit(v1::VolumeUsage::BYTES);
  bytes->set_total(static_cast<int64_t>(st.f_blocks * st.f_frsize));
  bytes->set_available(static_cast<int64_t>(st.f_bavail * st.f_frsize));
  bytes->set_used(static_cast<int64_t>((st.f_blocks - st.f_bfree) * st.f_frsize));
  auto* inodes = resp->add_usage();
  inodes->set_unit(v1::VolumeUsage::INODES);
  inodes->set_total(static_cast<int64_t>(st.f_files));
  inodes->set_available(static_cast<int64_t>(st.f_favail));
  inodes->set_used(static_cast<int64_t>(st.f_files - st.f_ffree));
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeExpandVolume(grpc::ServerContext*, const v1::NodeExpandVolumeRequest* req, v1::NodeExpandVolumeResponse* resp) {
  if (req->volume_id().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id is required");
  if (req->volume_path().empty()) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_path is required");
  if (!Driver::validId(req->volume_id())) return grpcError(StatusCode::INVALID_ARGUMENT, "volume_id has characters outside [A-Za-z0-9._-]");
  if (req->has_volume_capability()) {
    if (auto why = unsupportedCapability(req->volume_capability()); !why.empty()) return grpcError(StatusCode::INVALID_ARGUMENT, why);
  }
  auto guard = d_.locks().tryLock({req->volume_id()});
  if (!guard) return grpcError(StatusCode::ABORTED, "an operation on volume " + req->volume_id() + " is in progress");
  auto vol = d_.store().volume(req->volume_id());
  if (!vol) return grpcError(StatusCode::NOT_FOUND, "volume " + req->volume_id() + " not found");
  std::error_code ec;
  if (!fs::exists(req->volume_path(), ec)) return grpcError(StatusCode::NOT_FOUND, "volume_path " + req->volume_path() + " does not exist");
  auto rec = d_.store().node(vol->id);
  if (!rec || rec->state != RecordState::kReady) return grpcError(StatusCode::FAILED_PRECONDITION, "volume " + vol->id + " is not staged on this node");
  if (auto st = sys::loopRefreshCapacity(rec->device); !st) return toGrpc(st.error());
  auto size = sys::blockDeviceSize(rec->device);
  if (!size) return toGrpc(size.error());
  if (req->has_capacity_range() && req->capacity_range().required_bytes() > *size) {
    return grpcError(StatusCode::OUT_OF_RANGE, "the volume holds " + std::to_string(*size) + " bytes; expand it on the controller first");
  }
  if (!rec->block) {
    if (auto st = growFilesystem(rec->fsType, rec->device, rec->stagingPath); !st) return toGrpc(st.error());
    if (vol->fsGrowPending) {
      vol->fsGrowPending = false;
      if (auto st = d_.store().put(*vol); !st) return toGrpc(st.error());
    }
  }
  resp->set_capacity_bytes(*size);
  logger().info("volume expanded on node", {{"volume", vol->id}, {"bytes", *size}});
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext*, const v1::NodeGetCapabilitiesRequest*, v1::NodeGetCapabilitiesResponse* resp) {
  using T = v1::NodeServiceCapability::RPC;
  for (auto t : {T::STAGE_UNSTAGE_VOLUME, T::GET_VOLUME_STATS, T::EXPAND_VOLUME, T::VOLUME_CONDITION, T::SINGLE_NODE_MULTI_WRITER,
                 T::VOLUME_MOUNT_GROUP}) {
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*, const v1::NodeGetInfoRequest*, v1::NodeGetInfoResponse* resp) {
  resp->set_node_id(d_.options().nodeId);
  resp->set_max_volumes_per_node(d_.options().maxVolumesPerNode);
  (*resp->mutable_accessible_topology()->mutable_segments())[kTopologyKey] = d_.options().nodeId;
  return grpc::Status::OK;
}

}  // namespace trellis::csi
