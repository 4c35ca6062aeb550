// The gRPC services of trellis-csi (CSI v1.12 Identity, Controller,
// GroupController, Node; kubelet plugin registration). Private to csi/:
// this is the one header that pulls in gRPC and the generated code.
#pragma once

#include <string>

#include <grpcpp/grpcpp.h>

#include "csi/driver/driver.h"
#include "csi/driver/requests.h"
#include "csi/proto/csi.grpc.pb.h"
#include "csi/proto/pluginregistration.grpc.pb.h"

namespace trellis::csi {

namespace v1 = ::csi::v1;

// base::ErrorCode -> the gRPC code the CSI spec names for it.
grpc::Status toGrpc(const base::Error& error);
inline grpc::Status grpcError(grpc::StatusCode code, std::string message) { return {code, std::move(message)}; }

class IdentityService final : public v1::Identity::Service {
 public:
  explicit IdentityService(Driver& d) : d_(d) {}
  grpc::Status GetPluginInfo(grpc::ServerContext*, const v1::GetPluginInfoRequest*, v1::GetPluginInfoResponse*) override;
  grpc::Status GetPluginCapabilities(grpc::ServerContext*, const v1::GetPluginCapabilitiesRequest*,
                                     v1::GetPluginCapabilitiesResponse*) override;
  grpc::Status Probe(grpc::ServerContext*, const v1::ProbeRequest*, v1::ProbeResponse*) override;

 private:
  Driver& d_;
};

class ControllerService final : public v1::Controller::Service {
 public:
  explicit ControllerService(Driver& d) : d_(d) {}
  grpc::Status CreateVolume(grpc::ServerContext*, const v1::CreateVolumeRequest*, v1::CreateVolumeResponse*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const v1::DeleteVolumeRequest*, v1::DeleteVolumeResponse*) override;
  grpc::Status ControllerPublishVolume(grpc::ServerContext*, const v1::ControllerPublishVolumeRequest*,
                                       v1::ControllerPublishVolumeResponse*) override;
  grpc::Status ControllerUnpublishVolume(grpc::ServerContext*, const v1::ControllerUnpublishVolumeRequest*,
                                         v1::ControllerUnpublishVolumeResponse*) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext*, const v1::ValidateVolumeCapabilitiesRequest*,
                                          v1::ValidateVolumeCapabilitiesResponse*) override;
  grpc::Status ListVolumes(grpc::ServerContext*, const v1::ListVolumesRequest*, v1::ListVolumesResponse*) override;
  grpc::Status GetCapacity(grpc::ServerContext*, const v1::GetCapacityRequest*, v1::GetCapacityResponse*) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*, const v1::ControllerGetCapabilitiesRequest*,
                                         v1::ControllerGetCapabilitiesResponse*) override;
  grpc::Status CreateSnapshot(grpc::ServerContext*, const v1::CreateSnapshotRequest*, v1::CreateSnapshotResponse*) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext*, const v1::DeleteSnapshotRequest*, v1::DeleteSnapshotResponse*) override;
  grpc::Status ListSnapshots(grpc::ServerContext*, const v1::ListSnapshotsRequest*, v1::ListSnapshotsResponse*) override;
  grpc::Status GetSnapshot(grpc::ServerContext*, const v1::GetSnapshotRequest*, v1::GetSnapshotResponse*) override;
  grpc::Status ControllerExpandVolume(grpc::ServerContext*, const v1::ControllerExpandVolumeRequest*,
                                      v1::ControllerExpandVolumeResponse*) override;
  grpc::Status ControllerGetVolume(grpc::ServerContext*, const v1::ControllerGetVolumeRequest*,
                                   v1::ControllerGetVolumeResponse*) override;
  grpc::Status ControllerModifyVolume(grpc::ServerContext*, const v1::ControllerModifyVolumeRequest*,
                                      v1::ControllerModifyVolumeResponse*) override;

 private:
  Driver& d_;
};

class GroupControllerService final : public v1::GroupController::Service {
 public:
  explicit GroupControllerService(Driver& d) : d_(d) {}
  grpc::Status GroupControllerGetCapabilities(grpc::ServerContext*, const v1::GroupControllerGetCapabilitiesRequest*,
                                              v1::GroupControllerGetCapabilitiesResponse*) override;
  grpc::Status CreateVolumeGroupSnapshot(grpc::ServerContext*, const v1::CreateVolumeGroupSnapshotRequest*,
                                         v1::CreateVolumeGroupSnapshotResponse*) override;
  grpc::Status DeleteVolumeGroupSnapshot(grpc::ServerContext*, const v1::DeleteVolumeGroupSnapshotRequest*,
                                         v1::DeleteVolumeGroupSnapshotResponse*) override;
  grpc::Status GetVolumeGroupSnapshot(grpc::ServerContext*, const v1::GetVolumeGroupSnapshotRequest*,
                                      v1::GetVolumeGroupSnapshotResponse*) override;

 private:
  Driver& d_;
};

class NodeService final : public v1::Node::Service {
 public:
  explicit NodeService(Driver& d) : d_(d) {}
  grpc::Status NodeStageVolume(grpc::ServerContext*, const v1::NodeStageVolumeRequest*, v1::NodeStageVolumeResponse*) override;
  grpc::Status NodeUnstageVolume(grpc::ServerContext*, const v1::NodeUnstageVolumeRequest*,
                                 v1::NodeUnstageVolumeResponse*) override;
  grpc::Status NodePublishVolume(grpc::ServerContext*, const v1::NodePublishVolumeRequest*,
                                 v1::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*, const v1::NodeUnpublishVolumeRequest*,
                                   v1::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext*, const v1::NodeGetVolumeStatsRequest*,
                                  v1::NodeGetVolumeStatsResponse*) override;
  grpc::Status NodeExpandVolume(grpc::ServerContext*, const v1::NodeExpandVolumeRequest*, v1::NodeExpandVolumeResponse*) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext*, const v1::NodeGetCapabilitiesRequest*,
                                   v1::NodeGetCapabilitiesResponse*) override;
  grpc::Status NodeGetInfo(grpc::ServerContext*, const v1::NodeGetInfoRequest*, v1::NodeGetInfoResponse*) override;

 private:
  Driver& d_;
};

class RegistrationService final : public ::pluginregistration::Registration::Service {
 public:
  RegistrationService(Driver& d, std::string endpoint) : d_(d), endpoint_(std::move(endpoint)) {}
  grpc::Status GetInfo(grpc::ServerContext*, const ::pluginregistration::InfoRequest*,
                       ::pluginregistration::PluginInfo*) override;
  grpc::Status NotifyRegistrationStatus(grpc::ServerContext*, const ::pluginregistration::RegistrationStatus*,
                                        ::pluginregistration::RegistrationStatusResponse*) override;

 private:
  Driver& d_;
  std::string endpoint_;
};

}  // namespace trellis::csi
