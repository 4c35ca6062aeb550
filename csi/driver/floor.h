// The floor under every CSI call: gRPC turns an exception that escapes a
// handler into UNKNOWN "Unexpected error in RPC handling"; this server
// interceptor makes that the spec's INTERNAL with the method named, logs
// it and counts it (trellis_csi_unexpected_errors_total) — each one is a bug
// to fix, and the driver keeps serving.
#pragma once

#include <grpcpp/grpcpp.h>

#include "common/base/metrics.h"

namespace trellis::csi {

// Adds the interceptor to `builder`; `counter` outlives the server.
void installFloor(grpc::ServerBuilder& builder, base::Counter& counter);

// The status the floor sends for an escaped exception in `method`.
grpc::Status floorStatus(const std::string& method);

}  // namespace trellis::csi
