// libFuzzer target: resource.Quantity parsing. Properties checked, not just
// "no crash": a parsed value is finite and within apimachinery's cap.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "common/kube/quantity.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto q = trellis::kube::parseQuantity(std::string_view(reinterpret_cast<const char*>(data), size));
  if (q) {
    constexpr long double kMax = static_cast<long double>(std::numeric_limits<int64_t>::max());
    if (!std::isfinite(*q) || std::fabs(*q) > kMax) __builtin_trap();
  }
  return 0;
}
