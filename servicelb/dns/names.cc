#include "servicelb/dns/names.h"

#include <cstdlib>
#include <functional>
#include <new>

namespace trellis::dns {
namespace {

uint64_t hashOf(std::string_view name) { return std::hash<std::string_view>()(name); }
size_t headerSize(const char* blob) { return 1 + static_cast<uint8_t>(blob[0]) + 8; }
uint32_t load(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
void store(char* p, uint32_t v) { memcpy(p, &v, 4); }
char* refsOf(char* blob) { return blob + 1 + static_cast<uint8_t>(blob[0]); }

}  // namespace

NameTable::~NameTable() {
  for (Slot& s : slots_) free(s.blob);
}

size_t NameTable::slotOf(std::string_view name, uint64_t hash) const {
  size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (!s.blob) return i;
    if (s.hash == hash && std::string_view(s.blob + 1, static_cast<uint8_t>(s.blob[0])) == name) return i;
  }
}

NameTable::Node NameTable::find(std::string_view name) const {
  Node n;
  if (slots_.empty()) return n;
  n.p_ = slots_[slotOf(name, hashOf(name))].blob;
  return n;
}

void NameTable::grow() {
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.resize(old.empty() ? 64 : old.size() * 2);
  size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (!s.blob) continue;
    size_t i = s.hash & mask;
    while (slots_[i].blob) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void NameTable::addRefs(std::string_view name, int delta) {
  if ((used_ + 1) * 4 > slots_.size() * 3) grow();  // load ≤ 3/4
  uint64_t h = hashOf(name);
  size_t i = slotOf(name, h);
  Slot& s = slots_[i];
  if (!s.blob) {
    s.blob = static_cast<char*>(malloc(1 + name.size() + 8));
    if (!s.blob) throw std::bad_alloc();
    s.blob[0] = static_cast<char>(name.size());
    memcpy(s.blob + 1, name.data(), name.size());
    store(refsOf(s.blob), 0);
    store(refsOf(s.blob) + 4, 0);
    s.hash = h;
    ++used_;
  }
  auto refs = static_cast<int64_t>(load(refsOf(s.blob))) + delta;
  if (refs <= 0) {
    eraseAt(i);
    return;
  }
  store(refsOf(s.blob), static_cast<uint32_t>(refs));
}

void NameTable::appendRecord(std::string_view name, uint16_t type, std::string_view rdata) {
  if (slots_.empty()) return;
  Slot& s = slots_[slotOf(name, hashOf(name))];
  if (!s.blob) return;
  size_t len = load(refsOf(s.blob) + 4);
  size_t size = headerSize(s.blob) + len;
  char* grown = static_cast<char*>(realloc(s.blob, size + 4 + rdata.size()));
  if (!grown) throw std::bad_alloc();
  s.blob = grown;
  char* at = s.blob + size;
  at[0] = static_cast<char>(type >> 8);
  at[1] = static_cast<char>(type);
  at[2] = static_cast<char>(rdata.size() >> 8);
  at[3] = static_cast<char>(rdata.size());
  memcpy(at + 4, rdata.data(), rdata.size());
  store(refsOf(s.blob) + 4, static_cast<uint32_t>(len + 4 + rdata.size()));
}

bool NameTable::removeRecord(std::string_view name, uint16_t type, std::string_view rdata) {
  if (slots_.empty()) return false;
  Slot& s = slots_[slotOf(name, hashOf(name))];
  if (!s.blob) return false;
  char* records = refsOf(s.blob) + 8;
  size_t len = load(refsOf(s.blob) + 4);
  for (size_t p = 0; p + 4 <= len;) {
    size_t n = size_t(uint8_t(records[p + 2])) << 8 | uint8_t(records[p + 3]);
    if ((uint8_t(records[p]) << 8 | uint8_t(records[p + 1])) == type && std::string_view(records + p + 4, n) == rdata) {
      memmove(records + p, records + p + 4 + n, len - p - 4 - n);
      store(refsOf(s.blob) + 4, static_cast<uint32_t>(len - 4 - n));
      return true;
    }
    p += 4 + n;
  }
  return false;
}

// Backward-shift deletion: later entries of the same run move up, so
// lookups never need tombstones.
void NameTable::eraseAt(size_t i) {
  free(slots_[i].blob);
  slots_[i] = Slot{};
  --used_;
  size_t mask = slots_.size() - 1;
  for (size_t j = (i + 1) & mask; slots_[j].blob; j = (j + 1) & mask) {
    size_t home = slots_[j].hash & mask;
    // Move j into the hole when its home is not in (i, j] (cyclically).
    bool between = i < j ? (home > i && home <= j) : (home > i || home <= j);
    if (between) continue;
    slots_[i] = slots_[j];
    slots_[j] = Slot{};
    i = j;
  }
}

}  // namespace trellis::dns
