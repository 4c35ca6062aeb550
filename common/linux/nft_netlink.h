// nftables through nfnetlink directly, for the few operations that must
// cost the same however large the node's ruleset is: a table's handle (one
// GET of one object, no ruleset fetch) and the elements of a set or map
// added or deleted in one batch transaction. Tables, chains, rules, sets
// and maps are made through nftApply() (libnftables), once per node; what
// changes per pod is a few elements here.
//
// Element bytes are in the kernel's register layout: each field of a
// concatenation padded to 4 bytes (nftConcat), addresses and ports in
// network byte order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/ip.h"
#include "common/base/result.h"

namespace trellis::sys {

struct NftElement {
  std::string key;
  std::string data;  // "" for a set (no data)
};

// Register-layout bytes of a concatenation (`a . b . c`).
std::string nftConcat(std::initializer_list<std::string_view> fields);
// A field's bytes: an address (4 or 16), a port (2, big-endian), a protocol (1).
std::string nftAddr(const base::IpAddr& a);
std::string nftPort(uint16_t port);
std::string nftProto(uint8_t proto);

class NftNetlink {
 public:
  static base::Result<std::unique_ptr<NftNetlink>> open();
  ~NftNetlink();
  NftNetlink(const NftNetlink&) = delete;
  NftNetlink& operator=(const NftNetlink&) = delete;

  // The handle of `table` in `family` (NFPROTO_INET, ...): it changes when
  // the table is deleted and made again. kNotFound when there is none.
  base::Result<uint64_t> tableHandle(int family, const std::string& table);
  // Adds `elements` to a set or map in one transaction; an element already
  // there with the same data is fine, with other data kConflict (EBUSY).
  base::Status addElements(int family, const std::string& table, const std::string& set,
                           const std::vector<NftElement>& elements);
  // Deletes `elements`; those already absent (or a table or set that is
  // gone) are fine.
  base::Status deleteElements(int family, const std::string& table, const std::string& set,
                              const std::vector<NftElement>& elements);

 private:
  explicit NftNetlink(int fd) : fd_(fd) {}
  // Sends one message (in a batch when `batch`) and waits for its answer:
  // the kernel's errno (0: done); `onReply` sees the payload of each reply.
  base::Result<int> transact(uint16_t type, uint16_t flags, int family, const std::string& attrs, bool batch,
                        void (*onReply)(const char* payload, size_t len, void* ctx) = nullptr, void* ctx = nullptr);
  int fd_;
  uint32_t seq_ = 0;
};

}  // namespace trellis::sys
