// The CSI Controller service of one driver, as the provisioner, attacher,
// resizer, snapshotter and capacity publisher call it — plain structs here,
// gRPC and the generated csi.proto code only in csi_client.cc (heavy
// headers stay out of every controller's translation unit).
//
// Errors keep the sidecars' wording, "rpc error: code = NotFound desc = ...",
// so Events read as users know them; the code maps to a base::ErrorCode
// (NotFound → kNotFound, AlreadyExists → kAlreadyExists, InvalidArgument →
// kInvalidArgument, ResourceExhausted/OutOfRange → kResourceExhausted,
// FailedPrecondition → kFailedPrecondition, Aborted → kAborted,
// DeadlineExceeded → kDeadlineExceeded, Unavailable → kUnavailable, the
// rest → kInternal).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::controllers {

using StringMap = std::map<std::string, std::string>;

struct VolumeRequest {
  std::string name;
  int64_t requiredBytes = 0, limitBytes = 0;
  bool block = false;  // raw block, else a mounted filesystem
  std::string fsType;
  std::vector<std::string> mountFlags;
  std::vector<std::string> accessModes;  // Kubernetes names: ReadWriteOnce, ...
  StringMap parameters, secrets;
  std::vector<StringMap> requisite, preferred;  // accessibility requirements
  std::string sourceVolumeId, sourceSnapshotId;
};

struct Volume {
  std::string id;
  int64_t capacityBytes = 0;
  StringMap context;
  std::vector<StringMap> topology;
};

struct Capacity {
  int64_t available = 0;
  std::optional<int64_t> maximumVolumeSize;
};

class CsiController {
 public:
  // `endpoint`: "unix:///path/csi.sock". Connects lazily; every call has
  // `timeout`.
  static std::unique_ptr<CsiController> connect(const std::string& endpoint,
                                                std::chrono::milliseconds timeout = std::chrono::seconds(60));
  virtual ~CsiController() = default;

  virtual base::Result<Volume> createVolume(const VolumeRequest& req) = 0;
  virtual base::Status deleteVolume(const std::string& id, const StringMap& secrets) = 0;
  // ControllerPublishVolume: the publish context. The capability is the
  // volume's: block or a filesystem, and the access mode of `accessModes`.
  struct Publish {
    std::string volumeId, nodeId;
    bool block = false, readonly = false;
    std::string fsType;
    std::vector<std::string> mountFlags, accessModes;
    StringMap context, secrets;
  };
  virtual base::Result<StringMap> controllerPublish(const Publish& p) = 0;
  virtual base::Status controllerUnpublish(const std::string& volumeId, const std::string& nodeId,
                                           const StringMap& secrets) = 0;
  // ControllerExpandVolume to at least `bytes`: the new size, and whether
  // the node must finish (NodeExpandVolume).
  struct Expanded {
    int64_t capacityBytes = 0;
    bool nodeExpansionRequired = false;
  };
  virtual base::Result<Expanded> controllerExpand(const std::string& volumeId, int64_t bytes, bool block,
                                                  const std::string& fsType, const StringMap& secrets) = 0;
  struct Snapshot {
    std::string id;
    int64_t sizeBytes = 0;
    int64_t creationNanos = 0;  // Unix time
    bool readyToUse = false;
  };
  virtual base::Result<Snapshot> createSnapshot(const std::string& name, const std::string& sourceVolumeId,
                                                const StringMap& parameters, const StringMap& secrets) = 0;
  virtual base::Status deleteSnapshot(const std::string& id, const StringMap& secrets) = 0;
  struct GroupSnapshot {
    std::string id;
    std::vector<std::pair<std::string, Snapshot>> members;  // (source volume id, snapshot)
    int64_t creationNanos = 0;
    bool readyToUse = false;
  };
  virtual base::Result<GroupSnapshot> createGroupSnapshot(const std::string& name, const std::vector<std::string>& volumeIds,
                                                          const StringMap& parameters, const StringMap& secrets) = 0;
  virtual base::Status deleteGroupSnapshot(const std::string& id, const std::vector<std::string>& snapshotIds,
                                           const StringMap& secrets) = 0;
  // GetCapacity for a class's parameters in one topology segment.
  virtual base::Result<Capacity> getCapacity(const StringMap& parameters, const StringMap& segment) = 0;
  // Every volume id the driver has (ListVolumes, all pages).
  virtual base::Result<std::vector<std::string>> listVolumes() = 0;
};

}  // namespace trellis::controllers
