#include "servicelb/dns/message.h"

#include <algorithm>
#include <cstring>

namespace trellis::dns {
namespace {

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? static_cast<uint8_t>(c + 32) : c; }

// Steps over a name that may end in a compression pointer; false when it
// runs past the end or uses a reserved label type.
bool skipName(const uint8_t* data, size_t len, size_t& p) {
  for (int labels = 0; labels < 128; ++labels) {
    if (p >= len) return false;
    uint8_t l = data[p];
    if (l == 0) {
      ++p;
      return true;
    }
    if ((l & 0xC0) == 0xC0) {
      if (p + 2 > len) return false;
      p += 2;
      return true;
    }
    if (l & 0xC0) return false;
    p += 1 + l;
  }
  return false;
}

void put16At(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void append16(std::string& s, uint16_t v) {
  s += static_cast<char>(v >> 8);
  s += static_cast<char>(v);
}
void append32(std::string& s, uint32_t v) {
  append16(s, static_cast<uint16_t>(v >> 16));
  append16(s, static_cast<uint16_t>(v));
}

}  // namespace

Parsed parseQuery(const uint8_t* data, size_t len, Query& q) {
  if (len < kHeaderSize) return Parsed::kDrop;
  q.id = get16(data);
  q.flags = get16(data + 2);
  if (q.flags & 0x8000) return Parsed::kDrop;  // a response: never answer one (no loops, no reflection)
  q.question = {};
  q.nameLen = 0;
  q.edns = false;
  q.ednsVersion = 0;
  q.dnssecOk = false;
  q.udpSize = kMinUdpSize;
  if (q.opcode() != 0) return Parsed::kNotImp;
  uint16_t qd = get16(data + 4), an = get16(data + 6), ns = get16(data + 8), ar = get16(data + 10);
  if (qd != 1) return Parsed::kFormErr;

  size_t p = kHeaderSize;
  size_t n = 0;
  for (;;) {
    if (p >= len) return Parsed::kFormErr;
    uint8_t l = data[p];
    if (l & 0xC0) return Parsed::kFormErr;  // no pointer can point anywhere useful in a question
    if (n + 1 + l > kMaxNameWire) return Parsed::kFormErr;
    if (p + 1 + l > len) return Parsed::kFormErr;
    q.name[n++] = l;
    if (l == 0) {
      ++p;
      break;
    }
    for (size_t i = 0; i < l; ++i) q.name[n++] = lower(data[p + 1 + i]);
    p += 1 + l;
  }
  if (p + 4 > len) return Parsed::kFormErr;
  q.nameLen = static_cast<uint8_t>(n);
  q.qtype = get16(data + p);
  q.qclass = get16(data + p + 2);
  p += 4;
  q.question = {reinterpret_cast<const char*>(data + kHeaderSize), p - kHeaderSize};

  // Answer and authority records (a query should have none) are stepped over;
  // the additional section may hold one OPT record.
  for (uint32_t i = 0, total = uint32_t(an) + ns + ar; i < total; ++i) {
    size_t owner = p;
    if (!skipName(data, len, p) || p + 10 > len) return Parsed::kFormErr;
    uint16_t type = get16(data + p), klass = get16(data + p + 2);
    uint32_t ttl = get32(data + p + 4);
    uint16_t rdlen = get16(data + p + 8);
    p += 10;
    if (p + rdlen > len) return Parsed::kFormErr;
    if (type == kOPT) {
      if (i < uint32_t(an) + ns || q.edns || p - 10 - owner != 1) return Parsed::kFormErr;  // RFC 6891 6.1.1
      q.edns = true;
      q.udpSize = std::max<uint16_t>(klass, kMinUdpSize);
      q.ednsVersion = static_cast<uint8_t>(ttl >> 16);
      q.dnssecOk = ttl & 0x8000;
    }
    p += rdlen;
  }
  if (q.edns && q.ednsVersion > 0) return Parsed::kBadVers;
  return Parsed::kOk;
}

bool toWire(std::string_view dotted, std::string& out) {
  out.clear();
  if (!dotted.empty() && dotted.back() == '.') dotted.remove_suffix(1);
  while (!dotted.empty()) {
    size_t dot = dotted.find('.');
    std::string_view label = dotted.substr(0, dot);
    if (label.empty() || label.size() > 63) return false;
    out += static_cast<char>(label.size());
    for (char c : label) out += static_cast<char>(lower(static_cast<uint8_t>(c)));
    dotted = dot == std::string_view::npos ? std::string_view() : dotted.substr(dot + 1);
    if (dot != std::string_view::npos && dotted.empty()) return false;
  }
  out += '\0';
  return out.size() <= kMaxNameWire;
}

std::string toDotted(std::string_view wire) {
  std::string out;
  size_t p = 0;
  while (p < wire.size() && wire[p] != 0) {
    size_t l = static_cast<uint8_t>(wire[p]);
    for (size_t i = 1; i <= l && p + i < wire.size(); ++i) {
      auto c = static_cast<uint8_t>(wire[p + i]);
      if (c == '.' || c == '\\' || c <= 0x20 || c >= 0x7F) {
        char esc[8];
        snprintf(esc, sizeof esc, "\\%03u", c);
        out += esc;
      } else {
        out += static_cast<char>(c);
      }
    }
    out += '.';
    p += 1 + l;
  }
  return out.empty() ? "." : out;
}

std::string_view parentOf(std::string_view wire) {
  if (wire.empty() || wire[0] == 0) return {};
  size_t skip = 1 + static_cast<uint8_t>(wire[0]);
  return skip <= wire.size() ? wire.substr(skip) : std::string_view();
}

bool isWithin(std::string_view wire, std::string_view zone) {
  for (size_t p = 0; p < wire.size();) {
    if (wire.size() - p == zone.size()) return wire.substr(p) == zone;
    if (wire.size() - p < zone.size() || wire[p] == 0) return false;
    p += 1 + static_cast<uint8_t>(wire[p]);
  }
  return false;
}

int labelCount(std::string_view wire) {
  int n = 0;
  for (size_t p = 0; p < wire.size() && wire[p] != 0; p += 1 + static_cast<uint8_t>(wire[p])) ++n;
  return n;
}

std::string_view firstLabel(std::string_view wire) {
  if (wire.empty()) return {};
  size_t l = static_cast<uint8_t>(wire[0]);
  return wire.substr(1, std::min(l, wire.size() - 1));
}

// ---- Writer

void Writer::put16(uint16_t v) {
  if (len_ + 2 > cap_) {
    overflow_ = true;
    return;
  }
  put16At(buf_ + len_, v);
  len_ += 2;
}

void Writer::put32(uint32_t v) {
  put16(static_cast<uint16_t>(v >> 16));
  put16(static_cast<uint16_t>(v));
}

void Writer::putBytes(std::string_view b) {
  if (len_ + b.size() > cap_) {
    overflow_ = true;
    return;
  }
  memcpy(buf_ + len_, b.data(), b.size());
  len_ += b.size();
}

void Writer::startResponse(const Query& q, uint16_t rcode, bool authoritative) {
  len_ = 0;
  overflow_ = false;
  rcode_ = rcode;
  put16(q.id);
  put16(static_cast<uint16_t>(0x8000 | (q.flags & 0x7800) | (authoritative ? 0x0400 : 0) | (q.flags & 0x0110) |
                              (rcode & 0xF)));
  put16(q.question.empty() ? 0 : 1);
  put16(0);
  put16(0);
  put16(0);
  putBytes(q.question);
  questionEnd_ = len_;
}

void Writer::startBare(uint16_t id, uint16_t flags, uint16_t rcode) {
  len_ = 0;
  overflow_ = false;
  rcode_ = rcode;
  put16(id);
  put16(static_cast<uint16_t>(0x8000 | (flags & 0x7800) | (flags & 0x0110) | (rcode & 0xF)));
  for (int i = 0; i < 4; ++i) put16(0);
  questionEnd_ = len_;
}

void Writer::setRcode(uint16_t rcode) {
  rcode_ = rcode;
  buf_[3] = static_cast<uint8_t>((buf_[3] & 0xF0) | (rcode & 0xF));
}

void Writer::setRecursionAvailable() { buf_[3] |= 0x80; }

void Writer::bump(Section s) {
  uint8_t* c = buf_ + 6 + 2 * static_cast<int>(s);
  put16At(c, static_cast<uint16_t>(get16(c) + 1));
}

void Writer::record(Section s, uint16_t ownerPointer, uint16_t type, uint32_t ttl, std::string_view rdata) {
  const char pointer[2] = {static_cast<char>(ownerPointer >> 8), static_cast<char>(ownerPointer)};
  recordNamed(s, std::string_view(pointer, 2), type, ttl, rdata);
}

void Writer::recordNamed(Section s, std::string_view owner, uint16_t type, uint32_t ttl, std::string_view rdata) {
  if (len_ + owner.size() + 10 + rdata.size() > cap_) {
    overflow_ = true;
    return;
  }
  putBytes(owner);
  put16(type);
  put16(kClassIN);
  put32(ttl);
  put16(static_cast<uint16_t>(rdata.size()));
  putBytes(rdata);
  bump(s);
}

void Writer::opt(const Query& q) {
  if (len_ + 11 > cap_) return;
  buf_[len_++] = 0;  // root owner
  put16(kOPT);
  put16(kMaxUdpSize);
  put32(uint32_t(rcode_ >> 4) << 24 | (q.dnssecOk ? 0x8000u : 0u));
  put16(0);
  bump(kAdditional);
}

size_t Writer::finish(const Query& q, size_t limit) {
  size_t optSize = q.edns ? 11 : 0;
  if (overflow_ || len_ + optSize > std::min(limit, cap_)) {
    len_ = questionEnd_;
    put16At(buf_ + 6, 0);
    put16At(buf_ + 8, 0);
    put16At(buf_ + 10, 0);
    buf_[2] |= 0x02;  // TC
    overflow_ = false;
  }
  if (q.edns) opt(q);
  return len_;
}

// ---- upstream responses

bool scanResponse(const uint8_t* data, size_t len, std::string_view question, ResponseInfo& info) {
  if (len < kHeaderSize) return false;
  uint16_t flags = get16(data + 2);
  if (!(flags & 0x8000)) return false;
  info.id = get16(data);
  info.rcode = flags & 0xF;
  info.truncated = flags & 0x0200;
  info.ttlOffsets.clear();
  uint16_t qd = get16(data + 4), an = get16(data + 6), ns = get16(data + 8), ar = get16(data + 10);
  if (qd != 1 || kHeaderSize + question.size() > len) return false;
  for (size_t i = 0; i < question.size(); ++i) {
    if (lower(data[kHeaderSize + i]) != lower(static_cast<uint8_t>(question[i]))) return false;
  }
  size_t p = kHeaderSize + question.size();
  info.questionEnd = p;
  uint32_t minTtl = UINT32_MAX;
  for (uint32_t i = 0, total = uint32_t(an) + ns + ar; i < total; ++i) {
    if (!skipName(data, len, p) || p + 10 > len) return false;
    uint16_t type = get16(data + p);
    uint32_t ttl = get32(data + p + 4);
    if (ttl & 0x80000000u) ttl = 0;  // RFC 2181 8
    uint16_t rdlen = get16(data + p + 8);
    if (p + 10 + rdlen > len) return false;
    if (type != kOPT) {
      if (p + 4 > UINT16_MAX) return false;
      info.ttlOffsets.push_back(static_cast<uint16_t>(p + 4));
      if (i < uint32_t(an) + ns) {
        if (type == kSOA && i >= an && rdlen >= 20) ttl = std::min(ttl, get32(data + p + 10 + rdlen - 4));
        minTtl = std::min(minTtl, ttl);
      }
    }
    p += 10 + rdlen;
  }
  info.negative = info.rcode == kNXDomain || (info.rcode == kNoError && an == 0);
  info.minTtl = minTtl == UINT32_MAX ? 0 : minTtl;
  return true;
}

// ---- record data

std::string rdataA(const uint8_t addr[4]) { return std::string(reinterpret_cast<const char*>(addr), 4); }
std::string rdataAAAA(const uint8_t addr[16]) { return std::string(reinterpret_cast<const char*>(addr), 16); }
std::string rdataName(std::string_view wire) { return std::string(wire); }

std::string rdataSrv(uint16_t priority, uint16_t weight, uint16_t port, std::string_view targetWire) {
  std::string s;
  append16(s, priority);
  append16(s, weight);
  append16(s, port);
  s += targetWire;
  return s;
}

std::string rdataTxt(std::string_view text) {
  std::string s;
  do {
    size_t n = std::min<size_t>(text.size(), 255);
    s += static_cast<char>(n);
    s += text.substr(0, n);
    text.remove_prefix(n);
  } while (!text.empty());
  return s;
}

std::string rdataSoa(std::string_view mnameWire, std::string_view rnameWire, uint32_t serial, uint32_t refresh,
                     uint32_t retry, uint32_t expire, uint32_t minimum) {
  std::string s(mnameWire);
  s += rnameWire;
  for (uint32_t v : {serial, refresh, retry, expire, minimum}) append32(s, v);
  return s;
}

}  // namespace trellis::dns
