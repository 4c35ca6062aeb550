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

std::string unsupportedCapability(const v1::VolumeCapability& cap) {
  if (cap.access_type_case() == v1::VolumeCapability::ACCESS_TYPE_NOT_SET) {
    return "volume capability has neither block nor mount access type";
  }
  if (!cap.has_access_mode()) return "volume capability has no access mode";
  switch (cap.access_mode().mode()) {
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER:
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY:
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER:
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_MULTI_WRITER:
      break;
    case v1::VolumeCapability::AccessMode::UNKNOWN:
      return "access mode UNKNOWN is not an access mode";
    default:
      return "access mode " + v1::VolumeCapability::AccessMode::Mode_Name(cap.access_mode().mode()) +
             " is not supported: a Trellis volume lives on one node";
  }
  if (cap.has_mount()) {
    const std::string& fs = cap.mount().fs_type();
    if (!fs.empty() && fs != "ext4" && fs != "ext3" && fs != "xfs" && fs != "btrfs") {
      return "fs_type \"" + fs + "\" is not supported (ext4, ext3, xfs, btrfs)";
    }
    const std::string& group = cap.mount().volume_mount_group();
    if (!group.empty() && group.find_first_not_of("0123456789") != std::string::npos) {
      return "volume_mount_group \"" + group + "\" is not a numeric group id";
    }
  }
  return "";
}

bool validName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c <= 0x08 || c == 0x0b || c == 0x0c || (c >= 0x0e && c <= 0x1f) || c == 0x7f) return false;
    // U+0080-U+009F are C2 80 - C2 9F in UTF-8.
    if (c == 0xc2 && i + 1 < name.size()) {
      unsigned char n = static_cast<unsigned char>(name[i + 1]);
      if (n >= 0x80 && n <= 0x9f) return false;
    }
  }
  return true;
}

std::string unknownParameter(const google::protobuf::Map<std::string, std::string>& params, bool mutableParams) {
  for (const auto& [k, v] : params) {
    if (k.rfind("csi.storage.k8s.io/", 0) == 0) continue;
    if (k == "readAheadKB") {
      if (v.empty() || v.size() > 6 || v.find_first_not_of("0123456789") != std::string::npos) {
        return "parameter readAheadKB=\"" + v + "\" is not a number of KiB (0-999999)";
      }
      continue;
    }
    return "unknown parameter \"" + k + "\"" + (mutableParams ? " (mutable: readAheadKB)" : " (known: readAheadKB)");
  }
  return "";
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
