// The zone's names: an open-addressing table of one allocation per name —
// [name length:1][name][refs:4][records length:4][records], records packed
// as [type:2][length:2][rdata] — so tens of thousands of names cost about a
// hundred bytes each. Not thread-safe (the Zone locks).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace trellis::dns {

class NameTable {
 public:
  // A view of one name's entry (valid until the table changes).
  class Node {
   public:
    explicit operator bool() const { return p_ != nullptr; }
    std::string_view name() const { return {p_ + 1, static_cast<uint8_t>(p_[0])}; }
    uint32_t refs() const { return load(p_ + 1 + static_cast<uint8_t>(p_[0])); }
    std::string_view records() const {
      const char* at = p_ + 1 + static_cast<uint8_t>(p_[0]) + 4;
      return {at + 4, load(at)};
    }
    // fn(type, rdata) for each record.
    template <typename Fn>
    void forEach(Fn&& fn) const {
      std::string_view all = records();
      for (size_t p = 0; p + 4 <= all.size();) {
        size_t len = size_t(uint8_t(all[p + 2])) << 8 | uint8_t(all[p + 3]);
        fn(static_cast<uint16_t>(uint8_t(all[p]) << 8 | uint8_t(all[p + 1])), all.substr(p + 4, len));
        p += 4 + len;
      }
    }

   private:
    friend class NameTable;
    static uint32_t load(const char* p) {
      uint32_t v;
      memcpy(&v, p, 4);
      return v;
    }
    const char* p_ = nullptr;
  };

  NameTable() = default;
  ~NameTable();
  NameTable(const NameTable&) = delete;
  NameTable& operator=(const NameTable&) = delete;

  Node find(std::string_view name) const;
  // Adds `delta` to the name's count of records at or below it, creating the
  // entry at 0 first; the entry goes when the count reaches 0.
  void addRefs(std::string_view name, int delta);
  // The entry must exist (addRefs first).
  void appendRecord(std::string_view name, uint16_t type, std::string_view rdata);
  // Removes one record equal to (type, rdata); false when there was none.
  bool removeRecord(std::string_view name, uint16_t type, std::string_view rdata);
  size_t size() const { return used_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    char* blob = nullptr;
  };
  size_t slotOf(std::string_view name, uint64_t hash) const;  // the slot holding it, or the empty one to use
  void grow();
  void eraseAt(size_t i);

  std::vector<Slot> slots_;
  size_t used_ = 0;
};

}  // namespace trellis::dns
