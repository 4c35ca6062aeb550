// The `bandwidth` capability (runtimeConfig.bandwidth, as CRI runtimes pass
// the kubernetes.io/ingress-bandwidth and egress-bandwidth annotations):
// rates in bits per second, bursts in bits, as the reference bandwidth
// plugin takes them. Applied as token-bucket shaping on the pod's links:
// ingress (to the pod) on the host end of the veth, egress (from the pod)
// on the pod's interface — shaping, not policing, so TCP gets the rate
// rather than a sawtooth below it. Both qdiscs go with the veth on DEL/GC.
#pragma once

#include <cstdint>
#include <optional>
#include <variant>

#include <boost/json/object.hpp>

#include "cni/plugin/protocol.h"

namespace trellis::cni {

struct Bandwidth {
  uint64_t ingressRate = 0, ingressBurst = 0;  // bits/s, bits; 0 = unlimited
  uint64_t egressRate = 0, egressBurst = 0;
};

// nullopt when the capability is off or no limit is asked for; an
// kInvalidConfig error naming the field for a rate without a burst (or the
// reverse), a burst smaller than one full-size frame, or a rate past 16 Gbit/s.
std::variant<std::optional<Bandwidth>, Error> parseBandwidth(const boost::json::object& config);

// The tbf queue limit for a direction: 25 ms at the rate plus the burst
// (the reference plugin's choice), in bytes.
uint32_t tbfLimitBytes(uint64_t rateBits, uint64_t burstBits);

}  // namespace trellis::cni
