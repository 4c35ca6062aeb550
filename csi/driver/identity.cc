// Identity and plugin registration, and the helpers every service shares.
#include <unistd.h>

#include "common/base/log.h"
#include "csi/driver/services.h"

namespace trellis::csi {


grpc::Status toGrpc(const base::Error& error) {
  using base::ErrorCode;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (error.code()) {
    case ErrorCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case ErrorCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case ErrorCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case ErrorCode::kConflict: code = grpc::StatusCode::ABORTED; break;
    case ErrorCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case ErrorCode::kUnauthenticated: code = grpc::StatusCode::UNAUTHENTICATED; break;
    case ErrorCode::kResourceExhausted: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case ErrorCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case ErrorCode::kAborted: code = grpc::StatusCode::ABORTED; break;
    case ErrorCode::kOutOfRange: code = grpc::StatusCode::OUT_OF_RANGE; break;
    case ErrorCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case ErrorCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    default: break;
  }
  return {code, error.message()};
}

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*, const v1::GetPluginInfoRequest*,
                                            v1::GetPluginInfoResponse* resp) {
  resp->set_name(d_.options().driverName);
  resp->set_vendor_version(d_.options().vendorVersion);
  (*resp->mutable_manifest())["node"] = d_.options().nodeId;
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(grpc::ServerContext*, const v1::GetPluginCapabilitiesRequest*,
                                                    v1::GetPluginCapabilitiesResponse* resp) {
  using T = v1::PluginCapability::Service;
  for (auto t : {T::CONTROLLER_SERVICE, T::VOLUME_ACCESSIBILITY_CONSTRAINTS, T::GROUP_CONTROLLER_SERVICE}) {
    resp->add_capabilities()->mutable_service()->set_type(t);
  }
  resp->add_capabilities()->mutable_volume_expansion()->set_type(v1::PluginCapability::VolumeExpansion::ONLINE);
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const v1::ProbeRequest*, v1::ProbeResponse* resp) {
  if (::access(d_.store().poolDir().c_str(), R_OK | W_OK | X_OK) != 0) {
    return grpcError(grpc::StatusCode::FAILED_PRECONDITION, "pool directory " + d_.store().poolDir() + " is not usable");
  }
  resp->mutable_ready()->set_value(true);
  return grpc::Status::OK;
}

grpc::Status RegistrationService::GetInfo(grpc::ServerContext*, const ::pluginregistration::InfoRequest*,
                                          ::pluginregistration::PluginInfo* resp) {
  resp->set_type("CSIPlugin");
  resp->set_name(d_.options().driverName);
  resp->set_endpoint(endpoint_);
  resp->add_supported_versions("1.0.0");
  return grpc::Status::OK;
}

grpc::Status RegistrationService::NotifyRegistrationStatus(grpc::ServerContext*,
                                                           const ::pluginregistration::RegistrationStatus* req,
                                                           ::pluginregistration::RegistrationStatusResponse*) {
  if (req->plugin_registered()) {
    logger().info("registered with kubelet", {{"driver", d_.options().driverName}});
  } else {
    logger().error("kubelet refused the registration", {{"error", req->error()}});
  }
  return grpc::Status::OK;
}

}  // namespace trellis::csi
