#include "common/base/result.h"

#include <cstring>

namespace trellis::base {

std::string_view errorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUnknown: return "Unknown";
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kNotFound: return "NotFound";
    case ErrorCode::kAlreadyExists: return "AlreadyExists";
    case ErrorCode::kConflict: return "Conflict";
    case ErrorCode::kPermissionDenied: return "PermissionDenied";
    case ErrorCode::kUnauthenticated: return "Unauthenticated";
    case ErrorCode::kResourceExhausted: return "ResourceExhausted";
    case ErrorCode::kFailedPrecondition: return "FailedPrecondition";
    case ErrorCode::kAborted: return "Aborted";
    case ErrorCode::kOutOfRange: return "OutOfRange";
    case ErrorCode::kUnavailable: return "Unavailable";
    case ErrorCode::kDeadlineExceeded: return "DeadlineExceeded";
    case ErrorCode::kInternal: return "Internal";
    case ErrorCode::kIo: return "Io";
  }
  return "Unknown";
}

Error Error::fromErrno(int err, std::string_view what) {
  ErrorCode code = ErrorCode::kIo;
  switch (err) {
    case ENOENT: code = ErrorCode::kNotFound; break;
    case EEXIST: code = ErrorCode::kAlreadyExists; break;
    case EACCES:
    case EPERM: code = ErrorCode::kPermissionDenied; break;
    case EINVAL: code = ErrorCode::kInvalidArgument; break;
    case ENOSPC: code = ErrorCode::kResourceExhausted; break;
    case ETIMEDOUT: code = ErrorCode::kDeadlineExceeded; break;
    case ECONNREFUSED:
    case EADDRINUSE: code = ErrorCode::kUnavailable; break;
    default: break;
  }
  char buf[256];
  const char* text = strerror_r(err, buf, sizeof buf);
  return Error(code, fmt::format("{}: {}", what, text));
}

}  // namespace trellis::base
