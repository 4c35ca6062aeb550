// Checks of CSI request fields that need no pool and no gRPC: capabilities,
// names, parameters, mount flags and capacity ranges. Each answers what is
// wrong in words for the caller, or the parsed value; none throws, whatever
// the message holds (fuzz/csi_request_fuzz.cc feeds them arbitrary requests).
#pragma once

#include <cstdint>
#include <string>

#include "common/base/result.h"
#include "csi/driver/driver.h"
#include "csi/proto/csi.pb.h"

namespace trellis::csi {

namespace v1 = ::csi::v1;

// Checks one capability against what a node-local volume supports: an
// access type, a single-node access mode, a known filesystem. Returns ""
// when supported, else why not.
std::string unsupportedCapability(const v1::VolumeCapability& cap);
// Names and ids of the spec: no control characters (U+0000-U+0008,
// U+000B, U+000C, U+000E-U+001F, U+007F-U+009F), at most 128 bytes.
bool validName(const std::string& name);
// The keys Trellis understands in `parameters` / `mutable_parameters`;
// csi.storage.k8s.io/* keys the sidecars add are accepted and ignored.
std::string unknownParameter(const google::protobuf::Map<std::string, std::string>& params, bool mutableParams);

// Mount flags by name; the rest of `mount_flags` goes to the filesystem.
struct MountOptions {
  unsigned long flags = 0;
  std::string data;
};
base::Result<MountOptions> parseMountFlags(const google::protobuf::RepeatedPtrField<std::string>& flags);

// The largest volume: far beyond any pool, and far enough below INT64_MAX
// that rounding and summing sizes cannot overflow.
inline constexpr int64_t kMaxVolumeBytes = int64_t{1} << 60;

// The size a capacity range asks for: at least `required`, at most `limit`,
// rounded up to whole MiB (whole 4 KiB pages, or exact 512-byte sectors, when
// the limit is tighter); `minimum` for the filesystem (xfs needs 300 MiB).
// kOutOfRange when no size fits or the rounding would overflow.
base::Result<int64_t> sizeFor(const v1::CapacityRange* range, int64_t defaultSize, int64_t minimum);
// Whether `size` satisfies `range` (null: any size does).
bool inRange(int64_t size, const v1::CapacityRange* range);

}  // namespace trellis::csi
