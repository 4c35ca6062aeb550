#include "controllers/csi_client.h"

#include <grpcpp/grpcpp.h>

#include "csi/proto/csi.grpc.pb.h"

namespace trellis::controllers {

namespace {

namespace v1 = ::csi::v1;

base::ErrorCode codeFor(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::NOT_FOUND: return base::ErrorCode::kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS: return base::ErrorCode::kAlreadyExists;
    case grpc::StatusCode::INVALID_ARGUMENT: return base::ErrorCode::kInvalidArgument;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::OUT_OF_RANGE: return base::ErrorCode::kResourceExhausted;
    case grpc::StatusCode::FAILED_PRECONDITION: return base::ErrorCode::kFailedPrecondition;
    case grpc::StatusCode::ABORTED: return base::ErrorCode::kAborted;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return base::ErrorCode::kDeadlineExceeded;
    case grpc::StatusCode::UNAVAILABLE: return base::ErrorCode::kUnavailable;
    default: return base::ErrorCode::kInternal;
  }
}

// grpc-go's names for the codes, as the sidecars' messages show them.
const char* codeName(grpc::StatusCode c) {
  static const char* names[] = {"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
                                "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
                                "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
                                "Unauthenticated"};
  int i = static_cast<int>(c);
  return i >= 0 && i < 17 ? names[i] : "Unknown";
}

base::Error rpcError(const grpc::Status& s) {
  return base::Error(codeFor(s.error_code()),
                     fmt::format("rpc error: code = {} desc = {}", codeName(s.error_code()), s.error_message()));
}

v1::VolumeCapability::AccessMode::Mode modeFor(const std::string& k8s) {
  using M = v1::VolumeCapability::AccessMode;
  if (k8s == "ReadWriteOnce") return M::SINGLE_NODE_WRITER;
  if (k8s == "ReadWriteOncePod") return M::SINGLE_NODE_SINGLE_WRITER;
  if (k8s == "ReadOnlyMany") return M::MULTI_NODE_READER_ONLY;
  if (k8s == "ReadWriteMany") return M::MULTI_NODE_MULTI_WRITER;
  return M::UNKNOWN;
}

void fillTopology(google::protobuf::RepeatedPtrField<v1::Topology>* out, const std::vector<StringMap>& in) {
  for (const StringMap& segs : in) {
    auto* t = out->Add();
    for (const auto& [k, v] : segs) (*t->mutable_segments())[k] = v;
  }
}

class GrpcController : public CsiController {
 public:
  GrpcController(const std::string& endpoint, std::chrono::milliseconds timeout)
      : channel_(grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials())),
        controller_(v1::Controller::NewStub(channel_)),
        group_(v1::GroupController::NewStub(channel_)),
        timeout_(timeout) {}

