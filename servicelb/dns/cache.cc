#include "servicelb/dns/cache.h"

#include <algorithm>
#include <cstring>

namespace trellis::dns {

void Cache::keyOf(const Query& q, std::string& out) {
  out.assign(q.lowerName());
  out += static_cast<char>(q.qtype >> 8);
  out += static_cast<char>(q.qtype);
  out += static_cast<char>(q.qclass >> 8);
  out += static_cast<char>(q.qclass);
  out += static_cast<char>((q.edns ? 1 : 0) | (q.dnssecOk ? 2 : 0) | (q.cd() ? 4 : 0));
}

size_t Cache::lookup(const Query& q, uint8_t* buf, size_t cap, Clock::time_point now) {
  thread_local std::string key;
  keyOf(q, key);
  std::lock_guard g(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return 0;
  Entry& e = *it->second;
  if (now >= e.expires) {
    auto entry = it->second;
    index_.erase(it);
    lru_.erase(entry);
    return 0;
  }
  if (e.data.size() > cap) return 0;
  lru_.splice(lru_.begin(), lru_, it->second);
  memcpy(buf, e.data.data(), e.data.size());
  buf[0] = static_cast<uint8_t>(q.id >> 8);
  buf[1] = static_cast<uint8_t>(q.id);
  memcpy(buf + kHeaderSize, q.question.data(), q.question.size());  // the client's letter case
  auto age = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(now - e.stored).count());
  for (uint16_t off : e.ttlOffsets) {
    uint8_t* p = buf + off;
    uint32_t ttl = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
    ttl = ttl > age ? ttl - age : 0;
    p[0] = static_cast<uint8_t>(ttl >> 24);
    p[1] = static_cast<uint8_t>(ttl >> 16);
    p[2] = static_cast<uint8_t>(ttl >> 8);
    p[3] = static_cast<uint8_t>(ttl);
  }
  return e.data.size();
}

void Cache::store(const Query& q, const uint8_t* data, size_t len, const ResponseInfo& info, Clock::time_point now) {
  if (max_ == 0 || info.truncated || (info.rcode != kNoError && info.rcode != kNXDomain)) return;
  uint32_t ttl = std::min(info.minTtl, info.negative ? maxNegativeTtl_ : maxTtl_);
  if (ttl == 0) return;
  Entry e;
  keyOf(q, e.key);
  e.data.assign(reinterpret_cast<const char*>(data), len);
  e.ttlOffsets = info.ttlOffsets;
  e.stored = now;
  e.expires = now + std::chrono::seconds(ttl);
  std::lock_guard g(mu_);
  if (auto it = index_.find(e.key); it != index_.end()) {
    auto entry = it->second;
    index_.erase(it);
    lru_.erase(entry);
  }
  while (lru_.size() >= max_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(std::move(e));
  index_.emplace(lru_.front().key, lru_.begin());
}

size_t Cache::size() const {
  std::lock_guard g(mu_);
  return lru_.size();
}

}  // namespace trellis::dns
