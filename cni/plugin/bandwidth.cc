#include "cni/plugin/bandwidth.h"

#include <fmt/format.h>

namespace trellis::cni {

namespace json = boost::json;

namespace {
constexpr uint64_t kMaxRate = 16'000'000'000ull;  // bits/s; tbf takes 32-bit bytes/s
constexpr uint64_t kMinBurst = 1514 * 8;          // one full-size Ethernet frame
}  // namespace

std::variant<std::optional<Bandwidth>, Error> parseBandwidth(const json::object& config) {
  const json::value* caps = config.if_contains("capabilities");
  const json::value* enabled = caps && caps->is_object() ? caps->get_object().if_contains("bandwidth") : nullptr;
  if (!enabled || !enabled->is_bool() || !enabled->get_bool()) return std::optional<Bandwidth>();
  const json::value* rc = config.if_contains("runtimeConfig");
  const json::value* bw = rc && rc->is_object() ? rc->get_object().if_contains("bandwidth") : nullptr;
  if (!bw || bw->is_null()) return std::optional<Bandwidth>();
  if (!bw->is_object()) return Error{ErrorCode::kInvalidConfig, "runtimeConfig.bandwidth: not an object", ""};
  const json::object& o = bw->get_object();
  Bandwidth b;
  auto field = [&](const char* key, uint64_t& into) -> std::optional<Error> {
    const json::value* v = o.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (v->is_int64() && v->get_int64() >= 0) {
      into = static_cast<uint64_t>(v->get_int64());
    } else if (v->is_uint64()) {
      into = v->get_uint64();
    } else {
      return Error{ErrorCode::kInvalidConfig, fmt::format("runtimeConfig.bandwidth.{}: not a non-negative integer", key), ""};
    }
    return std::nullopt;
  };
  for (auto [key, into] : {std::pair{"ingressRate", &b.ingressRate}, {"ingressBurst", &b.ingressBurst},
                           {"egressRate", &b.egressRate}, {"egressBurst", &b.egressBurst}}) {
    if (auto e = field(key, *into)) return *e;
  }
  for (auto [dir, rate, burst] : {std::tuple{"ingress", b.ingressRate, b.ingressBurst}, {"egress", b.egressRate, b.egressBurst}}) {
    if ((rate == 0) != (burst == 0)) {
      return Error{ErrorCode::kInvalidConfig,
                   fmt::format("runtimeConfig.bandwidth: {0}Rate and {0}Burst must be set together", dir), ""};
    }
    if (rate > kMaxRate) {
      return Error{ErrorCode::kInvalidConfig, fmt::format("runtimeConfig.bandwidth.{}Rate: {} bits/s is over 16 Gbit/s", dir, rate), ""};
    }
    if (burst && burst < kMinBurst) {
      return Error{ErrorCode::kInvalidConfig,
                   fmt::format("runtimeConfig.bandwidth.{}Burst: {} bits is less than one full-size frame ({} bits)", dir, burst,
                               kMinBurst),
                   ""};
    }
  }
  if (!b.ingressRate && !b.egressRate) return std::optional<Bandwidth>();
  return std::optional<Bandwidth>(b);
}

uint32_t tbfLimitBytes(uint64_t rateBits, uint64_t burstBits) {
  uint64_t limit = rateBits / 8 * 25 / 1000 + burstBits / 8;
  return static_cast<uint32_t>(std::min<uint64_t>(limit, 0x7fffffffu));
}

}  // namespace trellis::cni