  base::Result<Volume> createVolume(const VolumeRequest& r) override {
    v1::CreateVolumeRequest req;
    req.set_name(r.name);
    req.mutable_capacity_range()->set_required_bytes(r.requiredBytes);
    req.mutable_capacity_range()->set_limit_bytes(r.limitBytes);
    for (const std::string& mode : r.accessModes) {
      auto* cap = req.add_volume_capabilities();
      cap->mutable_access_mode()->set_mode(modeFor(mode));
      if (r.block) {
        cap->mutable_block();
      } else {
        cap->mutable_mount()->set_fs_type(r.fsType);
        for (const std::string& f : r.mountFlags) cap->mutable_mount()->add_mount_flags(f);
      }
    }
    for (const auto& [k, v] : r.parameters) (*req.mutable_parameters())[k] = v;
    for (const auto& [k, v] : r.secrets) (*req.mutable_secrets())[k] = v;
    if (!r.requisite.empty() || !r.preferred.empty()) {
      fillTopology(req.mutable_accessibility_requirements()->mutable_requisite(), r.requisite);
      fillTopology(req.mutable_accessibility_requirements()->mutable_preferred(), r.preferred);
    }
    if (!r.sourceVolumeId.empty()) req.mutable_volume_content_source()->mutable_volume()->set_volume_id(r.sourceVolumeId);
    if (!r.sourceSnapshotId.empty()) {
      req.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(r.sourceSnapshotId);
    }
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::CreateVolumeResponse resp;
    grpc::Status s = controller_->CreateVolume(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    Volume v{resp.volume().volume_id(), resp.volume().capacity_bytes(), {}, {}};
    for (const auto& [k, val] : resp.volume().volume_context()) v.context.emplace(k, val);
    for (const v1::Topology& t : resp.volume().accessible_topology()) {
      StringMap segs;
      for (const auto& [k, val] : t.segments()) segs.emplace(k, val);
      v.topology.push_back(std::move(segs));
    }
    return v;
  }

  base::Status deleteVolume(const std::string& id, const StringMap& secrets) override {
    v1::DeleteVolumeRequest req;
    req.set_volume_id(id);
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::DeleteVolumeResponse resp;
    grpc::Status s = controller_->DeleteVolume(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    return {};
  }

  base::Result<StringMap> controllerPublish(const Publish& p) override {
    v1::ControllerPublishVolumeRequest req;
    req.set_volume_id(p.volumeId);
    req.set_node_id(p.nodeId);
    req.set_readonly(p.readonly);
    auto* cap = req.mutable_volume_capability();
    cap->mutable_access_mode()->set_mode(p.accessModes.empty() ? modeFor("ReadWriteOnce") : modeFor(p.accessModes[0]));
    if (p.block) {
      cap->mutable_block();
    } else {
      cap->mutable_mount()->set_fs_type(p.fsType);
      for (const std::string& f : p.mountFlags) cap->mutable_mount()->add_mount_flags(f);
    }
    for (const auto& [k, v] : p.context) (*req.mutable_volume_context())[k] = v;
    for (const auto& [k, v] : p.secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::ControllerPublishVolumeResponse resp;
    grpc::Status s = controller_->ControllerPublishVolume(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    StringMap out;
    for (const auto& [k, v] : resp.publish_context()) out.emplace(k, v);
    return out;
  }

  base::Status controllerUnpublish(const std::string& volumeId, const std::string& nodeId, const StringMap& secrets) override {
    v1::ControllerUnpublishVolumeRequest req;
    req.set_volume_id(volumeId);
    req.set_node_id(nodeId);
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::ControllerUnpublishVolumeResponse resp;
    grpc::Status s = controller_->ControllerUnpublishVolume(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    return {};
  }

  base::Result<Expanded> controllerExpand(const std::string& volumeId, int64_t bytes, bool block, const std::string& fsType,
                                          const StringMap& secrets) override {
    v1::ControllerExpandVolumeRequest req;
    req.set_volume_id(volumeId);
    req.mutable_capacity_range()->set_required_bytes(bytes);
    auto* cap = req.mutable_volume_capability();
    cap->mutable_access_mode()->set_mode(modeFor("ReadWriteOnce"));
    if (block) cap->mutable_block();
    else cap->mutable_mount()->set_fs_type(fsType);
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::ControllerExpandVolumeResponse resp;
    grpc::Status s = controller_->ControllerExpandVolume(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    return Expanded{resp.capacity_bytes(), resp.node_expansion_required()};
  }

  base::Result<Snapshot> createSnapshot(const std::string& name, const std::string& sourceVolumeId,
                                        const StringMap& parameters, const StringMap& secrets) override {
    v1::CreateSnapshotRequest req;
    req.set_name(name);
    req.set_source_volume_id(sourceVolumeId);
    for (const auto& [k, v] : parameters) (*req.mutable_parameters())[k] = v;
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::CreateSnapshotResponse resp;
    grpc::Status s = controller_->CreateSnapshot(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    const auto& snap = resp.snapshot();
    return Snapshot{snap.snapshot_id(), snap.size_bytes(),
                    snap.creation_time().seconds() * 1'000'000'000 + snap.creation_time().nanos(), snap.ready_to_use()};
  }

  base::Status deleteSnapshot(const std::string& id, const StringMap& secrets) override {
    v1::DeleteSnapshotRequest req;
    req.set_snapshot_id(id);
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::DeleteSnapshotResponse resp;
    grpc::Status s = controller_->DeleteSnapshot(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    return {};
  }

  base::Result<GroupSnapshot> createGroupSnapshot(const std::string& name, const std::vector<std::string>& volumeIds,
                                                  const StringMap& parameters, const StringMap& secrets) override {
    v1::CreateVolumeGroupSnapshotRequest req;
    req.set_name(name);
    for (const std::string& id : volumeIds) req.add_source_volume_ids(id);
    for (const auto& [k, v] : parameters) (*req.mutable_parameters())[k] = v;
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::CreateVolumeGroupSnapshotResponse resp;
    grpc::Status s = group_->CreateVolumeGroupSnapshot(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    const auto& g = resp.group_snapshot();
    GroupSnapshot out{g.group_snapshot_id(), {}, g.creation_time().seconds() * 1'000'000'000 + g.creation_time().nanos(),
                      g.ready_to_use()};
    for (const auto& snap : g.snapshots()) {
      out.members.emplace_back(snap.source_volume_id(),
                               Snapshot{snap.snapshot_id(), snap.size_bytes(),
                                        snap.creation_time().seconds() * 1'000'000'000 + snap.creation_time().nanos(),
                                        snap.ready_to_use()});
    }
    return out;
  }

  base::Status deleteGroupSnapshot(const std::string& id, const std::vector<std::string>& snapshotIds,
                                   const StringMap& secrets) override {
    v1::DeleteVolumeGroupSnapshotRequest req;
    req.set_group_snapshot_id(id);
    for (const std::string& s : snapshotIds) req.add_snapshot_ids(s);
    for (const auto& [k, v] : secrets) (*req.mutable_secrets())[k] = v;
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::DeleteVolumeGroupSnapshotResponse resp;
    grpc::Status s = group_->DeleteVolumeGroupSnapshot(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    return {};
  }

  base::Result<Capacity> getCapacity(const StringMap& parameters, const StringMap& segment) override {
    v1::GetCapacityRequest req;
    for (const auto& [k, v] : parameters) (*req.mutable_parameters())[k] = v;
    if (!segment.empty()) {
      for (const auto& [k, v] : segment) (*req.mutable_accessible_topology()->mutable_segments())[k] = v;
    }
    grpc::ClientContext ctx;
    deadline(ctx);
    v1::GetCapacityResponse resp;
    grpc::Status s = controller_->GetCapacity(&ctx, req, &resp);
    if (!s.ok()) return rpcError(s);
    Capacity c{resp.available_capacity(), std::nullopt};
    if (resp.has_maximum_volume_size()) c.maximumVolumeSize = resp.maximum_volume_size().value();
    return c;
  }

  base::Result<std::vector<std::string>> listVolumes() override {
    std::vector<std::string> ids;
    std::string token;
    do {
      v1::ListVolumesRequest req;
      req.set_starting_token(token);
      grpc::ClientContext ctx;
      deadline(ctx);
      v1::ListVolumesResponse resp;
      grpc::Status s = controller_->ListVolumes(&ctx, req, &resp);
      if (!s.ok()) return rpcError(s);
      for (const auto& e : resp.entries()) ids.push_back(e.volume().volume_id());
      token = resp.next_token();
    } while (!token.empty());
    return ids;
  }

 private:
  void deadline(grpc::ClientContext& ctx) { ctx.set_deadline(std::chrono::system_clock::now() + timeout_); }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Controller::Stub> controller_;
  std::unique_ptr<v1::GroupController::Stub> group_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::unique_ptr<CsiController> CsiController::connect(const std::string& endpoint, std::chrono::milliseconds timeout) {
  return std::make_unique<GrpcController>(endpoint, timeout);
}

}  // namespace trellis::controllers
