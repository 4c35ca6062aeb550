// A bounded cache of upstream answers (least recently used goes first),
// keyed by question and the flags that change an answer (DO, CD, EDNS).
// Entries live for the answer's smallest TTL — for a negative answer the
// SOA's min(TTL, MINIMUM) (RFC 2308) — capped by the configured maxima; a
// served copy carries the client's id and question (its letter case) and
// TTLs aged by the time spent in the cache. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "servicelb/dns/message.h"

namespace trellis::dns {

class Cache {
 public:
  using Clock = std::chrono::steady_clock;
  Cache(size_t maxEntries, uint32_t maxTtl, uint32_t maxNegativeTtl)
      : max_(maxEntries), maxTtl_(maxTtl), maxNegativeTtl_(maxNegativeTtl) {}

  // Writes the cached answer to `q` into buf (cap ≥ what it holds); returns
  // its length, or 0 when there is none.
  size_t lookup(const Query& q, uint8_t* buf, size_t cap, Clock::time_point now);
  // Keeps an upstream answer to `q` when it may be kept (NOERROR or
  // NXDOMAIN, not truncated, TTL > 0).
  void store(const Query& q, const uint8_t* data, size_t len, const ResponseInfo& info, Clock::time_point now);

  size_t size() const;

 private:
  struct Entry {
    std::string key;
    std::string data;
    std::vector<uint16_t> ttlOffsets;
    Clock::time_point stored, expires;
  };
  static void keyOf(const Query& q, std::string& out);

  size_t max_;
  uint32_t maxTtl_, maxNegativeTtl_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // front: most recently used
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;
};

}  // namespace trellis::dns
