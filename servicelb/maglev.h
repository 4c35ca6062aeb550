// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4): a lookup table
// of prime size M in which each backend fills the slots of its own
// permutation in turn, so every backend gets M/N slots (±1) and adding or
// removing one backend of N moves about 1/N of the slots — of the flows —
// and no more.
//
//   auto table = servicelb::maglevTable({"10.0.0.1:80", "10.0.0.2:80"});
//   const std::string& backend = backends[table[flowHash % table.size()]];
//
// Backends are named by stable strings (address and port): the table
// depends on the set of names only, never on their order or on the process.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::servicelb {

// A prime large enough for hundreds of backends per Service (the paper uses
// 65537 for thousands; kernel-side tables stay small at 16381).
constexpr uint32_t kMaglevSize = 16381;

// Entry i: the index in `backends` of slot i's backend. Empty when there are
// no backends. `size` must be prime.
std::vector<uint32_t> maglevTable(const std::vector<std::string>& backends, uint32_t size = kMaglevSize);

// The 64-bit hash (FNV-1a, then a murmur3 finaliser) flows and names use:
// the same on every node and every run.
uint64_t stableHash(std::string_view data, uint64_t seed = 0);

}  // namespace trellis::servicelb
