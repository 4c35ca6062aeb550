// The DNS wire format (RFC 1035, EDNS0 per RFC 6891) as trellis-dns needs it:
// a query parser that never trusts its input, a response writer over a
// caller's buffer, and a scanner of upstream responses for the cache.
//
//   dns::Query q;
//   switch (dns::parseQuery(packet, q)) { case dns::Parsed::kOk: ...; case dns::Parsed::kDrop: return; ... }
//   dns::Writer w(buf, sizeof buf);
//   w.startResponse(q, dns::kNoError, /*authoritative=*/true);
//   w.answer(dns::kQuestionName, dns::kA, 5, rdata);
//   size_t n = w.finish(q.responseLimit());
//
// Names are handled in wire form (length-prefixed labels ending in a zero
// byte), lowercased for lookups; the question a client sent is echoed byte
// for byte (case included, as 0x20-randomising resolvers check).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::dns {

enum Type : uint16_t {
  kA = 1,
  kNS = 2,
  kCNAME = 5,
  kSOA = 6,
  kPTR = 12,
  kTXT = 16,
  kAAAA = 28,
  kSRV = 33,
  kOPT = 41,
  kIXFR = 251,
  kAXFR = 252,
  kANY = 255,
};
constexpr uint16_t kClassIN = 1;

enum Rcode : uint16_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNXDomain = 3,
  kNotImp = 4,
  kRefused = 5,
  kBadVers = 16,  // extended (EDNS): the upper 8 bits travel in the OPT record
};

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxNameWire = 255;
constexpr size_t kMaxMessage = 65535;
constexpr uint16_t kMinUdpSize = 512;
// What this server advertises and accepts at most over UDP (DNS flag day 2020).
constexpr uint16_t kMaxUdpSize = 1232;

struct Query {
  uint16_t id = 0;
  uint16_t flags = 0;  // the header's second 16 bits, as received
  uint8_t opcode() const { return (flags >> 11) & 0xF; }
  bool rd() const { return flags & 0x0100; }
  bool cd() const { return flags & 0x0010; }

  // The question as the client wrote it (name, type, class) and its name
  // lowercased in wire form.
  std::string_view question;
  uint8_t name[kMaxNameWire];
  uint8_t nameLen = 0;
  uint16_t qtype = 0, qclass = 0;
  std::string_view lowerName() const { return {reinterpret_cast<const char*>(name), nameLen}; }

  bool edns = false;
  uint8_t ednsVersion = 0;
  bool dnssecOk = false;
  uint16_t udpSize = kMinUdpSize;  // the client's, when it sent one (≥ 512)

  // The largest response this client takes over UDP.
  size_t udpLimit() const { return udpSize < kMaxUdpSize ? udpSize : kMaxUdpSize; }
};

enum class Parsed {
  kOk,
  kDrop,     // not a query, or too short to answer: say nothing
  kFormErr,  // answer FORMERR (id, and the question when one was read)
  kNotImp,   // an opcode other than QUERY
  kBadVers,  // EDNS version > 0
};

// Reads a query. Anything but kDrop leaves q.id and q.flags set.
Parsed parseQuery(const uint8_t* data, size_t len, Query& q);

// "www.example.com" -> wire form, lowercased; false when a label is empty or
// longer than 63 bytes, or the whole is over 255.
bool toWire(std::string_view dotted, std::string& out);
// Wire form -> "www.example.com." (lowercase as stored; \DDD for unusual bytes).
std::string toDotted(std::string_view wire);
// The wire form of `name` without its first label ("" at the root).
std::string_view parentOf(std::string_view wire);
// Whether `wire` is `zone` or under it (both lowercased wire names).
bool isWithin(std::string_view wire, std::string_view zone);
// The number of labels of a wire name (the root has 0).
int labelCount(std::string_view wire);
// The first label's text.
std::string_view firstLabel(std::string_view wire);

// Offsets for compression pointers the writer understands.
constexpr uint16_t kQuestionName = 0xC000 | kHeaderSize;

// Writes one response into a caller's buffer (at most kMaxMessage bytes).
class Writer {
 public:
  Writer(uint8_t* buf, size_t cap) : buf_(buf), cap_(cap) {}

  // Header (id, RD and CD copied, QR set) and the question as received.
  // `rcode` may be extended (BADVERS); the OPT record carries its upper bits.
  void startResponse(const Query& q, uint16_t rcode, bool authoritative);
  // A header-only answer for a query whose question could not be read.
  void startBare(uint16_t id, uint16_t flags, uint16_t rcode);
  void setRcode(uint16_t rcode);
  void setRecursionAvailable();

  enum Section { kAnswer, kAuthority, kAdditional };
  // A record whose owner is a compression pointer (0xC000 | offset) into
  // what was written before.
  void record(Section s, uint16_t ownerPointer, uint16_t type, uint32_t ttl, std::string_view rdata);
  // A record whose owner is written out (wire form, or the two bytes of a pointer).
  void recordNamed(Section s, std::string_view owner, uint16_t type, uint32_t ttl, std::string_view rdata);

  // Appends the OPT record when the query had one, then enforces `limit`:
  // a response that does not fit loses its records and gets TC.
  // Returns the length written.
  size_t finish(const Query& q, size_t limit);

  size_t size() const { return len_; }
  bool overflowed() const { return overflow_; }

 private:
  void put16(uint16_t v);
  void put32(uint32_t v);
  void putBytes(std::string_view b);
  void bump(Section s);
  void opt(const Query& q);

  uint8_t* buf_;
  size_t cap_;
  size_t len_ = 0;
  size_t questionEnd_ = 0;
  uint16_t rcode_ = 0;
  bool overflow_ = false;
};

// What the cache needs of an upstream response: where each TTL is (to age
// them), the smallest TTL (answer and authority; for a negative answer the
// SOA's min(TTL, MINIMUM) per RFC 2308), the rcode, and whether its question
// equals ours.
struct ResponseInfo {
  uint16_t id = 0;
  uint16_t rcode = 0;
  bool truncated = false;
  bool negative = false;  // NXDOMAIN, or NOERROR with no answer
  uint32_t minTtl = 0;
  std::vector<uint16_t> ttlOffsets;
  size_t questionEnd = 0;
};
// Reads an upstream response; false when it is malformed or is not an answer
// to a question equal (case-insensitively) to `question`.
bool scanResponse(const uint8_t* data, size_t len, std::string_view question, ResponseInfo& info);

// Record data builders.
std::string rdataA(const uint8_t addr[4]);
std::string rdataAAAA(const uint8_t addr[16]);
std::string rdataName(std::string_view wire);  // CNAME, PTR, NS
std::string rdataSrv(uint16_t priority, uint16_t weight, uint16_t port, std::string_view targetWire);
std::string rdataTxt(std::string_view text);
std::string rdataSoa(std::string_view mnameWire, std::string_view rnameWire, uint32_t serial, uint32_t refresh,
                     uint32_t retry, uint32_t expire, uint32_t minimum);

}  // namespace trellis::dns
