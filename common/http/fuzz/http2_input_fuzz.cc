// libFuzzer target: bytes into a server-side HTTP/2 session (frame parsing in
// nghttp2 plus our callbacks: headers, bodies, limits, responses, resets).
// Inputs that start with the connection preface reach the frame layer; the
// seed corpus in fuzz/corpus/http2 has a few.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/http/detail/server_internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  // Half the time prepend the preface, so mutations explore frames, not the preface.
  if (size > 0 && (data[0] & 1)) {
    std::string in = preface + std::string(reinterpret_cast<const char*>(data) + 1, size - 1);
    trellis::http::detail::fuzzHttp2ServerInput(reinterpret_cast<const uint8_t*>(in.data()), in.size());
  } else {
    trellis::http::detail::fuzzHttp2ServerInput(data, size);
  }
  return 0;
}
