// libFuzzer target: CSI request messages into the driver's request checks.
// The first byte picks the message; the rest is its protobuf encoding, as a
// CO would send it (seeds in corpus/csi). Any answer is fine; a crash, an
// exception or a sanitizer report is not.
#include <cstddef>
#include <cstdint>

#include <google/protobuf/stubs/logging.h>

#include "csi/driver/requests.h"

namespace v1 = ::csi::v1;
using namespace trellis::csi;

namespace {

void capabilities(const google::protobuf::RepeatedPtrField<v1::VolumeCapability>& caps) {
  for (const auto& c : caps) {
    (void)unsupportedCapability(c);
    if (c.has_mount()) (void)parseMountFlags(c.mount().mount_flags());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is an expected input, not news
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const void* body = data + 1;
  int len = static_cast<int>(size - 1);
  switch (data[0] % 4) {
    case 0: {
      v1::CreateVolumeRequest r;
      if (!r.ParseFromArray(body, len)) return 0;
      (void)validName(r.name());
      capabilities(r.volume_capabilities());
      const v1::CreateVolumeRequest& c = r;  // the field mutable_parameters, not the accessor of parameters
      (void)unknownParameter(c.parameters(), false);
      (void)unknownParameter(c.mutable_parameters(), true);
      const v1::CapacityRange* range = r.has_capacity_range() ? &r.capacity_range() : nullptr;
      for (int64_t minimum : {int64_t{0}, 300 * kMiB}) {
        auto size = sizeFor(range, 1 << 30, minimum);
        if (size) {
          // What the driver then relies on: a positive size the range accepts.
          if (*size <= 0 || (range && !inRange(*size, range))) __builtin_trap();
        }
      }
      break;
    }
    case 1: {
      v1::ControllerExpandVolumeRequest r;
      if (!r.ParseFromArray(body, len)) return 0;
      auto size = sizeFor(&r.capacity_range(), 1 << 20, 0);
      if (size && *size <= 0) __builtin_trap();
      if (r.has_volume_capability()) (void)unsupportedCapability(r.volume_capability());
      break;
    }
    case 2: {
      v1::NodeStageVolumeRequest r;
      if (!r.ParseFromArray(body, len)) return 0;
      (void)validName(r.volume_id());
      if (r.has_volume_capability()) {
        (void)unsupportedCapability(r.volume_capability());
        if (r.volume_capability().has_mount()) (void)parseMountFlags(r.volume_capability().mount().mount_flags());
      }
      break;
    }
    case 3: {
      v1::ControllerModifyVolumeRequest r;
      if (!r.ParseFromArray(body, len)) return 0;
      const v1::ControllerModifyVolumeRequest& c = r;
      (void)unknownParameter(c.mutable_parameters(), true);
      break;
    }
  }
  return 0;
}
