#include "servicelb/maglev.h"

#include <algorithm>
#include <numeric>

namespace trellis::servicelb {

uint64_t stableHash(std::string_view data, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

std::vector<uint32_t> maglevTable(const std::vector<std::string>& backends, uint32_t size) {
  std::vector<uint32_t> table;
  if (backends.empty() || size < 2) return table;
  // The names in a fixed order (their own), so the table does not depend on
  // the order they were given in; entries map back to the caller's indexes.
  std::vector<uint32_t> order(backends.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return backends[a] < backends[b]; });
  size_t n = order.size();
  std::vector<uint64_t> offset(n), skip(n), next(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& name = backends[order[i]];
    offset[i] = stableHash(name, 0x6d61676c6576ull) % size;
    skip[i] = stableHash(name, 0x736b6970ull) % (size - 1) + 1;
  }
  constexpr uint32_t kEmpty = UINT32_MAX;
  table.assign(size, kEmpty);
  for (uint32_t filled = 0;;) {
    for (size_t i = 0; i < n; ++i) {
      // Backend i takes the next slot of its permutation that is still free.
      uint64_t slot = (offset[i] + next[i] * skip[i]) % size;
      while (table[slot] != kEmpty) {
        ++next[i];
        slot = (offset[i] + next[i] * skip[i]) % size;
      }
      table[slot] = order[i];
      ++next[i];
      if (++filled == size) return table;
    }
  }
}

}  // namespace trellis::servicelb
