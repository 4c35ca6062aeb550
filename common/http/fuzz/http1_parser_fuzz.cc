// libFuzzer target: the HTTP/1.1 request parser, with the input split at a
// point chosen by the first byte (so split heads and chunks are covered).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/http/http1_parser.h"

using trellis::http::Http1Parser;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  trellis::http::Limits limits;
  limits.maxHeaderBytes = 4096;
  limits.maxBodyBytes = 1 << 16;
  for (Http1Parser::Kind kind : {Http1Parser::Kind::kRequest, Http1Parser::Kind::kResponse}) {
    Http1Parser p(kind, limits);
    std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
    size_t split = input.empty() ? 0 : data[0] % (input.size() + 1);
    std::string pending = input.substr(0, split);
    size_t fed = split;
    for (int rounds = 0; rounds < 10000; ++rounds) {
      size_t used = 0;
      auto e = p.parse(pending.data(), pending.size(), used);
      if (used > pending.size()) __builtin_trap();
      pending.erase(0, used);
      if (e == Http1Parser::Event::kError) break;
      if (e == Http1Parser::Event::kMessageComplete) {
        p.reset();
        continue;
      }
      if (e == Http1Parser::Event::kNeedMore) {
        if (fed == input.size()) {
          if (kind == Http1Parser::Kind::kResponse) p.finishOnEof();
          break;
        }
        pending += input.substr(fed);
        fed = input.size();
      }
    }
  }
  return 0;
}
