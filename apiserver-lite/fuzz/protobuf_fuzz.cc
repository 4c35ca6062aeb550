// libFuzzer target: the Kubernetes protobuf body decoder (seeds: bodies
// kubectl v1.32 sent for `kubectl create ...`).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "apiserver-lite/registry/protobuf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto obj = trellis::apiserver::registry::decodeKubeProtobuf(
      std::string_view(reinterpret_cast<const char*>(data), size));
  static_cast<void>(obj);  // any result is fine; crashes and sanitizer reports are not
  return 0;
}
